"""Training a PINN: the block Gauss-Newton / Levenberg-Marquardt step, and loops for it
and for any optax optimizer, recording the loss, a user metric and the wall clock.

The step is the one of :func:`invphys.optim.gauss_newton` (LM damping by
:func:`~invphys.optim.lm_damping_update`, a backtracking search over ``alpha = 0.5^k``
by :func:`~invphys.optim.backtracking`, a step kept only if the loss went down), with
the damped system ``(J^T J + lambda I) d = -J^T r`` solved by a block solver from
:mod:`._blocks`, which uses the subdomain structure that a matrix-free GN cannot see.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, Int

from ..optim import backtracking, lm_damping_update
from ._blocks import AbstractBlockSolver
from ._field import Theta
from ._residual import Residuals

__all__ = ["GNState", "fit_gauss_newton", "fit_optax", "gauss_newton_step", "grid_search"]


class GNState(NamedTuple):
    """LM's ``damping``; the last step's loss before it, step size, ratio ``rho`` of actual
    to predicted reduction, whether it was accepted, and the solver's iterations."""

    damping: Float[Array, ""]
    loss: Float[Array, ""]
    step_size: Float[Array, ""]
    rho: Float[Array, ""]
    accepted: Bool[Array, ""]
    solver_steps: Int[Array, ""]


def init_state(damping: float = 1e-3, dtype=float) -> GNState:
    z = jnp.zeros((), dtype)
    return GNState(jnp.asarray(damping, dtype), z, z, z, jnp.asarray(False),
                   jnp.zeros((), jnp.int32))


def _axpy(a, x: Theta, y: Theta) -> Theta:
    return jax.tree.map(lambda u, v: a * u + v, x, y)


def _vdot(x: Theta, y: Theta):
    return sum(jnp.vdot(u, v) for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y),
                                              strict=True))


def grid_search(value_fn: Callable[[Theta], Float[Array, ""]], theta: Theta, d: Theta,
                value0, levels: int):
    """Energy natural gradient's line search: ``f(theta + alpha d)`` at every ``alpha``
    in ``1, 1/2, ..., 2^-(levels-1)`` (one vmapped evaluation), the best one taken.
    Returns ``(alpha, f(theta + alpha d), ok)``, ``ok``: it decreased ``f``."""
    alphas = 0.5 ** jnp.arange(levels, dtype=value0.dtype)
    fs = jax.vmap(lambda a: value_fn(_axpy(a, d, theta)))(alphas)
    fs = jnp.where(jnp.isfinite(fs), fs, jnp.inf)
    k = jnp.argmin(fs)
    return alphas[k], fs[k], fs[k] < value0


def gauss_newton_step(residuals: Residuals, solver: AbstractBlockSolver, theta: Theta,
                      state: GNState, *, line_search: str = "backtracking",
                      max_backtracks: int = 12, armijo: float = 1e-4, grid_levels: int = 31,
                      decrease: float = 1.0 / 3.0, increase: float = 3.0,
                      min_damping: float = 1e-14, max_damping: float = 1e8,
                      rho_low: float = 0.25, rho_high: float = 0.75
                      ) -> tuple[Theta, GNState]:
    """One damped GN step on ``0.5 |r(theta)|^2`` (traceable; jit it).

    ``line_search="backtracking"``: the first ``alpha = 0.5^k`` with Armijo decrease
    (``k <= max_backtracks``); ``"grid"``: the best of ``alpha = 0.5^k``,
    ``k < grid_levels`` (:func:`grid_search`). LM's damping follows the ratio of actual
    to predicted reduction at the ``alpha`` taken (:func:`~invphys.optim.lm_damping_update`
    with ``rho_low``, ``rho_high``). With the grid search the model's
    ratio at the best ``alpha`` sits near 1/2 even when the model is exact along the
    line (the best point of a parabola gains half of what the model's full step
    promised), so the plain LM rule (``rho_high = 0.75``) never lowers the damping
    there; ``rho_low = rho_high = 0`` makes the damping a safeguard that shrinks by
    ``decrease`` on every accepted step and grows by ``increase`` on a rejected one,
    the line search doing the globalisation (energy natural gradient: a pseudo-inverse
    with a tiny cut, :class:`DenseSolve` ``"svd"``, and the grid search)."""
    lin = residuals.linearise(theta)
    d, steps = solver(lin, state.damping)
    g = lin.gradient()
    gd = _vdot(g, d)
    jd = lin.jvp(d)
    dgd = jnp.vdot(jd, jd)
    value = lin.value
    if line_search == "grid":
        alpha, f_new, ok = grid_search(residuals.loss, theta, d, value, grid_levels)
    elif line_search == "backtracking":
        alpha, f_new, _, ok = backtracking(residuals.loss, theta, d, value, gd,
                                           max_backtracks=max_backtracks, armijo=armijo)
    else:
        raise ValueError(f"line_search must be 'backtracking' or 'grid', not {line_search!r}")
    actual = value - f_new
    predicted = -(alpha * gd + 0.5 * alpha**2 * dgd)
    rho = jnp.where(predicted > 0, actual / jnp.where(predicted > 0, predicted, 1.0), -jnp.inf)
    accepted = ok & jnp.isfinite(f_new) & (actual > 0)
    # select, never multiply: a failed solve (d with NaN) times 0 is still NaN
    new = jax.tree.map(lambda a, b: jnp.where(accepted, a, b), _axpy(alpha, d, theta), theta)
    lam = lm_damping_update(state.damping, jnp.where(accepted, rho, -jnp.inf),
                            decrease=decrease, increase=increase, min_damping=min_damping,
                            max_damping=max_damping, rho_low=rho_low, rho_high=rho_high)
    return new, GNState(lam, value, alpha, rho, accepted, steps)


_jit_step = eqx.filter_jit(gauss_newton_step)
# one jitted loss for every fit: a new lambda per call would compile again each time
_jit_loss = eqx.filter_jit(lambda res, th: res.loss(th))


def _record(hist, it, t, theta, loss, metric):
    hist["iteration"].append(it)
    hist["time_s"].append(t)
    hist["loss"].append(float(loss))
    if metric is not None:
        hist["metric"].append(float(metric(theta)))


def fit_gauss_newton(residuals: Residuals, solver: AbstractBlockSolver, theta: Theta,
                     iterations: int, *, damping: float = 1e-3,
                     metric: Callable[[Theta], Float[Array, ""]] | None = None,
                     target: float | None = None, every: int = 1, **step_kw
                     ) -> tuple[Theta, dict]:
    """``iterations`` GN steps (one compiled step, called from Python so each one is
    timed). History: iteration, cumulative wall-clock (compile excluded; the metric's
    evaluation excluded), loss and ``metric(theta)`` every ``every`` steps; stops
    early once ``metric <= target``. ``compile_s`` holds the compilation time."""
    step = lambda res, th, st: _jit_step(res, solver, th, st, **step_kw)
    state = init_state(damping, theta.nets.dtype)
    t0 = time.perf_counter()
    jax.block_until_ready(step(residuals, theta, state))  # compile (the result is dropped)
    compile_s = time.perf_counter() - t0
    compiled = step
    metric_j = None if metric is None else jax.jit(metric)
    loss_j = _jit_loss
    hist: dict = {"iteration": [], "time_s": [], "loss": [], "metric": [], "solver_steps": [],
                  "damping": []}
    _record(hist, 0, 0.0, theta, loss_j(residuals, theta), metric_j)
    clock = 0.0
    for it in range(1, iterations + 1):
        t0 = time.perf_counter()
        theta, state = compiled(residuals, theta, state)
        jax.block_until_ready(theta)
        clock += time.perf_counter() - t0
        hist["solver_steps"].append(int(state.solver_steps))
        hist["damping"].append(float(state.damping))
        if it % every == 0 or it == iterations:
            _record(hist, it, clock, theta, loss_j(residuals, theta), metric_j)
            if target is not None and hist["metric"] and hist["metric"][-1] <= target:
                break
    hist["compile_s"] = compile_s
    return theta, hist


def fit_optax(residuals: Residuals, optimizer: optax.GradientTransformation, theta: Theta,
              steps: int, *, chunk: int = 500,
              metric: Callable[[Theta], Float[Array, ""]] | None = None) -> tuple[Theta, dict]:
    """``steps`` optimizer steps on ``0.5 |r|^2`` in compiled chunks of ``chunk`` (a
    ``lax.scan`` each); history recorded after each chunk (as :func:`fit_gauss_newton`)."""
    opt_state = optimizer.init(theta)

    @eqx.filter_jit
    def run(res, th, st, n):

        def body(carry, _):
            p, s = carry
            v, g = jax.value_and_grad(res.loss)(p)
            u, s = optimizer.update(g, s, p)
            return (optax.apply_updates(p, u), s), v

        (th, st), _ = jax.lax.scan(body, (th, st), None, length=n)
        return th, st

    n0 = min(chunk, steps)
    t0 = time.perf_counter()
    jax.block_until_ready(run(residuals, theta, opt_state, n0))  # compile (dropped)
    compile_s = time.perf_counter() - t0
    metric_j = None if metric is None else jax.jit(metric)
    loss_j = _jit_loss
    hist: dict = {"iteration": [], "time_s": [], "loss": [], "metric": []}
    _record(hist, 0, 0.0, theta, loss_j(residuals, theta), metric_j)
    done, clock = 0, 0.0
    while done < steps:
        n = min(n0, steps - done)
        t0 = time.perf_counter()
        theta, opt_state = run(residuals, theta, opt_state, n)
        jax.block_until_ready(theta)
        clock += time.perf_counter() - t0
        done += n
        _record(hist, done, clock, theta, loss_j(residuals, theta), metric_j)
    hist["compile_s"] = compile_s
    return theta, hist


def relative_l2(residuals: Residuals, points, exact) -> Callable[[Theta], Float[Array, ""]]:
    """``theta -> |u - exact| / |exact|`` at ``points`` (``exact``: the values there)."""
    exact = jnp.asarray(exact)
    norm = jnp.linalg.norm(exact)
    pts = np.asarray(points)
    return lambda th: jnp.linalg.norm(residuals.solution(th, pts) - exact) / norm
