"""Diagonal preconditioners, Adam vs GN^-1 vs GN^-1/2 (arXiv 2510.13680):
``invphys reproduce --paper diag-gn``.

:mod:`.problems`: the four quadrants of the paper and a Kronecker-basis MLP as jit/vmap-able
problems; :mod:`.run`: arms, the tuned runs over seeds, the claims, tables and figures.
"""

from ..papers import Paper
from .run import run

PAPER = Paper(
    name="diag-gn",
    description="diagonal preconditioners Adam vs GN^-1 vs GN^-1/2 in the identity, GN eigen- "
    "and Kronecker bases, four quadrants (arXiv 2510.13680)",
    run=run,
    parts=("blockcov", "logistic", "logistic-fixed", "quadratic", "stochastic", "mlp"),
    needs_models=False,
)
