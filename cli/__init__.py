"""The command-line face of headrace (`headrace ...`): the one package that may import all.

It composes the core (:mod:`headrace`) and the two containers (:mod:`producer`,
:mod:`worker`) into commands, and holds what only a person at a terminal needs: the demo,
the example dataset and its generator, and source-versus-target verification.
"""

from cli.main import main

__all__ = ["main"]
