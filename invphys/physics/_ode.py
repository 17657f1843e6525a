"""Shared diffrax pieces for the simulators: the classical RK4 solver and the adjoint.

diffrax ships no classical 4th-order Runge-Kutta, which the paper's oscillator uses,
so it is defined here from its Butcher tableau. The adjoint is
:class:`diffrax.DirectAdjoint`: diffrax's default (recursive checkpointing) has no
forward mode, :class:`diffrax.ForwardMode` has no reverse mode, and the solvers need
both (JVP for Jacobian-vector products, VJP for gradients). With fixed steps its
``max_steps`` equals the step count, so it costs no more than a scan.
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


ADJOINT = diffrax.DirectAdjoint()

SOLVERS = {"tsit5": diffrax.Tsit5, "kvaerno5": diffrax.Kvaerno5, "dopri8": diffrax.Dopri8}


class _Replay(diffrax.AbstractStepSizeController):
    """Steps exactly through the given times ``ts`` (padded with the final time)."""

    ts: jax.Array

    def wrap(self, direction):
        return self

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        return self.ts[1], jnp.asarray(1)

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, i):
        nxt = self.ts[jnp.minimum(i + 1, self.ts.shape[0] - 1)]
        return True, t1, nxt, False, i + 1, diffrax.RESULTS.successful


def adaptive_solve(term, solver, t0, t1, y0, args, controller, saveat, max_steps):
    """An adaptive solve whose derivatives are those of one fixed discrete scheme.

    Pass 1 (no derivatives) lets ``controller`` choose the steps; pass 2 replays
    exactly those steps with :data:`ADJOINT`. Differentiating a single adaptive solve
    directly is subtly inconsistent: reverse mode recomputes the forward pass, where
    a rounding-level difference can flip an accept/reject decision, so the VJP
    linearises a different discrete path from the JVP (<J v, w> and <v, J^T w> then
    differ at the tolerance level, ~1e-10, and CG on J^T J loses symmetry). Replaying
    frozen steps makes JVP and VJP exact transposes, at the cost of a second solve.
    """
    sg = jax.lax.stop_gradient
    probe = diffrax.diffeqsolve(
        term, solver, t0=t0, t1=t1, dt0=None, y0=sg(y0), args=sg(args),
        stepsize_controller=controller, saveat=diffrax.SaveAt(steps=True),
        max_steps=max_steps, adjoint=diffrax.ForwardMode(),
    )
    ts = jnp.where(jnp.isfinite(probe.ts), probe.ts, t1)
    ts = sg(jnp.concatenate([jnp.asarray(t0, ts.dtype)[None], ts]))
    return diffrax.diffeqsolve(
        term, solver, t0=t0, t1=t1, dt0=None, y0=y0, args=args,
        stepsize_controller=_Replay(ts), saveat=saveat, max_steps=max_steps,
        adjoint=ADJOINT,
    )
