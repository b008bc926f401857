import sys

from .trainer import main, teardown_distributed

rc = main()
teardown_distributed()  # a CLI run ends here; in-process callers of main() keep the process group
sys.exit(rc)
