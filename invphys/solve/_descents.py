"""Descents: each method only *proposes* a step; search and termination are shared.

A descent sees the current iterate through :meth:`AbstractDescent.prepare` (once per
iteration): it returns the typed :class:`Linearisation` every descent shares (forward
value, residual, objective, gradient, the Jacobian as a lineax operator) and its own
typed query (an SVD, a CG step, ...). It then proposes ``p(trial)`` for each trial of the
search, and may update a small carried state (LM's damping) from the outcome.
Backtracking, relaxation, projection, the Armijo test, stopping and bookkeeping live
once, in :mod:`._search`, :mod:`._termination` and :mod:`._core`.

Objective, for every descent: Phi(x) = 1/2 mean((F(x) - y*)^2), G = grad Phi = J^T r / m.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Bool, Float, Int, PyTree

__all__ = ["DIPG", "AbstractDescent", "AbstractMethod", "AbstractPreconditioner",
           "GaussNewton", "JacobiPreconditioner", "Lin", "Linearisation", "Newton",
           "ProjectedGradient", "Trial", "active_set", "normal_solve"]


class Linearisation(eqx.Module):
    """What every descent, the search and the termination know at the current iterate.

    ``jac`` is the Jacobian J of F at x as a lineax operator (a JVP; ``jac.T`` the VJP),
    or None for a descent that only takes one reverse-mode pass (PG, D-IPG)."""

    y: Float[Array, " m"]  # F(x)
    r: Float[Array, " m"]  # F(x) - y*
    phi: Float[Array, ""]  # 1/2 mean(r^2)
    grad: Float[Array, " n"]  # J^T r / m
    jac: lx.AbstractLinearOperator | None = None


Lin = Linearisation  # the old name


class Trial(eqx.Module):
    """One trial of the search: the step length alpha = alpha0 / 2^index."""

    alpha: Float[Array, ""]
    index: Int[Array, ""]


class Newton(eqx.Module):
    """What a descent knows about the undamped (Gauss-Newton) step at the iterate.

    ``solve(r)`` applies this iterate's (pseudo-)inverse: the GN step for residual r
    (the simplified correction of the natural monotonicity test); None if unavailable.
    """

    step: Float[Array, " n"]  # the Gauss-Newton step (zero on active components)
    scale: Float[Array, " n"]  # the descent's variable scaling D (ones if none)
    colnorm: Float[Array, " n"]  # Jacobian column norms (ones if unknown)
    degenerate: Bool[Array, ""]  # a free variable no longer affects the residual
    solve: Callable | None = None


def linearisation(y, y_obs, jt_r: Callable, jac=None) -> Linearisation:
    r = y - y_obs
    m = r.size
    return Linearisation(y=y, r=r, phi=0.5 * jnp.mean(r**2), grad=jt_r(r) / m, jac=jac)


def vjp_linearisation(fn: Callable, x: Array, y_obs: Array) -> Linearisation:
    """Forward value and gradient by one reverse-mode pass (no Jacobian operator)."""
    y, vjp = jax.vjp(fn, x)
    return linearisation(y, y_obs, lambda r: vjp(r)[0])


def jvp_linearisation(fn: Callable, x: Array, y_obs: Array) -> Linearisation:
    """Forward value, gradient and J as a lineax operator (``jax.linearize``)."""
    y, jvp = jax.linearize(fn, x)
    jac = lx.FunctionLinearOperator(jvp, jax.ShapeDtypeStruct(x.shape, x.dtype))
    jt = jac.T
    return linearisation(y, y_obs, jt.mv, jac)


class AbstractDescent(eqx.Module):
    """A step proposal p(trial) at the current iterate. Subclass and implement
    :meth:`prepare` and :meth:`step`; override :meth:`init` and :meth:`update` for
    descents that carry state across iterations, :meth:`newton` for the certified
    stopping rules and Gauss-Newton polishing."""

    def init(self, fn: Callable, x: Array, y_obs: Array) -> PyTree:
        """Carried descent state (e.g. damping). Default: none."""
        return None

    @abc.abstractmethod
    def prepare(self, fn: Callable, x: Array, y_obs: Array, state: PyTree,
                cset: Any) -> tuple[Linearisation, PyTree]:
        """Linearise at x: the shared :class:`Linearisation` and this descent's typed
        query (what its steps need). ``cset`` is the problem (bounds, pins, project)."""

    @abc.abstractmethod
    def step(self, fn: Callable, x: Array, y_obs: Array, lin: Linearisation, query: PyTree,
             trial: Trial) -> Float[Array, " n"]:
        """The proposal p(trial); the search's trial point is Proj(x + p)."""

    def update(self, state: PyTree, lin: Linearisation, query: PyTree,
               accepted: Bool[Array, ""], trial: Trial, step: Array,
               phi_new: Array) -> PyTree:
        """New carried state after the search (``step`` = x_next - x; ``trial`` is the
        accepted trial, or the last one tried)."""
        return state

    def newton(self, x: Array, lin: Linearisation, query: PyTree) -> Newton | None:
        """The undamped (Gauss-)Newton step at x; None when the descent has none (the
        certified termination then tests the step taken)."""
        return None


AbstractMethod = AbstractDescent  # the old name


class ProjectedGradient(AbstractDescent):
    """x-GD: p(alpha) = -alpha eta G."""

    eta: float = 1.0

    def prepare(self, fn, x, y_obs, state, cset):
        return vjp_linearisation(fn, x, y_obs), None

    def step(self, fn, x, y_obs, lin, query, trial):
        return -trial.alpha * self.eta * lin.grad


class DIPG(AbstractDescent):
    """Deceptron inverse-preconditioned gradient: a curve through a learned inverse g.

    With y = F(x) and r = y - y*, ``form="paper"`` proposes p(alpha) = g(y - alpha r) - x
    (the paper's form: consistent when F is the surrogate g was trained with), and
    ``form="local"`` proposes g(y - alpha r) - g(y), which only uses g's *local*
    behaviour and so stays consistent when F is the true simulator and g(F(x)) != x.
    ``inverse`` acts on one y (in the same output space as the objective).

    ``symmetry`` (optional) maps a point x to a point of its symmetry orbit, F unchanged,
    inside the constraint set where the orbit meets it (for the oscillator, (m, c, k) ->
    lam (m, c, k)); the proposal becomes p = symmetry(x + p) - x. Where F has such a
    symmetry, g returns one representative of each orbit, which the box may cut off: the
    Euclidean projection then leaves the orbit, changes F, and the projected step need not
    descend. None (the default): no such move.
    """

    inverse: Callable[[Array], Array]
    form: str = eqx.field(static=True, default="paper")
    symmetry: Callable[[Array], Array] | None = None

    def __check_init__(self):
        if self.form not in ("paper", "local"):
            raise ValueError(f"DIPG form must be 'paper' or 'local', got {self.form!r}")

    def prepare(self, fn, x, y_obs, state, cset):
        lin = vjp_linearisation(fn, x, y_obs)
        base = x if self.form == "paper" else self.inverse(lin.y)
        return lin, base

    def step(self, fn, x, y_obs, lin, query, trial):
        p = self.inverse(lin.y - trial.alpha * lin.r) - query
        if self.symmetry is not None:
            p = self.symmetry(x + p) - x
        return p


# ------------------------------------------------------------ CG on the normal equations
class AbstractPreconditioner(eqx.Module):
    """Builds M ~ (J^T J + D)^-1 (a positive semidefinite lineax operator) for the CG
    descents, from the iterate's Jacobian operator, the damping diagonal and the free
    mask (None: all free). Pass one to :class:`GaussNewton` or the LM CG descent."""

    @abc.abstractmethod
    def __call__(self, jac: lx.AbstractLinearOperator, diag: Array,
                 free: Array | None) -> lx.AbstractLinearOperator:
        ...


class JacobiPreconditioner(AbstractPreconditioner):
    """M = diag(||J e_i||^2 + D_i)^-1: the exact diagonal of J^T J (n JVPs per iteration:
    for moderate n, or where the columns are badly scaled)."""

    def __call__(self, jac, diag, free):
        struct = jac.in_structure()
        eye = jnp.eye(struct.size, dtype=struct.dtype)
        cols = jax.vmap(jac.mv, out_axes=1)(eye)
        d = jnp.sum(cols**2, axis=0)
        if free is not None:
            d = jnp.where(free, d, 0.0)
        d = d + jnp.broadcast_to(diag, d.shape)
        inv = jnp.where(d > 0, 1.0 / jnp.where(d > 0, d, 1.0), 1.0)
        return lx.DiagonalLinearOperator(inv)


def normal_solve(jac, jt, rhs, diag, free, solver: lx.AbstractLinearSolver,
                 preconditioner: AbstractPreconditioner | None):
    """Solve (J_F^T J_F + diag) dx = rhs matrix-free (one JVP + one VJP per product),
    J_F = J restricted to the free components (all when ``free`` is None); non-finite
    entries of the answer become 0. The one CG set-up of GN and LM."""
    struct = jac.in_structure()
    if free is None:
        mv = lambda v: jt.mv(jac.mv(v)) + diag * v  # noqa: E731
    else:
        mv = lambda v: jnp.where(free, jt.mv(jac.mv(jnp.where(free, v, 0.0))), 0.0) \
            + diag * v  # noqa: E731
    op = lx.FunctionLinearOperator(mv, struct, lx.positive_semidefinite_tag)
    options = {} if preconditioner is None else {
        "preconditioner": lx.TaggedLinearOperator(preconditioner(jac, diag, free),
                                                  lx.positive_semidefinite_tag)}
    dx = lx.linear_solve(op, rhs, solver, options=options, throw=False).value
    return jnp.where(jnp.isfinite(dx), dx, 0.0)


class GaussNewton(AbstractDescent):
    """Damped Gauss-Newton: (J^T J + lam I) dx = -J^T r by a matrix-free lineax solve
    (CG by default), p = alpha dx.

    Defaults are the paper's fixed damping lam = 1e-3 and 8 CG iterations (rtol 1e-6);
    ``solver`` takes any lineax solver for PSD operators, ``preconditioner`` an
    :class:`AbstractPreconditioner`. With bounds this is the paper's *projected* GN: the
    search projects the trial point, which in general stalls at a non-KKT point when
    J^T J is not diagonal; use :class:`LevenbergMarquardt` for bound-constrained problems.
    """

    damping: float
    solver: lx.AbstractLinearSolver
    preconditioner: AbstractPreconditioner | None

    def __init__(self, damping: float = 1e-3, cg_steps: int = 8, cg_rtol: float = 1e-6, *,
                 solver: lx.AbstractLinearSolver | None = None,
                 preconditioner: AbstractPreconditioner | None = None):
        self.damping = damping
        self.solver = solver if solver is not None else lx.CG(rtol=cg_rtol, atol=0.0,
                                                              max_steps=cg_steps)
        self.preconditioner = preconditioner

    def prepare(self, fn, x, y_obs, state, cset):
        lin = jvp_linearisation(fn, x, y_obs)
        rhs = -lin.grad * lin.r.size
        dx = normal_solve(lin.jac, lin.jac.T, rhs, self.damping, None, self.solver,
                          self.preconditioner)
        return lin, dx

    def step(self, fn, x, y_obs, lin, query, trial):
        return trial.alpha * query


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
