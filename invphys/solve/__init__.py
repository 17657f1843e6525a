"""The solver layer: a descent proposes, a shared search accepts, a shared termination
stops; one traceable core (:func:`solve_core`) runs them, and :func:`solve` wraps it.

    rules = Rules(search=Relaxed(Backtracking(), rho=0.4), termination=PaperStop(eps=0.3))
    rules = Rules.paper()  # the same, as a preset; Rules.certified() for least_squares
    sol = solve_core(fn, y, x0, args, cset=problem, method=LevenbergMarquardtSVD(),
                     rules=rules)  # jit / vmap / grad
"""

from ._batch import shard_batch, solve_batch, solve_compacted
from ._core import Box, Solution, solve_one
from ._descents import (
    DIPG,
    AbstractDescent,
    AbstractMethod,
    AbstractPreconditioner,
    GaussNewton,
    JacobiPreconditioner,
    Lin,
    Linearisation,
    Newton,
    ProjectedGradient,
    Trial,
)
from ._implicit import solve_core
from ._least_squares import LeastSquaresSolution, least_squares
from ._lm import Damping, LevenbergMarquardt, LevenbergMarquardtCG, LevenbergMarquardtSVD
from ._protocol import solve
from ._results import RESULTS, result_names
from ._rules import Rules
from ._search import AbstractSearch, Backtracking, Polished, Relaxed, SearchResult
from ._termination import AbstractTermination, CertifiedStop, Iterate, PaperStop

__all__ = [
    "DIPG", "RESULTS", "AbstractDescent", "AbstractMethod", "AbstractPreconditioner",
    "AbstractSearch", "AbstractTermination", "Backtracking", "Box", "CertifiedStop",
    "Damping", "GaussNewton", "Iterate", "JacobiPreconditioner", "LeastSquaresSolution",
    "LevenbergMarquardt", "LevenbergMarquardtCG", "LevenbergMarquardtSVD", "Lin",
    "Linearisation", "Newton", "PaperStop", "Polished", "ProjectedGradient", "Relaxed",
    "Rules", "SearchResult", "Solution", "Trial", "least_squares", "result_names",
    "shard_batch", "solve", "solve_batch", "solve_compacted", "solve_core", "solve_one",
]
