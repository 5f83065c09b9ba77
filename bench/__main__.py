"""`python -m bench`: the benchmark harness (see bench/harness.py, `make bench`)."""

import sys

from bench.harness import main

sys.exit(main())
