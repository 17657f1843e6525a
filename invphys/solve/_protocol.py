"""The shared protocol: one jitted loop that every method runs through.

Per iteration: the method linearises (``prepare``); then up to ``max_halvings + 1``
trials alpha = alpha0, alpha0/2, ...: p = p(alpha), x_t = Proj(x + p),
x+ = (1 - rho) x + rho x_t, accepted on a finite p and the Armijo test. No
acceptance: x stays. The history (RMSE, accepted, alpha) goes into fixed-size arrays;
stopping is by iteration limit, stall, target eps (optional) or tolerances. The
whole solve is one ``lax.while_loop``, jitted, and vmaps over a batch of problems.

``Rules(endgame=True)`` (``invphys.least_squares``; off in the paper protocol) adds
the production endgame: Gauss-Newton polishing under Deuflhard's natural monotonicity
test and stopping on the Gauss-Newton step, the gradient and the rounding floor
(:func:`_endgame_step`, :func:`_endgame`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PyTree

from .._errors import NonFiniteError, ShapeError
from .._problem import Problem, check_finite
from ._methods import (
    AbstractMethod,
    GaussNewton,
    LevenbergMarquardt,
    Lin,
    Newton,
    ProjectedGradient,
    active_set,
)
from ._rules import RESULTS, Rules

METHODS = {"pg": ProjectedGradient, "gn": GaussNewton, "lm": LevenbergMarquardt}


class Solution(eqx.Module):
    """The result of :func:`solve` (every array gains a leading axis in a batched solve).

    ``converged`` means the target eps was reached (``steps_to_eps >= 0``); ``result``
    says why the loop stopped (:class:`RESULTS`). ``history`` holds fixed-size arrays:
    ``rmse`` (max_iter + 1; NaN after the last iteration), ``accepted`` and ``alpha``
    (max_iter). ``stats``: nfev, njev, accepted, rejected, steps_to_eps, result.
    """

    x: Float[Array, "... n"]
    steps: Int[Array, "..."]
    rmse: Float[Array, "..."]
    converged: Bool[Array, "..."]
    result: RESULTS
    history: dict[str, Array]
    stats: dict[str, Array]
    grad_inf: Float[Array, "..."]
    active: Bool[Array, "... n"]
    x0_projected: bool = eqx.field(static=True, default=False)

    @property
    def message(self) -> str:
        """The stop reason (for a single solve)."""
        return RESULTS[self.result]


class _Carry(eqx.Module):
    x: Array
    phi: Array
    rmse: Array
    it: Array
    stall: Array
    stop: Array
    result: Any
    steps_to_eps: Array
    mstate: PyTree
    hist_rmse: Array
    hist_acc: Array
    hist_alpha: Array
    nfev: Array
    njev: Array
    n_acc: Array
    n_rej: Array
    # production stopping rules (Rules(endgame=True)); inert otherwise
    n_fail: Array  # consecutive failed line searches
    n_stag: Array  # consecutive iterations without progress
    best_phi: Array
    best_size: Array  # the shortest (scaled) Gauss-Newton step so far
    degenerate: Array
    phi0: Array  # the objective at the start


def _objective(fn, x, y_obs):
    r = fn(x) - y_obs
    return 0.5 * jnp.mean(r**2)


def _line_search(fn, x, y_obs, lin: Lin, aux, method: AbstractMethod, rules: Rules,
                 cset: Problem):
    """Backtracking: halve alpha until a trial passes Armijo (or trials run out)."""
    dtype = x.dtype

    def trial(k):
        alpha = jnp.asarray(rules.alpha0, dtype) * jnp.asarray(0.5, dtype) ** k
        p = method.propose(fn, x, y_obs, lin, aux, alpha)
        finite_p = jnp.all(jnp.isfinite(p))
        p = jnp.where(finite_p, p, 0.0)
        x_t = cset.project(x + p)
        x_new = (1.0 - rules.rho) * x + rules.rho * x_t
        phi_new = _objective(fn, x_new, y_obs)
        if rules.armijo == "proposal":
            bound = lin.phi + rules.armijo_c * rules.rho * jnp.vdot(lin.grad, p)
        else:
            bound = lin.phi + rules.armijo_c * jnp.vdot(lin.grad, x_new - x)
        if rules.endgame:  # a rise within the rounding of Phi is not a rejection
            bound = bound + rules.noise_tol * jnp.finfo(dtype).eps * jnp.abs(lin.phi)
        ok = finite_p & jnp.isfinite(phi_new) & (phi_new <= bound)
        return ok, alpha, x_new, phi_new

    def cond(c):
        k, ok = c[0], c[1]
        return (~ok) & (k <= rules.max_halvings)

    def body(c):
        k = c[0]
        ok, alpha, x_new, phi_new = trial(k)
        return k + 1, ok, alpha, x_new, phi_new

    init = (jnp.asarray(0), jnp.asarray(False), jnp.asarray(rules.alpha0, dtype), x,
            lin.phi)
    ntrials, ok, alpha, x_new, phi_new = jax.lax.while_loop(cond, body, init)
    x_new = jnp.where(ok, x_new, x)
    phi_new = jnp.where(ok, phi_new, lin.phi)
    return ok, alpha, x_new, phi_new, ntrials


def _typed(fn, dtype):
    return lambda x: fn(x).astype(dtype)  # a float32 solve stays float32


def _init(fn, cset: Problem, method: AbstractMethod, rules: Rules, y_obs, x0) -> _Carry:
    """The loop state at x0 (iteration 0)."""
    dtype = x0.dtype
    fn = _typed(fn, dtype)
    n_it = rules.max_iter
    phi0 = _objective(fn, x0, y_obs)
    rmse0 = jnp.sqrt(2.0 * phi0)
    reached0 = rmse0 <= rules.eps
    carry = _Carry(
        x=x0, phi=phi0, rmse=rmse0, it=jnp.asarray(0), stall=jnp.asarray(0),
        stop=reached0 & rules.stop_at_eps,
        result=RESULTS.where(reached0 & rules.stop_at_eps, RESULTS.target_reached,
                             RESULTS.max_iterations),
        steps_to_eps=jnp.where(reached0, 0, -1),
        mstate=method.init(fn, x0, y_obs),
        hist_rmse=jnp.full((n_it + 1,), jnp.nan, dtype).at[0].set(rmse0),
        hist_acc=jnp.zeros((n_it,), bool),
        hist_alpha=jnp.zeros((n_it,), dtype),
        nfev=jnp.asarray(1), njev=jnp.asarray(0), n_acc=jnp.asarray(0),
        n_rej=jnp.asarray(0),
        n_fail=jnp.asarray(0), n_stag=jnp.asarray(0), best_phi=phi0,
        best_size=jnp.asarray(jnp.inf, dtype), degenerate=jnp.asarray(False), phi0=phi0,
    )
    if rules.endgame:  # a non-finite start stops at once (the caller raises if concrete)
        bad0 = ~jnp.isfinite(phi0)
        carry = dataclasses.replace(
            carry, stop=bad0 | carry.stop,
            result=RESULTS.where(bad0, RESULTS.nonfinite, carry.result))
    return carry


def _run(fn, cset: Problem, method: AbstractMethod, rules: Rules, y_obs, carry: _Carry,
         until) -> _Carry:
    """Iterate from ``carry`` until a stop or iteration ``until`` (<= max_iter): one
    ``lax.while_loop`` (jit/vmap friendly, no host syncs)."""
    fn = _typed(fn, carry.x.dtype)
    until = jnp.minimum(until, rules.max_iter)

    def cond(c: _Carry):
        return (~c.stop) & (c.it < until)

    def body(c: _Carry):
        lin, aux = method.prepare(fn, c.x, y_obs, c.mstate, cset)
        if rules.endgame:
            newton = method.newton(c.x, lin, aux)
            ok, alpha, x_new, phi_new, ntrials, floor = _endgame_step(
                fn, c.x, y_obs, lin, aux, method, rules, cset, newton)
        else:
            ok, alpha, x_new, phi_new, ntrials = _line_search(
                fn, c.x, y_obs, lin, aux, method, rules, cset
            )
        # a rejection keeps x, so it keeps the carried objective (linearize's evaluation
        # of the same x may differ in the last bit)
        phi_new = jnp.where(ok, phi_new, c.phi)
        step = x_new - c.x
        mstate = method.update(c.mstate, lin, aux, ok, alpha, step, phi_new)
        it = c.it + 1
        rmse = jnp.sqrt(2.0 * phi_new)
        stall = jnp.where(jnp.abs(rmse - c.rmse) < rules.stall_tol, c.stall + 1, 0)
        first_eps = (c.steps_to_eps < 0) & (rmse <= rules.eps)
        steps_to_eps = jnp.where(first_eps, it, c.steps_to_eps)
        # tolerances (off in the paper protocol)
        pg = jnp.max(jnp.abs(cset.project(x_new - lin.grad) - x_new)) if cset.has_constraints \
            else jnp.max(jnp.abs(lin.grad))
        small_step = ok & (jnp.linalg.norm(step) <= rules.xtol * (rules.xtol
                                                                   + jnp.linalg.norm(x_new)))
        small_f = ok & (lin.phi - phi_new <= rules.ftol * lin.phi)
        converged = (pg <= rules.gtol) | small_step | small_f
        reached = (steps_to_eps >= 0) & rules.stop_at_eps
        stalled = stall >= rules.stall_patience
        result = RESULTS.where(
            reached, RESULTS.target_reached,
            RESULTS.where(converged, RESULTS.converged,
                          RESULTS.where(stalled, RESULTS.stalled, RESULTS.max_iterations)),
        )
        stop = reached | converged | stalled
        n_fail, n_stag, best_phi, best_size, degenerate = (
            c.n_fail, c.n_stag, c.best_phi, c.best_size, c.degenerate)
        if rules.endgame:
            stop, result, n_fail, n_stag, best_phi, best_size, degenerate = _endgame(
                c, lin, newton, rules, cset, ok, step, phi_new, floor, reached, c.phi0)
        return _Carry(
            x=x_new, phi=phi_new, rmse=rmse, it=it, stall=stall,
            stop=stop, result=result, steps_to_eps=steps_to_eps,
            mstate=mstate,
            hist_rmse=c.hist_rmse.at[it].set(rmse),
            hist_acc=c.hist_acc.at[c.it].set(ok),
            hist_alpha=c.hist_alpha.at[c.it].set(jnp.where(ok, alpha, 0.0)),
            nfev=c.nfev + 1 + ntrials, njev=c.njev + 1,
            n_acc=c.n_acc + ok, n_rej=c.n_rej + (~ok),
            n_fail=n_fail, n_stag=n_stag, best_phi=best_phi, best_size=best_size,
            degenerate=degenerate, phi0=c.phi0,
        )

    return jax.lax.while_loop(cond, body, carry)


def _finish(fn, cset: Problem, y_obs, c: _Carry) -> Solution:
    """The Solution at the loop's final state (diagnostics at the answer)."""
    dtype = c.x.dtype
    fn = _typed(fn, dtype)
    y, vjp = jax.vjp(fn, c.x)
    r = y - y_obs
    grad = vjp(r)[0] / r.size
    active = active_set(c.x, grad, cset, jnp.asarray(0.0, dtype)) if cset.has_constraints \
        else jnp.zeros(c.x.shape, bool)
    grad_inf = jnp.max(jnp.abs(jnp.where(active, 0.0, grad)))
    steps_to_eps = c.steps_to_eps
    return Solution(
        x=c.x, steps=c.it, rmse=c.rmse, converged=steps_to_eps >= 0, result=c.result,
        history={"rmse": c.hist_rmse, "accepted": c.hist_acc, "alpha": c.hist_alpha},
        stats={"nfev": c.nfev + 1, "njev": c.njev + 1, "accepted": c.n_acc,
               "rejected": c.n_rej, "steps_to_eps": steps_to_eps, "result": c.result._value},
        grad_inf=grad_inf, active=active,
    )


def _endgame_step(fn, x, y_obs, lin: Lin, aux, method, rules: Rules, cset,
                  newton: Newton | None):
    """One production step (``Rules(endgame=True)``).

    Once the method's Gauss-Newton step is below ``rules.polish`` |x| (scaled norms), the
    plain GN step is tried first and accepted by Deuflhard's natural monotonicity test:
    the simplified GN correction J_k^+ r(x+) must be shorter than J_k^+ r(x_k). Near a
    solution the change of Phi is often below its rounding (|r| << |y|), so a cost test
    rejects good steps at random; this affine-invariant test does not, and it refuses GN
    where GN does not converge (large residuals). A refused step at a GN step already
    below sqrt(eps) |x| is the rounding floor (``floor``); otherwise the line search runs.
    Returns (ok, alpha, x_new, phi_new, evaluations, floor).
    """
    dtype = x.dtype
    no = jnp.asarray(False)

    def line_search():
        ok, alpha, x_new, phi_new, ntrials = _line_search(fn, x, y_obs, lin, aux, method,
                                                          rules, cset)
        return ok, alpha, x_new, phi_new, ntrials

    if newton is None or newton.solve is None or rules.polish <= 0:
        return (*line_search(), no)
    gn, scale = newton.step, newton.scale
    size = jnp.linalg.norm(scale * gn)
    xsize = jnp.linalg.norm(scale * x)
    eligible = jnp.all(jnp.isfinite(gn)) & (size <= rules.polish * xsize)

    def try_gn():
        x_new = cset.project(x + gn)
        r_new = fn(x_new) - y_obs
        phi_new = 0.5 * jnp.mean(r_new**2)
        simplified = jnp.linalg.norm(scale * newton.solve(r_new))
        good = jnp.isfinite(phi_new) & jnp.isfinite(simplified) \
            & ((simplified < size) | (size == 0))
        floor = ~good & (size <= jnp.sqrt(jnp.finfo(dtype).eps) * xsize)
        return good, x_new, phi_new, floor

    def skip():
        return no, x, lin.phi, no

    good, x_gn, phi_gn, floor = jax.lax.cond(eligible, try_gn, skip)

    def taken():
        return (good, jnp.asarray(1.0, dtype), jnp.where(good, x_gn, x),
                jnp.where(good, phi_gn, lin.phi), jnp.asarray(1))

    def searched():
        ok, alpha, x_new, phi_new, ntrials = line_search()
        return ok, alpha, x_new, phi_new, ntrials + eligible

    ok, alpha, x_new, phi_new, nev = jax.lax.cond(good | floor, taken, searched)
    return ok, alpha, x_new, phi_new, nev, floor


def _endgame(c: _Carry, lin: Lin, newton: Newton | None, rules: Rules, cset, ok, step,
             phi_new, floor, reached, phi0):
    """The production stopping rules (``Rules(endgame=True)``), tested at the iterate
    x_k the iteration started from; an accepted step is taken before stopping.

    Success: the GN step is below rtol |x| + atol (``step_converged``); the projected
    gradient is <= gtol; the residual fell below eps |r_0| (``zero_residual``); the
    rounding floor, or ``stagnation`` iterations without a cost decrease beyond the
    rounding of Phi nor a halving of the GN step, or ``max_rejections`` failed line
    searches in a row, at a point whose Jacobian columns are orthogonal to the residual
    to eps^(1/3) (``precision_limit``). The same ends elsewhere are failures
    (``no_progress``), and any success at a point where a free parameter no longer
    affects the residual is reported as ``degenerate``.
    """
    x = c.x
    dtype = x.dtype
    eps = jnp.finfo(dtype).eps
    if newton is None:  # no undamped step known: test the step taken
        gn, scale, colnorm = step, jnp.ones_like(x), jnp.ones_like(x)
        degenerate = jnp.asarray(False)
    else:
        gn, scale, colnorm = newton.step, newton.scale, newton.colnorm
        degenerate = newton.degenerate
    finite = jnp.all(jnp.isfinite(gn))
    size = jnp.linalg.norm(scale * gn)
    small_x = finite & jnp.all(jnp.abs(gn) <= rules.rtol * jnp.abs(x) + rules.atol)
    free_g = cset.project(x - lin.grad) - x if cset.has_constraints else -lin.grad
    m = lin.r.size
    small_g = jnp.max(jnp.abs(free_g)) * m <= rules.gtol  # cost gradient J^T r
    # the cosine between each (free) Jacobian column and the residual
    rnorm = jnp.sqrt(2.0 * m * lin.phi)
    cosine = jnp.max(jnp.abs(free_g) * m / jnp.maximum(colnorm * rnorm,
                                                       jnp.finfo(dtype).tiny))
    # stationary to what a flat cost allows: at singular or large-residual minima the
    # cosine stalls near sqrt(eps); eps^(1/3) still separates them from a crawl
    stationary = cosine <= eps ** (1.0 / 3.0)
    zero_r = phi_new <= (eps**2) * phi0
    n_fail = jnp.where(ok, 0, c.n_fail + 1)
    stuck = n_fail >= rules.max_rejections
    # progress against the reference point of the last progress (so that many small
    # decreases add up): the cost fell beyond its rounding, or the GN step halved
    progress = (phi_new < c.best_phi * (1.0 - max(rules.noise_tol, 4.0) * eps)) \
        | (size < 0.5 * c.best_size)
    n_stag = jnp.where(progress, 0, c.n_stag + 1)
    stagnant = n_stag >= rules.stagnation
    ended = stuck | stagnant
    bad = ~jnp.isfinite(phi_new)
    success = zero_r | small_x | small_g | floor | (ended & stationary)
    fail_code = RESULTS.where(ended, RESULTS.no_progress, RESULTS.max_iterations)
    code = RESULTS.where(
        zero_r, RESULTS.zero_residual,
        RESULTS.where(small_x, RESULTS.step_converged,
                      RESULTS.where(small_g, RESULTS.gradient_converged,
                                    RESULTS.where(success, RESULTS.precision_limit,
                                                  fail_code))))
    # a converged point where a free parameter stopped mattering is not a certified one
    code = RESULTS.where(success & ~zero_r & degenerate, RESULTS.degenerate, code)
    code = RESULTS.where(bad, RESULTS.nonfinite, code)
    code = RESULTS.where(reached, RESULTS.target_reached, code)
    stop = reached | success | ended | bad
    best_phi = jnp.where(progress, jnp.minimum(c.best_phi, phi_new), c.best_phi)
    best_size = jnp.where(progress & finite, jnp.minimum(c.best_size, size), c.best_size)
    return stop, code, n_fail, n_stag, best_phi, best_size, degenerate


def _solve_one(fn, cset: Problem, method: AbstractMethod, rules: Rules, y_obs, x0):
    """One solve: init, one while loop to the end, final diagnostics."""
    carry = _init(fn, cset, method, rules, y_obs, x0)
    return _finish(fn, cset, y_obs, _run(fn, cset, method, rules, y_obs, carry,
                                          rules.max_iter))


@eqx.filter_jit
def _solve_jit(problem, method, rules, y_obs, x0):
    return _solve_one(problem.fn, problem, method, rules, y_obs, x0)


@eqx.filter_jit
def _solve_batch_jit(problem, method, rules, y_obs, x0):
    one = lambda y, x: _solve_one(problem.fn, problem, method, rules, y, x)
    return jax.vmap(one)(y_obs, x0)


@eqx.filter_jit
def _init_batch(problem, method, rules, y_obs, x0):
    return jax.vmap(lambda y, x: _init(problem.fn, problem, method, rules, y, x))(y_obs, x0)


@eqx.filter_jit
def _run_batch(problem, method, rules, y_obs, carry, until):
    run = lambda y, c: _run(problem.fn, problem, method, rules, y, c, until)
    return jax.vmap(run)(y_obs, carry)


@eqx.filter_jit
def _finish_batch(problem, y_obs, carry):
    return jax.vmap(lambda y, c: _finish(problem.fn, problem, y, c))(y_obs, carry)


@jax.jit
def _gather(tree, idx):
    return jax.tree.map(lambda a: a[idx], tree)


@jax.jit
def _scatter(tree, idx, sub):
    """``tree[idx] = sub[:len(idx)]`` leaf by leaf (sub may be padded)."""
    return jax.tree.map(lambda a, b: a.at[idx].set(b[: idx.size]), tree, sub)


def _solve_compacted(problem, method, rules, y_obs, x0, round_iters: int) -> Solution:
    """A batched solve that stops paying for finished members.

    A vmapped while loop runs every member until the slowest one stops. Here the loop
    runs in rounds of ``round_iters`` iterations; between rounds (a host sync, outside
    the jitted loop) the members still running are gathered into a smaller batch. Batch
    sizes are B, B/4, B/16, ... (at least 8), so at most ~log4(B) shapes compile. Each
    member's iterations are the same as in the one-loop solve.
    """
    carry = _init_batch(problem, method, rules, y_obs, x0)
    total = y_obs.shape[0]
    sizes = [total]
    while sizes[-1] > 8:
        sizes.append(max(8, -(-sizes[-1] // 4)))
    until = 0
    while until < rules.max_iter:
        stop, it = jax.device_get((carry.stop, carry.it))
        running = np.flatnonzero(~stop & (it < rules.max_iter))
        if running.size == 0:
            break
        until = min(until + round_iters, rules.max_iter)
        size = min(s for s in sizes if s >= running.size)
        take = np.concatenate([running, np.repeat(running[-1:], size - running.size)])
        sub = _run_batch(problem, method, rules, y_obs[take], _gather(carry, take),
                         jnp.asarray(until))
        carry = _scatter(carry, running, sub)
    return _finish_batch(problem, y_obs, carry)


def as_method(method: str | AbstractMethod) -> AbstractMethod:
    if isinstance(method, AbstractMethod):
        return method
    if method == "dipg":
        raise ValueError("method 'dipg' needs a learned inverse: use invphys.DIPG(inverse=g)")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (known: {', '.join(METHODS)}, or a "
                         "method object such as invphys.DIPG(inverse=g))")
    return METHODS[method]()


def solve(
    problem: Problem,
    y_obs: Float[Array, "... m"],
    x0: Float[Array, "... n"] | None = None,
    method: str | AbstractMethod = "gn",
    rules: Rules | None = None,
    *,
    shard: bool | jax.sharding.Sharding = False,
    compact: bool | int = False,
) -> Solution:
    """Recover x from observations ``y_obs`` under the shared protocol.

    ``method`` is ``"pg"``, ``"gn"``, ``"lm"`` or a method object (``invphys.DIPG(inverse=g)``,
    ``invphys.LevenbergMarquardt(...)``). ``x0`` defaults to the problem's fixed start;
    a start outside the constraint set is projected (``sol.x0_projected``).

    Batched solve: give ``y_obs`` a leading batch axis (``(B, m)``); ``x0`` may be one
    start (broadcast) or ``(B, n)``. The batch is one jitted, vmapped call; with
    ``shard=True`` it is split across all devices (``jax.sharding``; pass a Sharding to
    choose), which gives the same answers as the unsharded call.

    ``compact=True`` (or a round length in iterations; True = max_iter // 10, at least
    5) stops finished members of a batch from costing compute: the loop runs in rounds
    and the members still running are gathered into smaller batches between rounds
    (a few extra compiles, one host sync per round). Worth it when a few stragglers
    would otherwise run the whole batch to ``max_iter``; same answers per member.
    """
    rules = rules or Rules()
    method = as_method(method)
    y_obs = jnp.asarray(y_obs)
    check_finite("y_obs", y_obs)
    if y_obs.ndim == 0:
        raise ShapeError("y_obs must be an array of observations, got a scalar")
    if x0 is None:
        x0 = problem.start(y_obs.dtype if jnp.issubdtype(y_obs.dtype, jnp.floating) else None)
    x0 = jnp.asarray(x0, dtype=jnp.result_type(x0, y_obs, float))
    y_obs = y_obs.astype(x0.dtype)
    check_finite("x0", x0)
    n = problem.x_size or x0.shape[-1]
    if x0.shape[-1] != n or x0.ndim > 2:
        raise ShapeError(f"x0 has shape {x0.shape}, expected ({n},) or (batch, {n})")
    y_shape = jax.eval_shape(problem.fn, jax.ShapeDtypeStruct((n,), x0.dtype)).shape
    if len(y_shape) != 1:
        raise ShapeError(f"forward must return a vector, got shape {y_shape}")
    batched = y_obs.ndim == 2
    if y_obs.shape[-1] != y_shape[0] or y_obs.ndim > 2:
        raise ShapeError(f"y_obs has shape {y_obs.shape}, expected {y_shape} or "
                         f"(batch, {y_shape[0]})")
    if x0.ndim == 2 and not batched:
        raise ShapeError("x0 has a batch axis but y_obs does not")
    x0p = problem.project(x0)
    projected = bool(jnp.any(x0p != x0))
    if batched:
        x0p = jnp.broadcast_to(x0p, (y_obs.shape[0], n))
    _check_objective_finite(problem, y_obs, x0p, batched)
    if compact and not batched:
        raise ValueError("compact=True needs a batched solve (a leading batch axis on y_obs)")
    if compact and shard:
        raise ValueError("compact and shard cannot be combined yet")
    if batched and compact:
        rounds = max(5, rules.max_iter // 10) if compact is True else int(compact)
        if rounds < 1:
            raise ValueError(f"compact must be True or a positive round length, got {compact}")
        sol = _solve_compacted(problem, method, rules, y_obs, x0p, rounds)
    elif batched:
        if shard:
            y_obs, x0p, pad = _shard_batch(y_obs, x0p, shard)
            sol = _solve_batch_jit(problem, method, rules, y_obs, x0p)
            if pad:
                sol = jax.tree.map(lambda a: a[: a.shape[0] - pad], sol)
        else:
            sol = _solve_batch_jit(problem, method, rules, y_obs, x0p)
    else:
        sol = _solve_jit(problem, method, rules, y_obs, x0p)
    return dataclasses.replace(sol, x0_projected=True) if projected else sol


_objective_jit = eqx.filter_jit(_objective)
_objective_batch_jit = eqx.filter_jit(jax.vmap(_objective, in_axes=(None, 0, 0)))


def _check_objective_finite(problem, y_obs, x0, batched):
    # module-level jitted checks: a wrapper built per call would recompile every time
    phi = (_objective_batch_jit if batched else _objective_jit)(problem.fn, x0, y_obs)
    bad = ~np.isfinite(np.asarray(phi))
    if bad.any():
        where = f" (problem {int(np.argmax(bad))} of the batch)" if batched else ""
        raise NonFiniteError(f"the objective is not finite at x0{where}")


def _shard_batch(y_obs, x0, shard):
    """Place the batch axis across devices; pad the batch to a multiple of the count."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    if isinstance(shard, jax.sharding.Sharding):
        sharding = shard
        count = len(sharding.device_set)
    else:
        devices = np.array(jax.devices())
        sharding = NamedSharding(Mesh(devices, ("batch",)), PartitionSpec("batch"))
        count = devices.size
    pad = (-y_obs.shape[0]) % count
    if pad:
        y_obs = jnp.concatenate([y_obs, jnp.repeat(y_obs[-1:], pad, 0)])
        x0 = jnp.concatenate([x0, jnp.repeat(x0[-1:], pad, 0)])
    return jax.device_put(y_obs, sharding), jax.device_put(x0, sharding), pad
