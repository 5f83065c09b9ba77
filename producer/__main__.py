"""`python -m producer SOURCE --table T` is `headrace produce SOURCE --table T`."""

import sys

from headrace.cli import main

sys.exit(main(["produce", *sys.argv[1:]]))
