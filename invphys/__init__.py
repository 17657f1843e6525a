"""invphys: physics inverse problems on JAX.

Differentiable forward simulators (diffrax), learned local inverses (Deceptrons),
and solvers (D-IPG, projected gradient, Gauss-Newton, Levenberg-Marquardt) that share
one backtracking and stopping protocol. Float64 is *not* switched on at import: the
CLI and the tests enable it; library users call
``jax.config.update("jax_enable_x64", True)`` when their numerics need it.
"""

from ._data import Dataset, Normaliser, make_dataset
from ._errors import (
    BoundsError,
    CheckpointError,
    InputFileError,
    InvphysError,
    NonFiniteError,
    ShapeError,
    SpecError,
)
from ._problem import AbstractNoise, GaussianNoise, Problem
from ._spec import Spec, load_spec
from .solve import (
    DIPG,
    RESULTS,
    AbstractMethod,
    GaussNewton,
    LeastSquaresSolution,
    LevenbergMarquardt,
    ProjectedGradient,
    Rules,
    Solution,
    least_squares,
    solve,
)


def load_problem(spec, overrides=None) -> Problem:
    """Build a :class:`Problem` from a bundled spec name (``"heat1d"``), a path, or a Spec.

    ``overrides`` maps ``"section.key"`` to values, e.g. ``{"physics.fidelity": "accurate"}``.
    """
    from .physics import REGISTRY

    s = load_spec(spec)
    if overrides:
        s = s.replace(overrides)
    return REGISTRY[s.problem].build(s)


from .learn import (  # noqa: E402
    AbstractDeceptron,
    Checkpoint,
    Deceptron,
    MLPDeceptron,
    TrainConfig,
    jcp_estimate,
    load_checkpoint,
    load_deceptron,
    train_deceptron,
    train_from_spec,
)

__version__ = "0.1.0"

__all__ = [
    "DIPG", "RESULTS", "AbstractMethod", "GaussNewton", "LevenbergMarquardt",
    "ProjectedGradient", "Rules", "Solution", "solve", "LeastSquaresSolution", "least_squares",
    "AbstractNoise", "BoundsError", "CheckpointError", "Dataset", "GaussianNoise",
    "InputFileError", "InvphysError", "NonFiniteError", "Normaliser", "Problem",
    "ShapeError", "Spec", "SpecError", "load_problem", "load_spec", "make_dataset",
    "AbstractDeceptron", "Checkpoint", "Deceptron", "MLPDeceptron", "TrainConfig",
    "jcp_estimate", "load_checkpoint", "load_deceptron", "train_deceptron", "train_from_spec",
]
