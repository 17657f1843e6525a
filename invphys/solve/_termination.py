"""Terminations: when a solve stops, and why. Every descent runs through the same ones.

Both record the target ``eps`` on the residual RMSE (``steps_to_eps``) and stop there
when ``stop_at_eps``; the core handles that part, and the iteration limit.

* :class:`PaperStop`: the Deceptron paper's rule: a stall (the RMSE changed by less
  than ``stall_tol`` for ``stall_patience`` iterations), plus optional tolerances on
  the projected gradient (``gtol``), the relative step (``xtol``) and the relative
  actual cost reduction (``ftol``), all off by default.
* :class:`CertifiedStop`: the certified endgame of :func:`invphys.least_squares`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ._descents import Linearisation, Newton
from ._results import RESULTS
from ._search import SearchResult

__all__ = ["AbstractTermination", "CertifiedStop", "Iterate", "PaperStop"]


class Iterate(eqx.Module):
    """One finished iteration, as a termination sees it."""

    x: Float[Array, " n"]  # the iterate the iteration started from
    lin: Linearisation  # at x
    newton: Newton | None  # the descent's undamped step at x (when needed)
    search: SearchResult
    x_new: Float[Array, " n"]
    phi_new: Float[Array, ""]  # the carried objective at x_new
    rmse_old: Float[Array, ""]
    rmse: Float[Array, ""]
    cset: Any  # the problem (bounds, pins, project)
    fn: Callable | None = None  # the forward map (for second-order tests), as the core runs it
    y_obs: Array | None = None


class AbstractTermination(eqx.Module):
    """Stopping rules: :meth:`init` the typed state at x0, :meth:`check` after each
    iteration -> (stop, result code, state)."""

    eps: eqx.AbstractVar[float]
    stop_at_eps: eqx.AbstractVar[bool]
    #: whether :meth:`check` reads ``Iterate.newton``
    needs_newton: ClassVar[bool] = False
    #: whether a non-finite objective at x0 stops at once (``RESULTS.nonfinite``)
    stops_nonfinite_start: ClassVar[bool] = False
    #: whether the core turns a ``no_progress`` stop whose trial points met a non-finite
    #: objective into ``RESULTS.nonfinite_trial`` (up to three evaluations, once, at the end)
    reports_nonfinite_trials: ClassVar[bool] = False

    @abc.abstractmethod
    def init(self, x0: Array, phi0: Array) -> Any:
        ...

    @abc.abstractmethod
    def check(self, state: Any, it: Iterate) -> tuple[Array, RESULTS, Any]:
        ...


class PaperState(eqx.Module):
    stall: Int[Array, ""]  # consecutive iterations whose RMSE changed < stall_tol


class PaperStop(AbstractTermination):
    """The paper's stop: stall, target eps (``stop_at_eps``), optional tolerances."""

    eps: float = 0.30
    stall_tol: float = 1e-4
    stall_patience: int = 20
    stop_at_eps: bool = eqx.field(static=True, default=False)
    gtol: float = 0.0
    xtol: float = 0.0
    ftol: float = 0.0

    def init(self, x0, phi0):
        return PaperState(stall=jnp.asarray(0))

    def check(self, state, it):
        s, lin, cset = it.search, it.lin, it.cset
        ok, x_new, phi_new = s.accepted, it.x_new, it.phi_new
        step = x_new - it.x
        stall = jnp.where(jnp.abs(it.rmse - it.rmse_old) < self.stall_tol, state.stall + 1, 0)
        pg = jnp.max(jnp.abs(cset.project(x_new - lin.grad) - x_new)) if cset.has_constraints \
            else jnp.max(jnp.abs(lin.grad))
        small_step = ok & (jnp.linalg.norm(step) <= self.xtol * (self.xtol
                                                                  + jnp.linalg.norm(x_new)))
        small_f = ok & (lin.phi - phi_new <= self.ftol * lin.phi)
        converged = (pg <= self.gtol) | small_step | small_f
        stalled = stall >= self.stall_patience
        result = RESULTS.where(converged, RESULTS.converged,
                               RESULTS.where(stalled, RESULTS.stalled, RESULTS.max_iterations))
        return converged | stalled, result, PaperState(stall=stall)


class CertifiedState(eqx.Module):
    n_fail: Int[Array, ""]  # consecutive failed searches
    n_stag: Int[Array, ""]  # consecutive iterations without progress
    best_phi: Float[Array, ""]
    best_size: Float[Array, ""]  # the shortest (scaled) Gauss-Newton step so far
    phi0: Float[Array, ""]  # the objective at the start


class _SecondOrder(eqx.Module):
    """What the cost's curvature says at x (see :func:`second_order`)."""

    level: Bool[Array, ""]  # the quadratic model on span{gradient, GN step} cannot fall
    # by more than rounding
    holds: Bool[Array, ""]  # ... and that model holds over the step to its minimiser
    gn_refines: Bool[Array, ""]  # the GN step is a contracting Newton-like step
    curved: Bool[Array, ""]  # the cost curves up along the collapsed Jacobian columns


def _at_bound(x, cset):
    """Components held by the constraint set: on a bound or pinned."""
    held = jnp.zeros(x.shape, bool)
    lower, upper = getattr(cset, "lower", None), getattr(cset, "upper", None)
    pinned = getattr(cset, "pinned", None)
    if lower is not None:
        held = held | (x <= lower)
    if upper is not None:
        held = held | (x >= upper)
    if pinned is not None:
        held = held | pinned
    return held


def cost_along(fn: Callable, y_obs: Array, r: Float[Array, " m"], x: Float[Array, " n"],
               s: Float[Array, " n"]) -> tuple[Array, Array, Array, Array]:
    """The first three derivatives of the cost f(t) = 1/2 |fn(x + t s) - y_obs|^2 at
    t = 0, and the rounding scale of the second (|r_s|^2 + |r| . |r_ss|), by nested JVPs
    (forward mode only)."""

    def h(t):
        return fn(x + t * s) - y_obs

    def h1(t):
        return jax.jvp(h, (t,), (jnp.ones_like(t),))[1]

    def h2(t):
        return jax.jvp(h1, (t,), (jnp.ones_like(t),))[1]

    t0 = jnp.zeros((), x.dtype)
    r_s = h1(t0)
    r_ss, r_sss = jax.jvp(h2, (t0,), (jnp.ones_like(t0),))
    f2 = jnp.vdot(r_s, r_s) + jnp.vdot(r, r_ss)
    f3 = 3.0 * jnp.vdot(r_s, r_ss) + jnp.vdot(r, r_sss)
    return jnp.vdot(r, r_s), f2, f3, jnp.vdot(r_s, r_s) + jnp.abs(r) @ jnp.abs(r_ss)


#: How much the cost's curvature may change over the step its quadratic model predicts
#: for that model to certify a minimiser. For f = f* + a t^p (a minimum of order p) the
#: Newton step is s = -t / (p - 1) and |f3 s| / f2 = (p - 2) / (p - 1) < 1 (0 for a
#: quadratic, 2/3 for a quartic valley); on a plateau (a minimum at infinity) the step is
#: the curvature's own decay length: |f3 s| / f2 >= 1 for any positive sum of decaying
#: exponentials (by Cauchy-Schwarz), 3/2 for 1/t. 0.9 accepts minima up to order 10.
MODEL_CHANGE = 0.9


def _model_holds(f2, f3, tau):
    """The 1D model f + f1 t + f2 t^2 / 2 holds over t in [0, tau]: its curvature is
    non-negative and changes by at most MODEL_CHANGE of itself there."""
    return (f2 >= 0) & (jnp.abs(f3 * tau) <= MODEL_CHANGE * f2)


def _decrease_1d(b, a):
    """The most a quadratic with slope b and curvature a can fall, b^2 / 2a, and the step
    to its minimiser (inf and 0 where it is unbounded below; 0 and 0 where flat)."""
    safe = jnp.where(a > 0, a, 1.0)
    dec = jnp.where(a > 0, b**2 / (2.0 * safe), jnp.where(b == 0, 0.0, jnp.inf))
    return dec, jnp.where(a > 0, -b / safe, 0.0)


def second_order(fn, y_obs, x, lin, u, d, d_len, w, noise) -> _SecondOrder:
    """The second-order tests at x (directions of unit scaled length, or zero).

    ``u`` is the scaled steepest-descent direction, ``d`` the GN direction (the GN step
    is ``d_len * d``), ``w`` the direction of the collapsed Jacobian columns, ``noise``
    the cost decrease rounding hides (``c eps |r|^2 / 2``). One vmapped nested JVP gives
    the cost's first three derivatives along u, d, u + d and w; with A the cost's
    Hessian on span{u, d} and b its slope (J^T r . v):

    * level: the quadratic model on span{u, d} (on u or d alone where the 2x2 block is
      not safely positive definite) cannot fall by more than ``noise``;
    * holds: along u and d the 1D model holds over the step to its minimiser (the third
      derivative changes the curvature by at most ``MODEL_CHANGE`` of itself). Level and
      holding: a minimiser to working precision; level but not holding: a plateau,
      where the cost still falls (slower and slower) beyond the model's minimiser;
    * gn_refines: along d the model's minimiser lies beyond half the GN step (GN's
      curvature J^T J is within a factor 2 of the true one there, so the GN iteration
      contracts and polishing can refine x below the cost's resolution);
    * curved: along w the cost curves up beyond the rounding of its curvature, x sits
      at the bottom of that curve to ``noise``, and the model holds: the collapsed
      parameters still matter, at second order (r = x^2 + 1 at 0: f2 = 2, f3 = 0), which
      a plateau's do not (the curvature dies with the column: |f3 s| ~ f2).
    """
    eps = jnp.finfo(x.dtype).eps
    S = jnp.stack([u, d, u + d, w])
    f1, f2, f3, f2_scale = jax.vmap(lambda s: cost_along(fn, y_obs, lin.r, x, s))(S)
    a00, a11 = f2[0], f2[1]
    a01 = 0.5 * (f2[2] - f2[0] - f2[1])
    b0, b1 = f1[0], f1[1]  # J^T r along u and d
    (dec_u, t_u), (dec_d, t_d) = _decrease_1d(b0, a00), _decrease_1d(b1, a11)
    det = a00 * a11 - a01**2
    pd = (a00 > 0) & (a11 > 0) & (det > jnp.sqrt(eps) * a00 * a11)
    dec_2 = 0.5 * (a11 * b0**2 - 2.0 * a01 * b0 * b1 + a00 * b1**2) / jnp.where(pd, det, 1.0)
    dec = jnp.maximum(jnp.maximum(dec_u, dec_d), jnp.where(pd, dec_2, 0.0))
    holds = _model_holds(a00, f3[0], jnp.abs(t_u)) & _model_holds(a11, f3[1], jnp.abs(t_d))
    t_gn = t_d / jnp.where(d_len > 0, d_len, 1.0)  # in units of the GN step
    gn_refines = (d_len > 0) & (a11 > 0) & (t_gn > 0.5)
    # along w
    rel = noise / jnp.maximum(jnp.vdot(lin.r, lin.r) / 2.0, jnp.finfo(x.dtype).tiny)  # c eps
    up = (f2[3] > rel * f2_scale[3]) & jnp.any(w != 0)
    safe = jnp.where(up, f2[3], 1.0)
    curved = up & (f1[3] ** 2 <= 2.0 * noise * safe) \
        & _model_holds(f2[3], f3[3], jnp.abs(f1[3]) / safe)
    return _SecondOrder(level=dec <= noise, holds=holds, gn_refines=gn_refines,  # NaN: False
                        curved=curved)


def _unit(v, scale):
    n = jnp.linalg.norm(scale * v)
    return v / jnp.where(n > 0, n, 1.0), n


class CertifiedStop(AbstractTermination):
    """The certified stopping rules, tested at the iterate x_k the iteration started
    from; an accepted step is taken before stopping.

    Success:

    * ``step_converged``: the GN step is below rtol |x| + atol;
    * ``gradient_converged``: the projected gradient (of the cost 1/2 |r|^2) is <= gtol;
    * ``zero_residual``: the residual fell below eps |r_0|;
    * ``precision_limit``: the rounding floor of GN polishing (a :class:`Polished`
      search), or ``stagnation`` iterations without a cost decrease beyond
      ``max(noise_tol, 4)`` ulps nor a halving of the GN step, or ``max_rejections``
      failed searches in a row, at a point whose Jacobian columns are orthogonal to the
      residual to eps^(1/3);
    * ``cost_converged``: a minimum to working precision that the first-order tests
      cannot see (a vanishing Jacobian at a non-zero residual, where |J^T r| = |J| |r|
      for a single residual and every cosine test fails). The cost's Hessian H (with
      the second-order term sum r_i H_i) on span{gradient, GN step} says no step there
      lowers the cost by more than ``c eps |r|^2 / 2`` (c = ``max(noise_tol, 4)``: the
      rounding the search and the progress test already allow for the cost), at an
      iteration without progress, where GN is not contracting (so only the cost can
      certify x: to about sqrt(eps), which is all a flat minimum allows) or after the
      stagnation / rejection limit. Why second order: at such a minimiser x* the cost
      is f* + H dx^2 / 2, so the best computed x has |dx| ~ sqrt(2 c eps f* / H) and a
      gradient H dx ~ sqrt(2 c eps f* H) that no c eps |J| |r| bound explains.

    The same ends elsewhere are failures: ``no_progress`` (the core turns it into
    ``nonfinite_trial`` when the trials met a non-finite residual). A success at a point
    where a free Jacobian column collapsed (below sqrt(eps) of its largest on the path)
    and the cost does not curve up along it (H_ii <= sqrt(eps) D_i^2, or x is not at the
    bottom of that curve) is ``degenerate``: a plateau or a minimum at infinity, where
    the cost's curvature dies with the column; at a minimiser with a vanishing Jacobian
    it does not (r = x^2 + 1: H = 2 at x = 0). A non-finite start stops at once
    (``nonfinite``).
    """

    rtol: float = 1e-10
    atol: float = 0.0
    gtol: float = 0.0
    stagnation: int = eqx.field(static=True, default=10)
    max_rejections: int = eqx.field(static=True, default=12)
    noise_tol: float = 16.0
    eps: float = 0.0
    stop_at_eps: bool = eqx.field(static=True, default=False)
    needs_newton: ClassVar[bool] = True
    stops_nonfinite_start: ClassVar[bool] = True
    reports_nonfinite_trials: ClassVar[bool] = True

    def init(self, x0, phi0):
        return CertifiedState(n_fail=jnp.asarray(0), n_stag=jnp.asarray(0), best_phi=phi0,
                              best_size=jnp.asarray(jnp.inf, x0.dtype), phi0=phi0)

    def check(self, c, it):
        x, lin, newton, cset = it.x, it.lin, it.newton, it.cset
        ok, phi_new, floor = it.search.accepted, it.phi_new, it.search.floor
        dtype = x.dtype
        eps = jnp.finfo(dtype).eps
        if newton is None:  # no undamped step known: test the step taken
            gn, scale, colnorm = it.x_new - x, jnp.ones_like(x), jnp.ones_like(x)
            degenerate = jnp.asarray(False)
        else:
            gn, scale, colnorm = newton.step, newton.scale, newton.colnorm
            degenerate = newton.degenerate
        finite = jnp.all(jnp.isfinite(gn))
        size = jnp.linalg.norm(scale * gn)
        small_x = finite & jnp.all(jnp.abs(gn) <= self.rtol * jnp.abs(x) + self.atol)
        free_g = cset.project(x - lin.grad) - x if cset.has_constraints else -lin.grad
        m = lin.r.size
        small_g = jnp.max(jnp.abs(free_g)) * m <= self.gtol  # cost gradient J^T r
        # the cosine between each (free) Jacobian column and the residual
        rnorm = jnp.sqrt(2.0 * m * lin.phi)
        cosine = jnp.max(jnp.abs(free_g) * m / jnp.maximum(colnorm * rnorm,
                                                           jnp.finfo(dtype).tiny))
        # stationary to what a flat cost allows: at singular or large-residual minima the
        # cosine stalls near sqrt(eps); eps^(1/3) still separates them from a crawl
        stationary = cosine <= eps ** (1.0 / 3.0)
        zero_r = phi_new <= (eps**2) * c.phi0
        n_fail = jnp.where(ok, 0, c.n_fail + 1)
        stuck = n_fail >= self.max_rejections
        # progress against the reference point of the last progress (so that many small
        # decreases add up): the cost fell beyond its rounding, or the GN step halved
        noise = max(self.noise_tol, 4.0) * eps
        progress = (phi_new < c.best_phi * (1.0 - noise)) | (size < 0.5 * c.best_size)
        n_stag = jnp.where(progress, 0, c.n_stag + 1)
        stagnant = n_stag >= self.stagnation
        ended = stuck | stagnant
        bad = ~jnp.isfinite(phi_new)
        first = zero_r | small_x | small_g | floor | (ended & stationary)
        # second order, where it can decide something: no progress this iteration, the
        # end, or a first-order success at a collapsed column
        no = jnp.asarray(False)
        none = _SecondOrder(level=no, holds=no, gn_refines=no, curved=no)
        if it.fn is None:
            so = none
        else:
            held = _at_bound(x, cset)
            u, _ = _unit(jnp.where(held, 0.0, free_g) / scale**2, scale)
            d, d_len = _unit(jnp.where(finite, gn, 0.0), scale)
            collapsed = ~held & (colnorm <= jnp.sqrt(eps) * scale)
            w, _ = _unit(jnp.where(collapsed, 1.0 / scale, 0.0), scale)
            noise_f = noise * m * lin.phi  # the cost decrease rounding hides: c eps |r|^2/2
            so = jax.lax.cond(
                ~progress | ended | (first & degenerate & ~zero_r),
                lambda: second_order(it.fn, it.y_obs, x, lin, u, d, d_len, w, noise_f),
                lambda: none)
        # at the cost's rounding floor where GN cannot refine x further (or at the end):
        # a minimiser where the quadratic model holds, a plateau where it does not
        at_floor = so.level & (ended | ~so.gn_refines) & ~first
        cost_ok = at_floor & so.holds
        plateau = at_floor & ~so.holds
        success = first | cost_ok
        curved = so.curved
        fail_code = RESULTS.where(ended, RESULTS.no_progress, RESULTS.max_iterations)
        code = RESULTS.where(
            zero_r, RESULTS.zero_residual,
            RESULTS.where(small_x, RESULTS.step_converged,
                          RESULTS.where(small_g, RESULTS.gradient_converged,
                                        RESULTS.where(first, RESULTS.precision_limit,
                                                      RESULTS.where(cost_ok,
                                                                    RESULTS.cost_converged,
                                                                    fail_code)))))
        # a converged point where a free parameter stopped mattering (its column collapsed
        # and the cost does not curve up along it) is not a certified one
        code = RESULTS.where((success & ~zero_r & degenerate & ~curved) | plateau,
                             RESULTS.degenerate, code)
        code = RESULTS.where(bad, RESULTS.nonfinite, code)
        state = CertifiedState(
            n_fail=n_fail, n_stag=n_stag,
            best_phi=jnp.where(progress, jnp.minimum(c.best_phi, phi_new), c.best_phi),
            best_size=jnp.where(progress & finite, jnp.minimum(c.best_size, size), c.best_size),
            phi0=c.phi0)
        return success | plateau | ended | bad, code, state
