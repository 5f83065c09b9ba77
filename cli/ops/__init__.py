"""Operator commands: ``headrace runs``, ``rejected``, ``dlq`` and ``ledger``.

Each command answers in a human table by default (rich) and in JSON with ``--json``. Exit
codes (the README's "When things go wrong" lists them):

* 0: done, nothing needs attention;
* 1: done, but something needs attention (``runs show``: the run is incomplete;
  ``rejected replay``: rows are still rejected; ``dlq redrive``: messages were left behind);
* 2: refused or failed (bad arguments, unknown run, settings, database or SQS errors).
"""

from __future__ import annotations

from cli.ops.commands import OPS_COMMANDS, add_ops_parsers, run_ops

__all__ = ["OPS_COMMANDS", "add_ops_parsers", "run_ops"]
