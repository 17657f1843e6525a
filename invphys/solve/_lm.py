"""Levenberg-Marquardt: an SVD descent and a CG descent sharing one damping update.

* :class:`Damping`: Nielsen's update from the gain ratio (actual / predicted decrease);
  ``production=True`` makes it rounding-aware (a predicted decrease below 16 ulps of
  Phi is noise: gain 1, and the prediction is computed without cancellation) and makes
  trial k raise the damping by 2^(k(k+1)/2) (Nielsen's doubling factor) instead of 2^k.
* Bounds: a projected-Newton active-set step in the style of Bertsekas (1982).
  Components within the epsilon-active width of a bound, with the gradient pushing
  outward, take a scaled gradient step (which the projection holds at the bound); the
  rest take the damped GN step of the reduced problem. With Armijo along the projection
  arc (``Backtracking(armijo="step")``) this converges to a KKT point.
* :class:`LevenbergMarquardtSVD` forms J (n JVPs) with Moré's column scaling D and takes
  its SVD once per iteration; each search trial *raises the damping* instead of
  shortening the step (the Levenberg-Marquardt curve at the cost of one small matvec).
  :class:`LevenbergMarquardtCG` is matrix-free (any lineax solver, an optional
  preconditioner) with p = alpha dx, for large n.
* :class:`LevenbergMarquardt` is the old one-class front end: it picks one of the two.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Bool, Float

from ._descents import (
    AbstractDescent,
    AbstractPreconditioner,
    Newton,
    active_set,
    jvp_linearisation,
    linearisation,
    normal_solve,
)

__all__ = ["Damping", "LevenbergMarquardt", "LevenbergMarquardtCG", "LevenbergMarquardtSVD"]


class LMState(eqx.Module):
    damping: Float[Array, ""]
    scale: Float[Array, " n"]  # Moré's column scaling D (running max of column norms)


class SVDQuery(eqx.Module):
    damping: Float[Array, ""]
    scale: Float[Array, " n"]
    active: Bool[Array, " n"]
    hdiag: Float[Array, " n"]  # ||J_i||^2: curvature along each coordinate
    u_r: Float[Array, " k"]
    u_t: Float[Array, "k m"]
    s: Float[Array, " k"]
    vt: Float[Array, "k n"]


class CGQuery(eqx.Module):
    damping: Float[Array, ""]
    active: Bool[Array, " n"]
    dx: Float[Array, " n"]  # the step at the current damping


class Damping(eqx.Module):
    """The damping update both LM descents share (see the module docstring)."""

    damping0: float = 1e-3
    min_damping: float = 1e-20
    max_damping: float = 1e20
    production: bool = eqx.field(static=True, default=False)

    def trial_factor(self, trial):
        """The factor trial k = ``trial.index`` raises the damping by: 2^k, or Nielsen's
        2^(k(k+1)/2) in production (independent of the search's alpha0)."""
        k = trial.index
        if not self.production:
            return jnp.ldexp(jnp.ones((), trial.alpha.dtype), k)
        k = k.astype(trial.alpha.dtype)
        return jnp.exp2(0.5 * k * (k + 1.0))

    def init(self, x):
        return LMState(damping=jnp.asarray(self.damping0, x.dtype),
                       scale=jnp.zeros(x.shape, x.dtype))

    def update(self, state, lin, mu, accepted, step, phi_new, scale):
        """The next damping from the gain ratio of the step taken at damping ``mu``."""
        jp = lin.jac.mv(step)
        if self.production:
            pred = -jnp.mean(lin.r * jp) - 0.5 * jnp.mean(jp**2)  # no cancellation
        else:
            pred = lin.phi - 0.5 * jnp.mean((lin.r + jp) ** 2)
        gain = (lin.phi - phi_new) / jnp.where(pred > 0, pred, jnp.inf)
        if self.production:
            noise = 16.0 * jnp.finfo(lin.phi.dtype).eps * lin.phi
            gain = jnp.where(pred <= noise, 1.0, gain)
        good = jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * gain - 1.0) ** 3)
        new = jnp.where(accepted, mu * good, 2.0 * mu)
        new = jnp.clip(new, self.min_damping, self.max_damping)
        return LMState(damping=new, scale=scale)


def _free_gap(x, lin, cset, width):
    proj_gap = jnp.max(jnp.abs(cset.project(x - lin.grad) - x)) if cset is not None \
        else jnp.asarray(0.0, x.dtype)
    return active_set(x, lin.grad, cset, jnp.minimum(width, proj_gap))


class LevenbergMarquardtSVD(AbstractDescent):
    """LM by an SVD of the scaled, active-masked Jacobian (n JVPs per iteration); trials
    trace the LM curve (damping x :meth:`Damping.trial_factor`). ``geodesic`` > 0 adds
    Transtrum & Sethna's geodesic acceleration with acceptance 2|a|/|v| <= ``geodesic``;
    ``strict_geodesic`` makes a refused correction a rejected trial (NaN proposal)."""

    damping: Damping = Damping()
    active_width: float = 1e-3
    geodesic: float = eqx.field(static=True, default=0.0)
    strict_geodesic: bool = eqx.field(static=True, default=False)

    def init(self, fn, x, y_obs):
        return self.damping.init(x)

    def prepare(self, fn, x, y_obs, state, cset):
        y, jvp = jax.linearize(fn, x)
        jac = lx.FunctionLinearOperator(jvp, jax.ShapeDtypeStruct(x.shape, x.dtype))
        J = jax.vmap(jvp, out_axes=1)(jnp.eye(x.size, dtype=x.dtype))  # (m, n)
        # J^T r from the formed Jacobian: no VJP through the simulator
        lin = linearisation(y, y_obs, lambda r: J.T @ r, jac)
        active = _free_gap(x, lin, cset, self.active_width)
        col = jnp.sqrt(jnp.sum(J**2, axis=0))
        scale = jnp.maximum(state.scale, col)
        scale = jnp.where(scale > 0, scale, 1.0)
        Js = jnp.where(~active, J / scale, 0.0)
        U, s, vt = jnp.linalg.svd(Js, full_matrices=False)
        return lin, SVDQuery(damping=state.damping, scale=scale, active=active, hdiag=col**2,
                             u_r=U.T @ lin.r, u_t=U.T, s=s, vt=vt)

    def step(self, fn, x, y_obs, lin, q, trial):
        mu = q.damping * self.damping.trial_factor(trial)
        filt = q.s / (q.s**2 + mu)
        dz = -(q.vt.T @ (filt * q.u_r))
        g_sum = lin.grad * lin.r.size
        dx_active = -g_sum / (q.hdiag + mu * q.scale**2 + jnp.finfo(x.dtype).tiny)
        v = jnp.where(q.active, dx_active, dz / q.scale)
        if self.geodesic <= 0:
            return v
        # geodesic acceleration (Transtrum & Sethna 2012): the second directional
        # derivative r_vv of the residual along v corrects the step for the curvature
        # of the model manifold; a = -(J^T J + mu D^2)^-1 J^T r_vv by the same SVD.
        vf = jnp.where(q.active, 0.0, v)
        rvv = jax.jvp(lambda z: jax.jvp(fn, (z,), (vf,))[1], (x,), (vf,))[1]
        da = -(q.vt.T @ (filt * (q.u_t @ rvv)))
        tiny = jnp.finfo(x.dtype).tiny
        ratio = 2.0 * jnp.linalg.norm(da) / jnp.maximum(jnp.linalg.norm(dz), tiny)
        ok = jnp.all(jnp.isfinite(da)) & (ratio <= self.geodesic)
        acc = jnp.where(q.active, 0.0, 0.5 * da / q.scale)
        if self.strict_geodesic:  # a refused correction is a rejected trial
            return jnp.where(ok, v + acc, jnp.nan)
        return jnp.where(ok, v + acc, v)

    def update(self, state, lin, q, accepted, trial, step, phi_new):
        mu = state.damping * self.damping.trial_factor(trial)
        return self.damping.update(state, lin, mu, accepted, step, phi_new, q.scale)

    def newton(self, x, lin, q):
        eps = jnp.finfo(x.dtype).eps
        rcond = max(lin.r.size, x.size) * eps
        s_inv = jnp.where(q.s > rcond * q.s[0], 1.0 / jnp.where(q.s > 0, q.s, 1.0), 0.0)

        def solve(r):
            dz = -(q.vt.T @ (s_inv * (q.u_t @ r)))
            return jnp.where(q.active, 0.0, dz / q.scale)

        dz = -(q.vt.T @ (s_inv * q.u_r))
        step = jnp.where(q.active, 0.0, dz / q.scale)
        # a column that collapsed against its running maximum: the parameter has stopped
        # affecting the residual (exp saturation, a minimum at infinity)
        col = jnp.sqrt(q.hdiag)
        degenerate = jnp.any(~q.active & (col <= jnp.sqrt(eps) * q.scale))
        return Newton(step=step, scale=q.scale, colnorm=col, degenerate=degenerate,
                      solve=solve)


class LevenbergMarquardtCG(AbstractDescent):
    """Matrix-free LM: (J_F^T J_F + lam I) dx = -J_F^T r by a lineax solver (CG, 50
    steps, rtol 1e-8 by default) with an optional preconditioner; p = alpha dx."""

    damping: Damping = Damping()
    active_width: float = 1e-3
    solver: lx.AbstractLinearSolver = lx.CG(rtol=1e-8, atol=0.0, max_steps=50)
    preconditioner: AbstractPreconditioner | None = None

    def init(self, fn, x, y_obs):
        return self.damping.init(x)

    def prepare(self, fn, x, y_obs, state, cset):
        lin = jvp_linearisation(fn, x, y_obs)
        g_sum = lin.grad * lin.r.size  # J^T r
        active = _free_gap(x, lin, cset, self.active_width)
        free = ~active
        diag = jnp.where(free, state.damping, 1.0)
        dx = normal_solve(lin.jac, lin.jac.T, jnp.where(free, -g_sum, 0.0), diag, free,
                          self.solver, self.preconditioner)
        dx = jnp.where(active, -g_sum / state.damping, dx)
        return lin, CGQuery(damping=state.damping, active=active, dx=dx)

    def step(self, fn, x, y_obs, lin, q, trial):
        return trial.alpha * q.dx

    def update(self, state, lin, q, accepted, trial, step, phi_new):
        return self.damping.update(state, lin, state.damping, accepted, step, phi_new,
                                   state.scale)

    def newton(self, x, lin, q):
        # the CG step at the current damping stands for the GN step only where the
        # damping term is a small part of the system (mu |dx| <= |J^T r| / 10);
        # otherwise it is not a convergence test (inf: no step test this time)
        ones = jnp.ones_like(x)
        g_sum = jnp.where(q.active, 0.0, lin.grad * lin.r.size)
        gn_like = q.damping * jnp.linalg.norm(jnp.where(q.active, 0.0, q.dx)) \
            <= 0.1 * jnp.linalg.norm(g_sum)
        step = jnp.where(gn_like, jnp.where(q.active, 0.0, q.dx), jnp.inf)
        return Newton(step=step, scale=ones, colnorm=ones, degenerate=jnp.asarray(False))


class LevenbergMarquardt(AbstractDescent):
    """Adaptive Levenberg-Marquardt that converges to KKT points of box constraints: the
    one-class front end of :class:`LevenbergMarquardtSVD` (``solver="direct"``) and
    :class:`LevenbergMarquardtCG` (``"cg"``; ``"auto"`` picks direct for n <= 400).

    ``production=True`` (what :func:`invphys.least_squares` uses) is the rounding-aware
    :class:`Damping`, Nielsen's doubling trial factor and, with ``geodesic`` > 0, a
    refused geodesic correction as a rejected trial. Build the descents directly for a
    lineax solver or a preconditioner of your own.
    """

    damping0: float = 1e-3
    solver: str = eqx.field(static=True, default="auto")
    cg_steps: int = eqx.field(static=True, default=50)
    cg_rtol: float = 1e-8
    active_width: float = 1e-3
    min_damping: float = 1e-20
    max_damping: float = 1e20
    geodesic: float = eqx.field(static=True, default=0.0)
    production: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if self.solver not in ("auto", "direct", "cg"):
            raise ValueError(f"LM solver must be auto, direct or cg, got {self.solver!r}")

    def descent(self, n: int) -> LevenbergMarquardtSVD | LevenbergMarquardtCG:
        """The descent this configuration runs for x of size n."""
        damping = Damping(self.damping0, self.min_damping, self.max_damping, self.production)
        if self.solver == "direct" or (self.solver == "auto" and n <= 400):
            return LevenbergMarquardtSVD(damping, self.active_width, self.geodesic,
                                         self.production)
        cg = lx.CG(rtol=self.cg_rtol, atol=0.0, max_steps=self.cg_steps)
        return LevenbergMarquardtCG(damping, self.active_width, cg)

    def init(self, fn, x, y_obs):
        return self.descent(x.size).init(fn, x, y_obs)

    def prepare(self, fn, x, y_obs, state, cset):
        return self.descent(x.size).prepare(fn, x, y_obs, state, cset)

    def step(self, fn, x, y_obs, lin, query, trial):
        return self.descent(x.size).step(fn, x, y_obs, lin, query, trial)

    def update(self, state, lin, query, accepted, trial, step, phi_new):
        return self.descent(lin.grad.size).update(state, lin, query, accepted, trial, step,
                                                  phi_new)

    def newton(self, x, lin, query):
        return self.descent(x.size).newton(x, lin, query)
