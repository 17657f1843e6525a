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


# ------------------------------------------------ solver tables (methods x problems)
# The invariant tests in test_solve.py run over the cross product of these two tables:
# a new method or problem is one line. Each problem entry builds (Problem, y batch (3, m),
# x0, exact inverse or None); each method entry builds a descent from that entry (None:
# the method does not apply, e.g. D-IPG without an exact inverse).
def _linear_entry():
    import jax.numpy as jnp

    k1, k2 = jax.random.split(jax.random.key(4))
    A = jax.random.normal(k1, (8, 4))
    p = invphys.Problem(forward=lambda x: A @ x, lower=-0.5 * jnp.ones(4),
                        upper=0.5 * jnp.ones(4))
    ys = jnp.stack([A @ jnp.full(4, 0.2 * i) + 0.1 * jax.random.normal(k2, (8,))
                    for i in range(3)])
    pinv = jnp.linalg.pinv(A)
    return p, ys, jnp.zeros(4), (lambda z: pinv @ z)


def _mgh_entry(name, bounded=False):
    import jax.numpy as jnp

    from invphys.certify import MGH_BOUNDED, get_mgh

    prob = next(q for q in MGH_BOUNDED if q.name == name) if bounded else get_mgh(name)
    p = invphys.Problem(forward=prob.residual, lower=getattr(prob, "lower", None),
                        upper=getattr(prob, "upper", None), x_size=prob.n)
    x0 = p.project(jnp.asarray(prob.x0, float))
    ys = jnp.stack([jnp.zeros(prob.m), 0.01 * jnp.ones(prob.m), -0.01 * jnp.ones(prob.m)])
    return p, ys, x0, None


def _physics_entry(name, fidelity):
    p = problem(name, fidelity)
    xs = p.sample(jax.random.key(0), 3)
    _, ys = p.observe(jax.random.key(1), xs)
    return p, ys, p.start(ys.dtype), None


PROBLEMS = {
    "linear": _linear_entry,
    "mgh-beale": lambda: _mgh_entry("beale"),
    "mgh-rosenbrock-bounded": lambda: _mgh_entry("rosenbrock_bounded", bounded=True),
    **{f"{n}-{f}": functools.partial(_physics_entry, n, f) for n, f in FIDELITIES},
}
#: the problems the default run covers (small MGH and the physics fidelities: -m slow)
FAST_PROBLEMS = ("linear", "mgh-rosenbrock-bounded")


def _dipg(entry):
    from invphys.solve import DIPG

    inverse = entry[3]
    return None if inverse is None else DIPG(inverse=inverse, form="local")


def _method_table():
    from invphys.solve import (
        GaussNewton,
        LevenbergMarquardt,
        LevenbergMarquardtCG,
        ProjectedGradient,
    )

    return {
        "pg": lambda e: ProjectedGradient(),
        "dipg-exact": _dipg,
        "gn": lambda e: GaussNewton(),
        "lm-direct": lambda e: LevenbergMarquardt(solver="direct"),
        "lm-cg": lambda e: LevenbergMarquardtCG(),
        "lm-production": lambda e: LevenbergMarquardt(damping0=1e-12, geodesic=0.75,
                                                      production=True),
    }


METHODS = _method_table()


@functools.cache
def problem_entry(name):
    return PROBLEMS[name]()


def tiny_heat_spec(*, s: float = 0.45, max_iter: int = 5, train: str = "") -> str:
    """A Heat-1D spec small enough for CLI tests (12 points, 10 steps, 64 samples); ``s``
    is the explicit step's kappa dt / dx^2 (unstable above 0.5), ``train`` extra TOML."""
    return f"""name = "tiny"
problem = "heat1d"
[physics]
n = 12
steps = 10
s = {s}
[noise]
std = 0.02
[bounds]
lower = -3.0
upper = 3.0
pin = [0, 11]
[data]
n_train = 64
n_val = 16
n_test = 16
[solve]
max_iter = {max_iter}
{train}"""


def central_difference_orders(fn, x, v, hs) -> np.ndarray:
    """The observed orders log2(err(h) / err(h/2)) of central differences of ``fn`` at
    ``x`` along ``v`` against the JVP, for step sizes ``hs`` halving each time: 2 where
    the JVP is the derivative (the central difference's error is O(h^2))."""
    _, jv = jax.jvp(fn, (x,), (v,))
    errs = [float(np.linalg.norm((fn(x + h * v) - fn(x - h * v)) / (2 * h) - jv)) for h in hs]
    return np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
