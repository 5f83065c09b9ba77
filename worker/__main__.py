"""`python -m worker` is `headrace worker`."""

import sys

from headrace.cli import main

sys.exit(main(["worker", *sys.argv[1:]]))
