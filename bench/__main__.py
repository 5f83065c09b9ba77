"""`python -m bench`: the benchmark harness (see bench/run.py, `make bench`)."""

import sys

from bench.run import main

sys.exit(main())
