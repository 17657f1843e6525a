"""invphys: physics inverse problems on JAX.

Differentiable forward simulators (diffrax), learned local inverses (Deceptrons),
and solvers (D-IPG, projected gradient, Gauss-Newton, Levenberg-Marquardt) that share
one backtracking and stopping protocol. Float64 is *not* switched on at import: the
CLI and the tests enable it; library users call
``jax.config.update("jax_enable_x64", True)`` when their numerics need it.

This module only re-exports; no module below the CLI imports it. The layers and
their import rules: ``[tool.importlinter]`` in pyproject.toml (``make lint``).
"""

from ._data import Dataset, Normaliser, make_dataset, normalise_obs, normalised_problem
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
from ._version import __version__
from .learn import (
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
from .physics import load_problem
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

__all__ = [
    "DIPG", "RESULTS", "AbstractMethod", "GaussNewton", "LevenbergMarquardt",
    "ProjectedGradient", "Rules", "Solution", "solve", "LeastSquaresSolution", "least_squares",
    "AbstractNoise", "BoundsError", "CheckpointError", "Dataset", "GaussianNoise",
    "InputFileError", "InvphysError", "NonFiniteError", "Normaliser", "Problem",
    "ShapeError", "Spec", "SpecError", "load_problem", "load_spec", "make_dataset",
    "normalise_obs", "normalised_problem",
    "AbstractDeceptron", "Checkpoint", "Deceptron", "MLPDeceptron", "TrainConfig",
    "jcp_estimate", "load_checkpoint", "load_deceptron", "train_deceptron", "train_from_spec",
    "__version__",
]
