"""Searches: how a step is accepted. Every descent runs through the same ones.

* :class:`Backtracking`: trials alpha = alpha0, alpha0/2, ... (at most
  ``max_halvings + 1``): p = descent.step(trial), x+ = Proj(x + p), accepted on a finite
  p and the Armijo test, on the proposal (``armijo="proposal"``: Phi(x+) <= Phi(x) +
  c <G, p>, the paper's) or along the projection arc (``"step"``: Phi(x+) <= Phi(x) +
  c <G, x+ - x>, the test that makes projected Newton methods converge to KKT points).
  No acceptance: x stays.
* :class:`Relaxed` wraps a backtracking search with relaxation rho:
  x+ = (1 - rho) x + rho Proj(x + p), and the proposal test becomes c rho <G, p>.
* :class:`Polished` wraps any search with Gauss-Newton polishing under Deuflhard's
  natural monotonicity test (the certified endgame).
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ._descents import AbstractDescent, Linearisation, Newton, Trial

__all__ = ["AbstractSearch", "Backtracking", "Polished", "Relaxed", "SearchResult"]


class SearchResult(eqx.Module):
    accepted: Bool[Array, ""]
    trial: Trial  # the accepted trial, or the last one tried
    x: Float[Array, " n"]  # the next iterate (x itself when nothing was accepted)
    phi: Float[Array, ""]
    nfev: Int[Array, ""]  # objective evaluations spent
    floor: Bool[Array, ""]  # at the rounding floor (Polished only)


def objective(fn, x, y_obs):
    r = fn(x) - y_obs
    return 0.5 * jnp.mean(r**2)


class AbstractSearch(eqx.Module):
    """Decides the next iterate from a descent's proposals."""

    @property
    def needs_newton(self) -> bool:
        """Whether :meth:`run` uses the descent's undamped step."""
        return False

    @abc.abstractmethod
    def run(self, descent: AbstractDescent, fn, x, y_obs, lin: Linearisation, query,
            cset, newton: Newton | None) -> SearchResult:
        """One search from x along the descent's proposals (``newton``: the descent's
        undamped step when :attr:`needs_newton`, else None)."""


class Backtracking(AbstractSearch):
    """Halve alpha from ``alpha0`` until a trial passes Armijo (or trials run out).
    ``noise_tol`` > 0 tolerates a rise of that many ulps of Phi (the rounding of Phi near
    a solution is not a rejection)."""

    alpha0: float = 1.0
    max_halvings: int = eqx.field(static=True, default=8)
    armijo_c: float = 1e-4
    armijo: str = eqx.field(static=True, default="proposal")
    noise_tol: float = 0.0

    def __check_init__(self):
        if self.armijo not in ("proposal", "step"):
            raise ValueError(f"armijo must be 'proposal' or 'step', got {self.armijo!r}")
        if self.max_halvings < 0:
            raise ValueError("max_halvings must be >= 0")

    def run(self, descent, fn, x, y_obs, lin, query, cset, newton, rho=None):
        dtype = x.dtype

        def trial(k):
            alpha = jnp.asarray(self.alpha0, dtype) * jnp.asarray(0.5, dtype) ** k
            p = descent.step(fn, x, y_obs, lin, query, Trial(alpha=alpha, index=k))
            finite_p = jnp.all(jnp.isfinite(p))
            p = jnp.where(finite_p, p, 0.0)
            x_t = cset.project(x + p)
            x_new = x_t if rho is None else (1.0 - rho) * x + rho * x_t
            phi_new = objective(fn, x_new, y_obs)
            if self.armijo == "proposal":
                c = self.armijo_c if rho is None else self.armijo_c * rho
                bound = lin.phi + c * jnp.vdot(lin.grad, p)
            else:
                bound = lin.phi + self.armijo_c * jnp.vdot(lin.grad, x_new - x)
            if not (isinstance(self.noise_tol, float | int) and self.noise_tol == 0):
                bound = bound + self.noise_tol * jnp.finfo(dtype).eps * jnp.abs(lin.phi)
            ok = finite_p & jnp.isfinite(phi_new) & (phi_new <= bound)
            return ok, alpha, x_new, phi_new

        def cond(c):
            k, ok = c[0], c[1]
            return (~ok) & (k <= self.max_halvings)

        def body(c):
            k = c[0]
            ok, alpha, x_new, phi_new = trial(k)
            return k + 1, ok, alpha, x_new, phi_new

        init = (jnp.asarray(0), jnp.asarray(False), jnp.asarray(self.alpha0, dtype), x,
                lin.phi)
        ntrials, ok, alpha, x_new, phi_new = jax.lax.while_loop(cond, body, init)
        x_new = jnp.where(ok, x_new, x)
        phi_new = jnp.where(ok, phi_new, lin.phi)
        return SearchResult(accepted=ok, trial=Trial(alpha=alpha, index=ntrials - 1),
                            x=x_new, phi=phi_new, nfev=ntrials, floor=jnp.asarray(False))


class Relaxed(AbstractSearch):
    """Relaxation x+ = (1 - rho) x + rho Proj(x + p) around a :class:`Backtracking`
    search (the paper's rho = 0.4)."""

    search: Backtracking
    rho: float = 0.4

    def run(self, descent, fn, x, y_obs, lin, query, cset, newton):
        return self.search.run(descent, fn, x, y_obs, lin, query, cset, newton,
                                   rho=self.rho)


class Polished(AbstractSearch):
    """Gauss-Newton polishing around any search (the certified endgame).

    Once the descent's Gauss-Newton step is below ``polish`` |x| (scaled norms), the
    plain GN step is tried first and accepted by Deuflhard's natural monotonicity test:
    the simplified GN correction J_k^+ r(x+) must be shorter than J_k^+ r(x_k). Near a
    solution the change of Phi is often below its rounding (|r| << |y|), so a cost test
    rejects good steps at random; this affine-invariant test does not, and it refuses GN
    where GN does not converge (large residuals). A refused step at a GN step already
    below sqrt(eps) |x| is the rounding floor (``floor``); otherwise the wrapped search
    runs. A descent without a GN solve (no :meth:`~AbstractDescent.newton`) just runs
    the wrapped search.
    """

    search: AbstractSearch
    polish: float = 1e-6

    @property
    def needs_newton(self) -> bool:
        return True

    def run(self, descent, fn, x, y_obs, lin, query, cset, newton):
        dtype = x.dtype
        no = jnp.asarray(False)

        def searched():
            return self.search.run(descent, fn, x, y_obs, lin, query, cset, newton)

        if newton is None or newton.solve is None or self.polish <= 0:
            return searched()
        gn, scale = newton.step, newton.scale
        size = jnp.linalg.norm(scale * gn)
        xsize = jnp.linalg.norm(scale * x)
        eligible = jnp.all(jnp.isfinite(gn)) & (size <= self.polish * xsize)

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
            return SearchResult(accepted=good,
                                trial=Trial(alpha=jnp.asarray(1.0, dtype),
                                            index=jnp.asarray(0)),
                                x=jnp.where(good, x_gn, x), phi=jnp.where(good, phi_gn, lin.phi),
                                nfev=jnp.asarray(1), floor=floor)

        def other():
            res = searched()
            return eqx.tree_at(lambda r: (r.nfev, r.floor), res,
                               (res.nfev + eligible, floor))

        return jax.lax.cond(good | floor, taken, other)
