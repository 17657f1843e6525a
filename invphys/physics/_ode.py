"""Shared pieces for the simulators: exact linear flows, the RK4 solver and
differentiable stepping.

**Exact flows.** Both simulators are linear, autonomous, constant-coefficient ODE
systems, y' = A y, so their flow over a time t is the matrix exponential
exp(A t): exact to rounding, at any t, with no step-size choice to make and nothing
to freeze or re-choose when the parameters move. :func:`expm2` is the closed-form
exponential of 2 x 2 matrices (the oscillator; entire functions of the discriminant,
so smooth through critical damping where the eigenvalues coincide); the heat
equation's Dirichlet Laplacian is diagonalised by the discrete sine transform
(:mod:`.heat1d`).

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

import math
from collections.abc import Callable
from typing import ClassVar

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

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


# Taylor coefficients of cosh(sqrt q) = sum q^j / (2j)! and sinh(sqrt q) / sqrt q =
# sum q^j / (2j+1)!, highest power first (Horner). Used for |q| <= 1, where the 11-term
# truncation error is below 1 / 22! ~ 9e-22, far under float64 rounding.
_SERIES_TERMS = 11
_COSH_SERIES = tuple(1.0 / math.factorial(2 * j) for j in reversed(range(_SERIES_TERMS)))
_SINHC_SERIES = tuple(1.0 / math.factorial(2 * j + 1)
                      for j in reversed(range(_SERIES_TERMS)))


def _horner(coeffs, q):
    out = jnp.full_like(q, coeffs[0])
    for a in coeffs[1:]:
        out = out * q + a
    return out


# d/dq [sinh(sqrt q) / sqrt q] = sum j q^(j-1) / (2j+1)!, highest power first (|q| <= 1;
# truncation below 11 / 23! ~ 4e-22)
_SINHC_PRIME_SERIES = tuple(j / math.factorial(2 * j + 1)
                            for j in reversed(range(1, _SERIES_TERMS + 1)))


@jax.custom_jvp
def scaled_cosh_sinhc(q: Float[Array, "*b"], h: Float[Array, "*b"]
                      ) -> tuple[Float[Array, "*b"], Float[Array, "*b"]]:
    """``(e^h cosh(sqrt q), e^h sinh(sqrt q) / sqrt q)`` for real q of either sign.

    Both are entire functions of q (for q < 0 they are ``e^h cos(sqrt -q)`` and
    ``e^h sin(sqrt -q) / sqrt -q``), so they and all their derivatives are continuous
    through q = 0, the repeated-eigenvalue case. Three branches, each used only where
    it is accurate: a Taylor series in q for |q| <= 1 (no 0/0), cos/sin for q < -1, and
    for q > 1 the exponentials ``e^(h +- sqrt q)`` combined after the scaling (no
    overflow of cosh alone when e^h is small; the cancellation in ``e^(h+r) - e^(h-r)``
    costs at most coth(1) ~ 1.3 ulp for r >= 1). Unused branches are evaluated at a
    safe argument (the "double where"), so no NaN or inf reaches a derivative.
    """
    small, pos = jnp.abs(q) <= 1.0, q > 1.0
    neg = ~(small | pos)
    qs = jnp.where(small, q, 0.0)
    eh = jnp.exp(h)
    c_ser, s_ser = eh * _horner(_COSH_SERIES, qs), eh * _horner(_SINHC_SERIES, qs)
    rp = jnp.sqrt(jnp.where(pos, q, 1.0))
    ep, em = jnp.exp(h + rp), jnp.exp(h - rp)
    c_hyp, s_hyp = 0.5 * (ep + em), 0.5 * (ep - em) / rp
    rn = jnp.sqrt(jnp.where(neg, -q, 1.0))
    c_trig, s_trig = eh * jnp.cos(rn), eh * jnp.sin(rn) / rn
    c = jnp.where(small, c_ser, jnp.where(pos, c_hyp, c_trig))
    s = jnp.where(small, s_ser, jnp.where(pos, s_hyp, s_trig))
    return c, s


@scaled_cosh_sinhc.defjvp
def _scaled_cosh_sinhc_jvp(primals, tangents):
    """The derivatives in closed form from the values themselves: with
    C = cosh(sqrt q), S = sinh(sqrt q) / sqrt q, dC/dq = S / 2 and
    dS/dq = (C - S) / (2 q) (a series near q = 0, where that is 0/0), and both scale
    with e^h. Differentiating the three branches instead would put each branch's
    derivative (and, in the solvers' second-order directional derivatives, its second
    derivative) into every compiled copy of the simulator; this rule is a handful of
    operations, exact to rounding, and linear in the tangents (so reverse mode
    transposes it)."""
    q, h = primals
    dq, dh = tangents
    c, s = scaled_cosh_sinhc(q, h)
    small = jnp.abs(q) <= 1.0
    qs, qb = jnp.where(small, q, 0.0), jnp.where(small, 1.0, q)
    ds_dq = jnp.where(small, jnp.exp(h) * _horner(_SINHC_PRIME_SERIES, qs),
                      (c - s) / (2.0 * qb))
    return (c, s), (0.5 * s * dq + c * dh, ds_dq * dq + s * dh)


def expm2(M: Float[Array, "*b 2 2"]) -> Float[Array, "*b 2 2"]:
    """The matrix exponential of (a batch of) real 2 x 2 matrices, in closed form.

    With h = tr(M) / 2 and N = M - h I (trace-free, so N^2 = q I with
    q = N_00^2 + N_01 N_10, the squared half-gap of the eigenvalues),
    exp(M) = e^h (cosh(sqrt q) I + sinh(sqrt q) / sqrt q N), evaluated by
    :func:`scaled_cosh_sinhc`. Exact to rounding (no Pade approximant, no scaling and
    squaring), elementwise over the batch (cheap under vmap), and differentiable to
    any order in both modes, including at q = 0 (critical damping)."""
    h = 0.5 * (M[..., 0, 0] + M[..., 1, 1])
    n00, n01, n10 = M[..., 0, 0] - h, M[..., 0, 1], M[..., 1, 0]
    c, s = scaled_cosh_sinhc(n00 * n00 + n01 * n10, h)
    row0 = jnp.stack([c + s * n00, s * n01], axis=-1)
    row1 = jnp.stack([s * n10, c - s * n00], axis=-1)
    return jnp.stack([row0, row1], axis=-2)


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
