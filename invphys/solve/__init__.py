"""The solver layer: methods propose, the shared protocol decides."""

from ._least_squares import LeastSquaresSolution, least_squares
from ._methods import (
    DIPG,
    AbstractMethod,
    GaussNewton,
    LevenbergMarquardt,
    Lin,
    ProjectedGradient,
)
from ._protocol import Solution, solve
from ._rules import RESULTS, Rules

__all__ = [
    "DIPG", "RESULTS", "AbstractMethod", "GaussNewton", "LeastSquaresSolution",
    "LevenbergMarquardt", "Lin", "ProjectedGradient", "Rules", "Solution", "least_squares",
    "solve",
]
