"""Methods: each one only *proposes* a step; the shared protocol does everything else.

A method sees the current iterate through :meth:`AbstractMethod.prepare` (once per
iteration: it linearises the objective in whatever way it needs and returns the
:class:`Lin` every method shares plus private ``aux`` data), then proposes
``p(alpha)`` for each backtracking trial, and may update a small carried state
(LM's damping) from the outcome. Backtracking, relaxation, projection, the Armijo
test, stopping and bookkeeping live once, in :mod:`._protocol`.

Objective, for every method: Phi(x) = 1/2 mean((F(x) - y*)^2), G = grad Phi = J^T r / m.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Bool, Float, PyTree


class Lin(eqx.Module):
    """What the protocol knows at the current iterate."""

    y: Float[Array, " m"]
    r: Float[Array, " m"]  # F(x) - y*
    phi: Float[Array, ""]  # 1/2 mean(r^2)
    grad: Float[Array, " n"]  # J^T r / m


def _lin_from(y, y_obs, jt_r_fn) -> Lin:
    r = y - y_obs
    m = r.size
    return Lin(y=y, r=r, phi=0.5 * jnp.mean(r**2), grad=jt_r_fn(r) / m)


def vjp_linearisation(fn: Callable, x: Array, y_obs: Array) -> Lin:
    """Forward value and gradient by one reverse-mode pass (no Jacobian formed)."""
    y, vjp = jax.vjp(fn, x)
    return _lin_from(y, y_obs, lambda r: vjp(r)[0])


class AbstractMethod(eqx.Module):
    """A step proposal p(alpha) at the current iterate. Subclass and implement
    :meth:`prepare` and :meth:`propose`; override :meth:`init` and :meth:`update` for
    methods that carry state across iterations."""

    def init(self, fn: Callable, x: Array, y_obs: Array) -> PyTree:
        """Carried method state (e.g. damping). Default: none."""
        return None

    @abc.abstractmethod
    def prepare(self, fn: Callable, x: Array, y_obs: Array, state: PyTree,
                cset: Any) -> tuple[Lin, Any]:
        """Linearise at x: return the shared :class:`Lin` and private aux data.

        ``cset`` is the problem (its bounds, pins and ``project``)."""

    @abc.abstractmethod
    def propose(self, fn: Callable, x: Array, y_obs: Array, lin: Lin, aux: Any,
                alpha: Array) -> Float[Array, " n"]:
        """The proposal p(alpha); the trial point is Proj(x + p(alpha))."""

    def update(self, state: PyTree, lin: Lin, aux: Any, accepted: Bool[Array, ""],
               alpha: Array, step: Array, phi_new: Array) -> PyTree:
        """New carried state after the line search (``step`` = x_next - x)."""
        return state

    def newton(self, x: Array, lin: Lin, aux: Any) -> Newton | None:
        """The undamped (Gauss-)Newton step at x, for the production stopping rules
        (``Rules(endgame=True)``); None when the method has none (the protocol then
        tests the step it took)."""
        return None


class Newton(eqx.Module):
    """What a method knows about the undamped step at the current iterate.

    ``solve(r)`` applies this iterate's (pseudo-)inverse: the GN step for residual r
    (the simplified correction of the natural monotonicity test); None if unavailable.
    """

    step: Float[Array, " n"]  # the Gauss-Newton step (zero on active components)
    scale: Float[Array, " n"]  # the method's variable scaling D (ones if none)
    colnorm: Float[Array, " n"]  # Jacobian column norms (ones if unknown)
    degenerate: Bool[Array, ""]  # a free variable no longer affects the residual
    solve: Callable | None = None


class ProjectedGradient(AbstractMethod):
    """x-GD: p(alpha) = -alpha eta G."""

    eta: float = 1.0

    def prepare(self, fn, x, y_obs, state, cset):
        lin = vjp_linearisation(fn, x, y_obs)
        return lin, None

    def propose(self, fn, x, y_obs, lin, aux, alpha):
        return -alpha * self.eta * lin.grad


class DIPG(AbstractMethod):
    """Deceptron inverse-preconditioned gradient: a curve through a learned inverse g.

    With y = F(x) and r = y - y*, ``form="paper"`` proposes p(alpha) = g(y - alpha r) - x
    (the paper's form: consistent when F is the surrogate g was trained with), and
    ``form="local"`` proposes g(y - alpha r) - g(y), which only uses g's *local*
    behaviour and so stays consistent when F is the true simulator and g(F(x)) != x.
    ``inverse`` acts on one y (in the same output space as the objective).
    """

    inverse: Callable[[Array], Array]
    form: str = eqx.field(static=True, default="paper")

    def __check_init__(self):
        if self.form not in ("paper", "local"):
            raise ValueError(f"DIPG form must be 'paper' or 'local', got {self.form!r}")

    def prepare(self, fn, x, y_obs, state, cset):
        lin = vjp_linearisation(fn, x, y_obs)
        base = x if self.form == "paper" else self.inverse(lin.y)
        return lin, base

    def propose(self, fn, x, y_obs, lin, aux, alpha):
        return self.inverse(lin.y - alpha * lin.r) - aux


def _normal_operator(jvp, vjp, x, diag):
    """v -> J^T J v + diag * v as a symmetric PSD lineax operator."""
    struct = jax.ShapeDtypeStruct(x.shape, x.dtype)
    return lx.FunctionLinearOperator(
        lambda v: vjp(jvp(v)) + diag * v, struct, lx.positive_semidefinite_tag
    )


class GaussNewton(AbstractMethod):
    """Damped Gauss-Newton: (J^T J + lam I) dx = -J^T r by matrix-free CG, p = alpha dx.

    Each CG product is one JVP and one VJP (lineax CG over a linearised forward map).
    Defaults are the paper's fixed damping lam = 1e-3 and 8 CG iterations (tol 1e-6).
    With bounds this is the paper's *projected* GN: the protocol projects the trial
    point, which in general stalls at a non-KKT point when J^T J is not diagonal;
    use :class:`LevenbergMarquardt` for bound-constrained problems.
    """

    damping: float = 1e-3
    cg_steps: int = eqx.field(static=True, default=8)
    cg_rtol: float = 1e-6

    def prepare(self, fn, x, y_obs, state, cset):
        y, jvp = jax.linearize(fn, x)
        vjp = jax.linear_transpose(jvp, x)
        jt = lambda r: vjp(r)[0]
        lin = _lin_from(y, y_obs, jt)
        op = _normal_operator(jvp, jt, x, self.damping)
        rhs = -lin.grad * lin.r.size
        solver = lx.CG(rtol=self.cg_rtol, atol=0.0, max_steps=self.cg_steps)
        dx = lx.linear_solve(op, rhs, solver, throw=False).value
        return lin, jnp.where(jnp.isfinite(dx), dx, 0.0)

    def propose(self, fn, x, y_obs, lin, aux, alpha):
        return alpha * aux


class _LMState(eqx.Module):
    damping: Float[Array, ""]
    scale: Float[Array, " n"]  # Moré's column scaling D (running max of column norms)


class _LMAux(eqx.Module):
    jvp: Callable
    damping: Float[Array, ""]
    scale: Float[Array, " n"]
    active: Bool[Array, " n"]
    hdiag: Float[Array, " n"]  # ||J_i||^2: curvature along each coordinate
    # direct mode: SVD of the scaled, active-masked Jacobian
    u_r: Float[Array, " k"] | None
    u_t: Float[Array, "k m"] | None
    s: Float[Array, " k"] | None
    vt: Float[Array, "k n"] | None
    # CG mode: the step at the current damping
    dx: Float[Array, " n"] | None


def active_set(x, grad, cset, width):
    """Bertsekas' epsilon-active set: components at (within ``width`` of) a bound whose
    gradient pushes outward, plus pinned components. Held fixed in the Newton solve."""
    act = jnp.zeros(x.shape, bool)
    if cset is None:
        return act
    if cset.lower is not None:
        act = act | ((x <= cset.lower + width) & (grad > 0))
    if cset.upper is not None:
        act = act | ((x >= cset.upper - width) & (grad < 0))
    if cset.pinned is not None:
        act = act | cset.pinned
    return act


class LevenbergMarquardt(AbstractMethod):
    """Adaptive Levenberg-Marquardt that converges to KKT points of box constraints.

    * Damping: Nielsen's update from the gain ratio (actual / predicted decrease),
      with Moré's column scaling D (the running max of Jacobian column norms), so the
      step solves min ||J dx + r||^2 + lam ||D dx||^2 and is invariant to rescaling x.
    * Bounds: a projected-Newton active-set step in the style of Bertsekas (1982).
      Components within the epsilon-active width of a bound, with the gradient pushing
      outward, take a scaled gradient step (which the projection holds at the bound);
      the rest take the damped GN step of the reduced problem. With the protocol's
      ``armijo="step"`` test along the projection arc this converges to a KKT point,
      where plain projection of a GN step does not.
    * ``solver="direct"`` forms J (n JVPs) and takes its SVD once per iteration; each
      backtracking trial then *raises the damping* (lam / alpha) instead of shortening
      the step, tracing the Levenberg-Marquardt curve at the cost of one small matvec.
      ``"cg"`` is matrix-free (one JVP + one VJP per CG product) with p = alpha dx, for
      large n. ``"auto"`` picks direct for n <= 400.

    ``production=True`` (what :func:`invphys.least_squares` uses; off in the paper
    protocol) changes three details: a predicted decrease below 16 ulps of Phi is
    rounding noise, so the gain ratio is taken as 1 there (the damping keeps falling and
    the last steps stay Gauss-Newton steps) and the prediction is computed without
    cancellation; trial k raises the damping by 2^(k(k+1)/2) (Nielsen's doubling
    factor) instead of 2^k, so nine trials span 3e13 and a start near Gauss-Newton
    (``damping0=1e-12``) costs few rejections; a proposal whose geodesic correction is
    too large is a rejected trial rather than a plain step. In direct mode J^T r comes
    from the Jacobian already formed (no VJP through the simulator). ``geodesic`` > 0
    adds Transtrum & Sethna's geodesic acceleration with their acceptance ratio
    2|a|/|v| <= ``geodesic`` (0.75 there).
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

    def _trial_factor(self, alpha):
        """The damping factor of the backtracking trial alpha = 2^-k: 2^k, or Nielsen's
        2^(k(k+1)/2) (the factor doubles from trial to trial) in production."""
        if not self.production:
            return 1.0 / alpha
        k = -jnp.log2(alpha)
        return jnp.exp2(0.5 * k * (k + 1.0))

    def _direct(self, x) -> bool:
        return self.solver == "direct" or (self.solver == "auto" and x.size <= 400)

    def init(self, fn, x, y_obs):
        return _LMState(damping=jnp.asarray(self.damping0, x.dtype),
                        scale=jnp.zeros(x.shape, x.dtype))

    def prepare(self, fn, x, y_obs, state, cset):
        y, jvp = jax.linearize(fn, x)
        vjp = jax.linear_transpose(jvp, x)
        J = None
        if self._direct(x):
            J = jax.vmap(jvp, out_axes=1)(jnp.eye(x.size, dtype=x.dtype))  # (m, n)
        if J is not None:  # J^T r from the formed Jacobian: no VJP through the simulator
            lin = _lin_from(y, y_obs, lambda r: J.T @ r)
        else:
            lin = _lin_from(y, y_obs, lambda r: vjp(r)[0])
        g_sum = lin.grad * lin.r.size  # J^T r
        proj_gap = jnp.max(jnp.abs(cset.project(x - lin.grad) - x)) if cset is not None \
            else jnp.asarray(0.0, x.dtype)
        active = active_set(x, lin.grad, cset, jnp.minimum(self.active_width, proj_gap))
        free = ~active
        if J is not None:
            col = jnp.sqrt(jnp.sum(J**2, axis=0))
            scale = jnp.maximum(state.scale, col)
            scale = jnp.where(scale > 0, scale, 1.0)
            Js = jnp.where(free, J / scale, 0.0)
            U, s, vt = jnp.linalg.svd(Js, full_matrices=False)
            aux = _LMAux(jvp=jvp, damping=state.damping, scale=scale, active=active,
                         hdiag=col**2, u_r=U.T @ lin.r, u_t=U.T,
                         s=s, vt=vt, dx=None)
        else:
            hdiag = jnp.zeros_like(x)  # not formed in matrix-free mode
            diag = jnp.where(free, state.damping, 1.0)
            jvp_f = lambda v: jvp(jnp.where(free, v, 0.0))
            vjp_f = lambda w: jnp.where(free, vjp(w)[0], 0.0)
            op = _normal_operator(jvp_f, vjp_f, x, diag)
            rhs = jnp.where(free, -g_sum, 0.0)
            solver = lx.CG(rtol=self.cg_rtol, atol=0.0, max_steps=self.cg_steps)
            dx = lx.linear_solve(op, rhs, solver, throw=False).value
            dx = jnp.where(jnp.isfinite(dx), dx, 0.0)
            dx = jnp.where(active, -g_sum / state.damping, dx)
            aux = _LMAux(jvp=jvp, damping=state.damping, scale=state.scale, active=active,
                         hdiag=hdiag, u_r=None, u_t=None, s=None, vt=None, dx=dx)
        return lin, aux

    def propose(self, fn, x, y_obs, lin, aux, alpha):
        if aux.dx is not None:
            return alpha * aux.dx
        mu = aux.damping * self._trial_factor(alpha)
        filt = aux.s / (aux.s**2 + mu)
        dz = -(aux.vt.T @ (filt * aux.u_r))
        g_sum = lin.grad * lin.r.size
        dx_active = -g_sum / (aux.hdiag + mu * aux.scale**2 + jnp.finfo(x.dtype).tiny)
        v = jnp.where(aux.active, dx_active, dz / aux.scale)
        if self.geodesic <= 0:
            return v
        # geodesic acceleration (Transtrum & Sethna 2012): the second directional
        # derivative r_vv of the residual along v corrects the step for the curvature
        # of the model manifold; a = -(J^T J + mu D^2)^-1 J^T r_vv by the same SVD.
        vf = jnp.where(aux.active, 0.0, v)
        rvv = jax.jvp(lambda z: jax.jvp(fn, (z,), (vf,))[1], (x,), (vf,))[1]
        da = -(aux.vt.T @ (filt * (aux.u_t @ rvv)))
        tiny = jnp.finfo(x.dtype).tiny
        ratio = 2.0 * jnp.linalg.norm(da) / jnp.maximum(jnp.linalg.norm(dz), tiny)
        ok = jnp.all(jnp.isfinite(da)) & (ratio <= self.geodesic)
        acc = jnp.where(aux.active, 0.0, 0.5 * da / aux.scale)
        if self.production:  # a non-finite proposal is a rejected trial
            return jnp.where(ok, v + acc, jnp.nan)
        return jnp.where(ok, v + acc, v)

    def update(self, state, lin, aux, accepted, alpha, step, phi_new):
        jp = aux.jvp(step)
        if self.production:
            pred = -jnp.mean(lin.r * jp) - 0.5 * jnp.mean(jp**2)  # no cancellation
        else:
            pred = lin.phi - 0.5 * jnp.mean((lin.r + jp) ** 2)
        gain = (lin.phi - phi_new) / jnp.where(pred > 0, pred, jnp.inf)
        if self.production:
            noise = 16.0 * jnp.finfo(lin.phi.dtype).eps * lin.phi
            gain = jnp.where(pred <= noise, 1.0, gain)
        # the damping the accepted (or last) trial used: direct mode raises it per trial
        mu = state.damping if aux.dx is not None else state.damping * self._trial_factor(alpha)
        good = jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * gain - 1.0) ** 3)
        new = jnp.where(accepted, mu * good, 2.0 * mu)
        new = jnp.clip(new, self.min_damping, self.max_damping)
        return _LMState(damping=new, scale=aux.scale)

    def newton(self, x, lin, aux):
        if aux.dx is not None:
            # matrix-free: the CG step at the current damping stands for the GN step only
            # where the damping term is a small part of the system (mu |dx| <= |J^T r| /
            # 10); otherwise it is not a convergence test (inf: no step test this time)
            ones = jnp.ones_like(x)
            g_sum = jnp.where(aux.active, 0.0, lin.grad * lin.r.size)
            gn_like = aux.damping * jnp.linalg.norm(jnp.where(aux.active, 0.0, aux.dx)) \
                <= 0.1 * jnp.linalg.norm(g_sum)
            step = jnp.where(gn_like, jnp.where(aux.active, 0.0, aux.dx), jnp.inf)
            return Newton(step=step, scale=ones, colnorm=ones, degenerate=jnp.asarray(False))
        eps = jnp.finfo(x.dtype).eps
        rcond = max(lin.r.size, x.size) * eps
        s_inv = jnp.where(aux.s > rcond * aux.s[0], 1.0 / jnp.where(aux.s > 0, aux.s, 1.0),
                          0.0)

        def solve(r):
            dz = -(aux.vt.T @ (s_inv * (aux.u_t @ r)))
            return jnp.where(aux.active, 0.0, dz / aux.scale)

        dz = -(aux.vt.T @ (s_inv * aux.u_r))
        step = jnp.where(aux.active, 0.0, dz / aux.scale)
        # a column that collapsed against its running maximum: the parameter has stopped
        # affecting the residual (exp saturation, a minimum at infinity)
        col = jnp.sqrt(aux.hdiag)
        degenerate = jnp.any(~aux.active & (col <= jnp.sqrt(eps) * aux.scale))
        return Newton(step=step, scale=aux.scale, colnorm=col, degenerate=degenerate,
                      solve=solve)
