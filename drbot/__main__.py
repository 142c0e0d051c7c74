"""`python -m drbot` runs the command line."""

import sys

from drbot.cli import main


sys.exit(main())
