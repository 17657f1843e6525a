"""Shared diffrax pieces for the simulators: the RK4 solver and differentiable stepping.

**Stepping.** A solve here is a ``lax.scan`` over a diffrax solver's ``step`` on a
fixed grid of times. A scan is differentiable in both modes (JVP for Gauss-Newton
products, VJP for gradients) and costs no more than the steps it takes. diffrax's own
loop offers forward mode (:class:`diffrax.ForwardMode`) or cheap reverse mode
(:class:`diffrax.RecursiveCheckpointAdjoint`) but not both; its
:class:`diffrax.DirectAdjoint` does both but measured ~100x slower per step here
(nested checkpointed scans sized by ``max_steps``).

**Adaptive solves** (:func:`adaptive_grid`) run diffrax's own adaptive loop once,
without derivatives, to choose the step times, then the scan replays exactly those
times. Differentiating an adaptive loop directly is subtly inconsistent: the step
choices are rounding-sensitive, so the JVP and the recomputed forward pass of the VJP
can linearise different discrete paths. On a frozen grid, JVP and VJP are exact
transposes (<J v, w> = <v, J^T w> to rounding), which CG on J^T J relies on.

diffrax ships no classical 4th-order Runge-Kutta, which the paper's oscillator uses,
so it is defined here from its Butcher tableau.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

_rk4_tableau = diffrax.ButcherTableau(
    c=np.array([0.5, 0.5, 1.0]),
    b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
    b_error=np.zeros(4),  # no embedded method: fixed steps only
    a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
)


class RK4(diffrax.AbstractERK):
    """The classical 4th-order Runge-Kutta method (fixed steps; no error estimate)."""

    tableau: ClassVar[diffrax.ButcherTableau] = _rk4_tableau
    interpolation_cls: ClassVar[Callable[..., diffrax.AbstractLocalInterpolation]] = (
        diffrax.ThirdOrderHermitePolynomialInterpolation.from_k
    )

    def order(self, terms):
        return 4


SOLVERS = {"tsit5": diffrax.Tsit5, "kvaerno5": diffrax.Kvaerno5, "dopri8": diffrax.Dopri8}


def _explicit_step(solver, term, t0, t1, y, args):
    """One explicit Runge-Kutta step from the solver's Butcher tableau (diffrax's own
    coefficients), with the stages unrolled: fully differentiable both ways and
    ~10x faster under vmap than stepping diffrax's generic stage loop."""
    h = t1 - t0
    f = lambda t, u: term.vf(t, u, args)
    if isinstance(solver, diffrax.Euler):
        return y + h * f(t0, y)
    tab = solver.tableau
    ks = [f(t0, y)]
    for ci, arow in zip(tab.c, tab.a_lower, strict=True):
        u = y + h * sum(float(a) * k for a, k in zip(arow, ks, strict=True) if a != 0.0)
        ks.append(f(t0 + float(ci) * h, u))
    return y + h * sum(float(b) * k for b, k in zip(tab.b_sol, ks, strict=True) if b != 0.0)


def grid_solve(term, solver, ts, y0, args=None, save_all: bool = False):
    """Step ``solver`` through the times ``ts`` (a scan). Returns the final state, or the
    states at every time in ``ts`` (``save_all``). Zero-length steps (padding) are
    exact no-ops for explicit Runge-Kutta methods.

    Explicit solvers (Euler and every :class:`diffrax.AbstractERK`: Tsit5, RK4, ...)
    step from their tableau; other diffrax solvers go through ``solver.step``."""
    explicit = isinstance(solver, diffrax.Euler) or (
        isinstance(solver, diffrax.AbstractERK) and not solver.tableau.implicit
    )
    if explicit:
        def body(y, t01):
            y1 = _explicit_step(solver, term, t01[0], t01[1], y, args)
            return y1, (y1 if save_all else None)

        y_end, ys = jax.lax.scan(body, y0, (ts[:-1], ts[1:]))
    else:
        if hasattr(solver, "scan_kind") and solver.scan_kind is None:
            # diffrax's default stage loop (checkpointed) has no JVP and "lax" no VJP;
            # "bounded" (a scan of static length) has both
            solver = type(solver)(scan_kind="bounded")
        state = solver.init(term, ts[0], ts[1], y0, args)

        def body(carry, t01):
            y, st = carry
            y1, _, _, st, _ = solver.step(term, t01[0], t01[1], y, args, st, False)
            return (y1, st), (y1 if save_all else None)

        (y_end, _), ys = jax.lax.scan(body, (y0, state), (ts[:-1], ts[1:]))
    if save_all:
        return jnp.concatenate([y0[None], ys])
    return y_end


def adaptive_grid(term, solver, t0, t1, y0, args, controller, max_steps: int):
    """Step times chosen by diffrax's adaptive loop (no derivatives flow through them).

    Returns ``max_steps + 1`` times from t0 to t1, padded at the end with t1 (so the
    replay's extra steps have zero length). Where the adaptive loop fails (``max_steps``
    reached, e.g. at a stiff, unphysical parameter a solver tried), the grid is NaN, so
    the simulation returns NaN: a rejected trial for the solvers, never an exception
    raised from inside a jitted loop."""
    sg = jax.lax.stop_gradient
    probe = diffrax.diffeqsolve(
        term, solver, t0=t0, t1=t1, dt0=None, y0=sg(y0), args=sg(args),
        stepsize_controller=controller, saveat=diffrax.SaveAt(steps=True),
        max_steps=max_steps, adjoint=diffrax.ForwardMode(), throw=False,
    )
    ts = jnp.where(jnp.isfinite(probe.ts), probe.ts, t1)
    ts = jnp.where(probe.result == diffrax.RESULTS.successful, ts, jnp.nan)
    return sg(jnp.concatenate([jnp.asarray(t0, ts.dtype)[None], ts]))
