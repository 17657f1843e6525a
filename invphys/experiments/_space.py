"""The paper's normalised output space, as a Problem.

Every residual, RMSE and tolerance in the Deceptron protocol lives in z-space: outputs
z-scored with a normaliser fitted on the training split. :func:`normalised_problem`
wraps a problem's forward map so a solver works there; ``signal_only`` drops outputs
that carry noise only (Heat's pinned endpoints), which otherwise set a residual floor.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .._data import Normaliser, make_dataset
from .._problem import Problem


def normalised_problem(problem: Problem, normaliser: Normaliser,
                       signal_only: bool = False) -> Problem:
    """``problem`` with forward x -> normaliser.transform(F(x)) (optionally signal dims only)."""
    fn = problem.fn
    if signal_only:
        keep = np.flatnonzero(np.asarray(normaliser.signal))
        return problem.with_forward(
            lambda x: normaliser.transform(fn(x))[keep], name=f"{problem.name}[z,signal]"
        )
    return problem.with_forward(lambda x: normaliser.transform(fn(x)), name=f"{problem.name}[z]")


def normalise_obs(y, normaliser: Normaliser, signal_only: bool = False):
    z = normaliser.transform(jnp.asarray(y))
    if signal_only:
        z = z[..., np.flatnonzero(np.asarray(normaliser.signal))]
    return z


def spec_normaliser(problem: Problem) -> Normaliser:
    """The normaliser of the spec's training split (simulated from the spec's seed)."""
    return make_dataset(problem, n_val=1, n_test=1).normaliser
