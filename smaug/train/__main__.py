"""`python -m smaug.train --config X.yaml [key=value ...]`, and the `smaug-train` console script."""

import sys

from .preemption import catch_early


def main() -> int:
    catch_early()  # before the imports below (torch, DeepSpeed, the model): a signal during them is kept
    from .trainer import cli

    return cli()


if __name__ == "__main__":
    sys.exit(main())
