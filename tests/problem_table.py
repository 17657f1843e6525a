"""Shared problem tables for parametrised tests."""

import functools

import equinox as eqx
import jax
import numpy as np

import invphys

FIDELITIES = [
    ("heat1d", "paper"),
    ("heat1d", "accurate"),
    ("oscillator", "paper"),
    ("oscillator", "accurate"),
]


@functools.cache
def problem(name: str, fidelity: str = "paper", **overrides) -> invphys.Problem:
    return invphys.load_problem(name, {"physics.fidelity": fidelity, **overrides})


def box_linear_lsq(seed: int, m: int = 15, n: int = 6):
    """A coupled box-constrained linear least-squares problem with active bounds, and
    scipy's lsq_linear answer: ``(A, b, lower, upper, ref)``."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import scipy.optimize

    k1, k2 = jax.random.split(jax.random.key(seed))
    A = jax.random.normal(k1, (m, n)) @ (jnp.eye(n) + 0.8 * jnp.ones((n, n)) / n)
    b = 3.0 * jax.random.normal(k2, (m,))
    lo, hi = -0.3 * np.ones(n), 0.4 * np.ones(n)
    ref = scipy.optimize.lsq_linear(np.asarray(A), np.asarray(b), bounds=(lo, hi), tol=1e-14)
    assert np.sum(ref.active_mask != 0) > 0, "the table's problems must have active bounds"
    return A, b, lo, hi, ref


def kkt_holds(grad, x, lo, hi, tol: float, bound_slack: float = 0.0) -> bool:
    """First-order KKT conditions of min f on the box [lo, hi] with gradient ``grad``:
    zero on free components, pointing outward at active bounds (to ``tol``)."""
    import numpy as np

    grad, x = np.asarray(grad), np.asarray(x)
    at_lo, at_hi = x <= lo + bound_slack, x >= hi - bound_slack
    free = ~(at_lo | at_hi)
    return bool(np.all(np.abs(grad[free]) <= tol) and np.all(grad[at_lo] >= -tol)
                and np.all(grad[at_hi] <= tol))


def leaves(tree):
    """The array leaves of a pytree (an Equinox model) as NumPy arrays."""
    return [np.asarray(a) for a in jax.tree.leaves(eqx.filter(tree, eqx.is_array))]


def assert_identical(a, b):
    """Two pytrees have bit-identical array leaves (dtype, shape and values)."""
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)
