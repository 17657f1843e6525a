"""Backtracking (Armijo) along a fixed direction, and the Levenberg-Marquardt damping rule.

Both are pure functions of arrays, traced with ``lax`` control flow only, so the
optimizers that use them jit-compile, vmap over seeds and never sync with the host.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PyTree, Scalar

from ._curvature import tree_axpy

__all__ = ["backtracking", "lm_damping_update"]


def backtracking(
    value_fn: Callable[[PyTree[Array]], Scalar],
    params: PyTree[Array],
    direction: PyTree[Array],
    value0: Scalar,
    slope: Scalar,
    *,
    max_backtracks: int = 10,
    shrink: float = 0.5,
    armijo: float = 1e-4,
) -> tuple[Float[Array, ""], Float[Array, ""], Int[Array, ""], Bool[Array, ""]]:
    """The first ``alpha`` in ``1, shrink, shrink^2, ...`` with sufficient decrease.

    Sufficient decrease is Armijo's ``f(params + alpha d) <= f(params) + armijo * alpha * slope``
    with ``slope = min(g.d, 0)`` (a plain decrease when ``d`` is not a descent direction,
    as a prox-linear direction may be). At most ``max_backtracks`` halvings after the
    full step; ``max_backtracks=0`` evaluates the full step only. Returns ``(alpha,
    f(params + alpha d), halvings, satisfied)``; the caller decides what an
    unsatisfied search means (the LM rule rejects the step).
    """
    dtype = jnp.result_type(value0)
    slope = jnp.minimum(jnp.asarray(slope, dtype), 0.0)

    def f_at(alpha):
        return jnp.asarray(value_fn(tree_axpy(alpha, direction, params)), dtype)

    def ok(alpha, f):
        return jnp.isfinite(f) & (f <= value0 + armijo * alpha * slope)

    def cond(carry):
        i, alpha, f = carry
        return (~ok(alpha, f)) & (i < max_backtracks)

    def body(carry):
        i, alpha, _ = carry
        alpha = alpha * shrink
        return i + 1, alpha, f_at(alpha)

    one = jnp.ones((), dtype)
    i, alpha, f = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), one, f_at(one)))
    return alpha, f, i, ok(alpha, f)


def lm_damping_update(
    damping: Scalar,
    rho: Scalar,
    *,
    decrease: float = 1.0 / 3.0,
    increase: float = 3.0,
    rho_low: float = 0.25,
    rho_high: float = 0.75,
    min_damping: float = 1e-12,
    max_damping: float = 1e12,
) -> Float[Array, ""]:
    """Levenberg-Marquardt's rule: trust the quadratic model more when it predicted well.

    ``rho`` is the actual over the predicted reduction. ``rho > rho_high``: multiply the
    damping by ``decrease``; ``rho < rho_low`` or non-finite (a rejected step):
    multiply by ``increase``; otherwise keep it. Clipped to ``[min_damping, max_damping]``.
    """
    bad = ~jnp.isfinite(rho) | (rho < rho_low)
    factor = jnp.where(bad, increase, jnp.where(rho > rho_high, decrease, 1.0))
    return jnp.clip(damping * factor, min_damping, max_damping).astype(jnp.result_type(damping))
