"""The solver layer: methods propose, the shared protocol decides."""

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
    "DIPG", "RESULTS", "AbstractMethod", "GaussNewton", "LevenbergMarquardt", "Lin",
    "ProjectedGradient", "Rules", "Solution", "solve",
]
