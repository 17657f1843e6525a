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
from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

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


class AbstractTermination(eqx.Module):
    """Stopping rules: :meth:`init` the typed state at x0, :meth:`check` after each
    iteration -> (stop, result code, state)."""

    eps: eqx.AbstractVar[float]
    stop_at_eps: eqx.AbstractVar[bool]
    #: whether :meth:`check` reads ``Iterate.newton``
    needs_newton: ClassVar[bool] = False
    #: whether a non-finite objective at x0 stops at once (``RESULTS.nonfinite``)
    stops_nonfinite_start: ClassVar[bool] = False

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


class CertifiedStop(AbstractTermination):
    """The certified stopping rules, tested at the iterate x_k the iteration started
    from; an accepted step is taken before stopping.

    Success: the GN step is below rtol |x| + atol (``step_converged``); the projected
    gradient (of the cost 1/2 |r|^2) is <= gtol; the residual fell below eps |r_0|
    (``zero_residual``); the rounding floor (a :class:`Polished` search), or
    ``stagnation`` iterations without a cost decrease beyond ``max(noise_tol, 4)`` ulps
    nor a halving of the GN step, or ``max_rejections`` failed searches in a row, at a
    point whose Jacobian columns are orthogonal to the residual to eps^(1/3)
    (``precision_limit``). The same ends elsewhere are failures (``no_progress``), and
    any success at a point where a free parameter no longer affects the residual is
    reported as ``degenerate``. A non-finite start stops at once (``nonfinite``).
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
        progress = (phi_new < c.best_phi * (1.0 - max(self.noise_tol, 4.0) * eps)) \
            | (size < 0.5 * c.best_size)
        n_stag = jnp.where(progress, 0, c.n_stag + 1)
        stagnant = n_stag >= self.stagnation
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
        state = CertifiedState(
            n_fail=n_fail, n_stag=n_stag,
            best_phi=jnp.where(progress, jnp.minimum(c.best_phi, phi_new), c.best_phi),
            best_size=jnp.where(progress & finite, jnp.minimum(c.best_size, size), c.best_size),
            phi0=c.phi0)
        return success | ended | bad, code, state

