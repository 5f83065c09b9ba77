"""The benchmark harness behind `make bench` (not part of `make test`).

``python -m bench`` (:mod:`bench.run`) parses :mod:`bench.options`, brings up the servers
(:mod:`bench.context`), runs the stages of :mod:`bench.stages` in order and hands the results
to :mod:`bench.report`. :mod:`bench.seed` and :mod:`bench.motoserver` run as child processes.
"""

from pathlib import Path

__all__ = ["ROOT"]

ROOT = Path(__file__).resolve().parent.parent  # the checkout: children run from here
