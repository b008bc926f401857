import sys

from .trainer import cli

sys.exit(cli())
