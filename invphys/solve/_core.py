"""The traceable core: one ``lax.while_loop`` that every descent runs through.

Per iteration: the descent linearises (``prepare``); the search
(:class:`~invphys.solve.AbstractSearch`) picks the next iterate from the descent's
proposals; the descent updates its carried state; the termination
(:class:`~invphys.solve.AbstractTermination`) decides whether to stop. The history
(RMSE, accepted, alpha) goes into fixed-size arrays. No host syncs: it works under
``jax.jit``, ``jax.vmap`` and (through :func:`solve_core`, by implicit differentiation)
``jax.grad`` / ``jax.jvp``.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PyTree

from .._problem import project_box
from ._descents import AbstractDescent, Trial, active_set
from ._results import RESULTS
from ._rules import Rules
from ._search import objective
from ._termination import Iterate

__all__ = ["Box", "Solution", "solve_one"]


class Solution(eqx.Module):
    """The result of :func:`invphys.solve` (every array gains a leading axis in a batch).

    Attributes:
        x: the last iterate.
        steps: iterations taken.
        rmse: the residual RMSE sqrt(mean(r^2)) at x, in the units the solve ran in.
        converged: the RMSE reached the rules' target ``eps`` at some iteration
            (``stats["steps_to_eps"] >= 0``; ``reached_eps`` is the same). A *target*
            on the residual, in the solve's own output units (the CLI's normalised
            space), not a convergence certificate: it says nothing about why the loop
            stopped, and it can be True beside ``result == stalled`` (reached, then
            stopped on the stall rule) or False beside ``converged`` (a minimiser whose
            RMSE is above eps). Use ``result`` for why it stopped.
        result: why the loop stopped (:class:`RESULTS`): ``target_reached`` (eps with
            ``stop_at_eps``), ``converged`` / ``stalled`` / ``max_iterations`` under the
            paper's :class:`~invphys.solve.PaperStop`, or the certified codes of
            :class:`~invphys.solve.CertifiedStop` (see
            :class:`~invphys.LeastSquaresSolution`). ``stats["result"]`` holds its
            integer code.
        message: (property) ``RESULTS[result]``, the stop reason in a sentence.
        history: fixed-size arrays: ``rmse`` (max_iter + 1; NaN after the last
            iteration), ``accepted`` and ``alpha`` (max_iter).
        stats: nfev, njev, accepted, rejected, steps_to_eps, result.
        grad_inf: max-norm of the objective's gradient over the free components.
        active: components held at a bound (or pinned).
        x0_projected: the start was projected onto the bounds.
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

    @property
    def reached_eps(self) -> Bool[Array, "..."]:
        """The RMSE reached the target eps at some iteration (``converged``'s meaning,
        under the name the CLI's report.json uses)."""
        return self.converged


class Box(eqx.Module):
    """A constraint set: optional box bounds and pinned components (the part of a
    :class:`~invphys.Problem` the solver uses), as arrays a trace can carry."""

    lower: Float[Array, " n"] | None = None
    upper: Float[Array, " n"] | None = None
    pinned: Bool[Array, " n"] | None = None
    pin_value: float = eqx.field(static=True, default=0.0)

    @classmethod
    def of(cls, cset) -> Box:
        if cset is None:
            return cls()
        return cls(cset.lower, cset.upper, getattr(cset, "pinned", None),
                   getattr(cset, "pin_value", 0.0))

    @property
    def has_constraints(self) -> bool:
        return self.lower is not None or self.upper is not None or self.pinned is not None

    def project(self, x):
        return project_box(x, self.lower, self.upper, self.pinned, self.pin_value)


class Carry(eqx.Module):
    x: Array
    phi: Array
    rmse: Array
    it: Array
    stop: Array
    result: RESULTS
    steps_to_eps: Array
    descent_state: PyTree
    termination_state: PyTree
    hist_rmse: Array
    hist_acc: Array
    hist_alpha: Array
    nfev: Array
    njev: Array
    n_acc: Array
    n_rej: Array


def _typed(fn, dtype):
    return lambda x: fn(x).astype(dtype)  # a float32 solve stays float32


def init(fn, cset, method: AbstractDescent, rules: Rules, y_obs, x0) -> Carry:
    """The loop state at x0 (iteration 0)."""
    dtype = x0.dtype
    fn = _typed(fn, dtype)
    term = rules.termination
    n_it = rules.max_iter
    phi0 = objective(fn, x0, y_obs)
    rmse0 = jnp.sqrt(2.0 * phi0)
    reached0 = rmse0 <= term.eps
    stop = reached0 & term.stop_at_eps
    result = RESULTS.where(stop, RESULTS.target_reached, RESULTS.max_iterations)
    if term.stops_nonfinite_start:  # (the public wrappers raise if concrete)
        bad0 = ~jnp.isfinite(phi0)
        stop = bad0 | stop
        result = RESULTS.where(bad0, RESULTS.nonfinite, result)
    return Carry(
        x=x0, phi=phi0, rmse=rmse0, it=jnp.asarray(0), stop=stop, result=result,
        steps_to_eps=jnp.where(reached0, 0, -1),
        descent_state=method.init(fn, x0, y_obs),
        termination_state=term.init(x0, phi0),
        hist_rmse=jnp.full((n_it + 1,), jnp.nan, dtype).at[0].set(rmse0),
        hist_acc=jnp.zeros((n_it,), bool), hist_alpha=jnp.zeros((n_it,), dtype),
        nfev=jnp.asarray(1), njev=jnp.asarray(0), n_acc=jnp.asarray(0), n_rej=jnp.asarray(0),
    )


def run(fn, cset, method: AbstractDescent, rules: Rules, y_obs, carry: Carry, until) -> Carry:
    """Iterate from ``carry`` until a stop or iteration ``until`` (<= max_iter)."""
    fn = _typed(fn, carry.x.dtype)
    until = jnp.minimum(until, rules.max_iter)
    search, term = rules.search, rules.termination
    want_newton = search.needs_newton or term.needs_newton
    rho = rules.rho

    def cond(c: Carry):
        return (~c.stop) & (c.it < until)

    def body(c: Carry):
        lin, query = method.prepare(fn, c.x, y_obs, c.descent_state, cset)
        newton = method.newton(c.x, lin, query) if want_newton else None
        res = search.run(method, fn, c.x, y_obs, lin, query, cset, newton)
        ok = res.accepted
        # a rejection keeps x, so it keeps the carried objective (linearize's evaluation
        # of the same x may differ in the last bit)
        phi_new = jnp.where(ok, res.phi, c.phi)
        x_new = res.x
        dstate = method.update(c.descent_state, lin, query, ok, res.trial, x_new - c.x,
                               phi_new)
        it = c.it + 1
        rmse = jnp.sqrt(2.0 * phi_new)
        first_eps = (c.steps_to_eps < 0) & (rmse <= term.eps)
        steps_to_eps = jnp.where(first_eps, it, c.steps_to_eps)
        stop, code, tstate = term.check(c.termination_state, Iterate(
            x=c.x, lin=lin, newton=newton, search=res, x_new=x_new, phi_new=phi_new,
            rmse_old=c.rmse, rmse=rmse, cset=cset, fn=fn, y_obs=y_obs))
        probes = jnp.asarray(0)
        if term.reports_nonfinite_trials:
            # a stop without progress: did the search's trials meet a non-finite residual?
            # (the search keeps x on a rejection and says nothing about why)
            probe = stop & (code == RESULTS.no_progress)
            met = jax.lax.cond(
                probe, lambda: _trials_nonfinite(fn, cset, method, rho, y_obs, c.x, lin,
                                                 query, res, newton),
                lambda: jnp.asarray(False))
            code = RESULTS.where(met, RESULTS.nonfinite_trial, code)
            probes = jnp.where(probe, 2 if newton is None else 3, 0)
        reached = (steps_to_eps >= 0) & term.stop_at_eps
        return Carry(
            x=x_new, phi=phi_new, rmse=rmse, it=it, stop=reached | stop,
            result=RESULTS.where(reached, RESULTS.target_reached, code),
            steps_to_eps=steps_to_eps, descent_state=dstate, termination_state=tstate,
            hist_rmse=c.hist_rmse.at[it].set(rmse),
            hist_acc=c.hist_acc.at[c.it].set(ok),
            hist_alpha=c.hist_alpha.at[c.it].set(jnp.where(ok, res.trial.alpha, 0.0)),
            nfev=c.nfev + 1 + res.nfev + probes, njev=c.njev + 1,
            n_acc=c.n_acc + ok, n_rej=c.n_rej + (~ok),
        )

    return jax.lax.while_loop(cond, body, carry)


def _trials_nonfinite(fn, cset, method, rho, y_obs, x, lin, query, res, newton) -> Array:
    """Whether the steps the method proposes from x meet a non-finite objective: the
    search's first trial, its last rejected one, and the undamped (Gauss-Newton) step
    when the descent has one (three evaluations). A non-finite *proposal* is the descent
    refusing a trial (the search evaluates x then), not a non-finite residual."""
    alpha0 = res.trial.alpha * jnp.exp2(res.trial.index.astype(res.trial.alpha.dtype))
    last = jnp.where(res.accepted, jnp.maximum(res.trial.index - 1, 0), res.trial.index)
    alpha_last = alpha0 * jnp.exp2(-last.astype(alpha0.dtype))

    def phi_after(p):
        p = jnp.where(jnp.all(jnp.isfinite(p)), p, 0.0)
        x_t = cset.project(x + p)
        x_t = (1.0 - rho) * x + rho * x_t  # the search's relaxation (exact for rho = 1)
        return objective(fn, x_t, y_obs)

    steps = jax.vmap(lambda a, k: method.step(fn, x, y_obs, lin, query,
                                              Trial(alpha=a, index=k)))(
        jnp.stack([alpha0, alpha_last]), jnp.stack([0 * last, last]))
    if newton is not None:
        steps = jnp.concatenate([steps, newton.step[None]])
    return ~jnp.all(jnp.isfinite(jax.vmap(phi_after)(steps)))


def finish(fn, cset, y_obs, c: Carry) -> Solution:
    """The Solution at the loop's final state (diagnostics at the answer)."""
    dtype = c.x.dtype
    fn = _typed(fn, dtype)
    y, vjp = jax.vjp(fn, c.x)
    r = y - y_obs
    grad = vjp(r)[0] / r.size
    active = active_set(c.x, grad, cset, jnp.asarray(0.0, dtype)) if cset.has_constraints \
        else jnp.zeros(c.x.shape, bool)
    grad_inf = jnp.max(jnp.abs(jnp.where(active, 0.0, grad)))
    return Solution(
        x=c.x, steps=c.it, rmse=c.rmse, converged=c.steps_to_eps >= 0, result=c.result,
        history={"rmse": c.hist_rmse, "accepted": c.hist_acc, "alpha": c.hist_alpha},
        stats={"nfev": c.nfev + 1, "njev": c.njev + 1, "accepted": c.n_acc,
               "rejected": c.n_rej, "steps_to_eps": c.steps_to_eps,
               "result": c.result._value},
        grad_inf=grad_inf, active=active,
    )


def solve_one(fn, cset: Any, method: AbstractDescent, rules: Rules, y_obs, x0) -> Solution:
    """One problem, no checks, no jit of its own, no custom derivative: init, one
    ``lax.while_loop`` to the end, final diagnostics. ``fn`` is the forward map (one x
    -> one y), ``cset`` the constraint set (a :class:`~invphys.Problem` or :class:`Box`;
    None: unconstrained), ``x0`` one (feasible) start. Works under jit and vmap; for
    derivatives of the solution use :func:`solve_core`."""
    cset = Box() if cset is None else cset
    carry = init(fn, cset, method, rules, y_obs, x0)
    return finish(fn, cset, y_obs, run(fn, cset, method, rules, y_obs, carry, rules.max_iter))
