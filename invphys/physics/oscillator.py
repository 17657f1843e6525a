"""Damped-oscillator parameter recovery: m x'' + c x' + k x = 0.

Unknown theta = (m, c, k, x0, v0); observation x(t) at ``n_obs`` equally spaced times
on [0, t_final].

* *paper* fidelity: classical RK4 with one step per sample spacing (as the reference);
* *accurate* fidelity: the exact flow. The state (x, v) obeys the linear, autonomous
  system (x, v)' = A (x, v) with A = [[0, 1], [-k/m, -c/m]], so the flow over one
  sample spacing is the matrix exponential E = exp(A dt) (the closed-form 2 x 2
  exponential :func:`~invphys.physics._ode.expm2`) and (x, v)(t_{i+1}) =
  E (x, v)(t_i): exact to rounding in all three damping regimes and smooth through
  critical damping (the repeated eigenvalue). No step sizes, so nothing to choose,
  freeze, or re-choose as a solver moves theta; the derivatives are those of the
  exact solution in both modes (JVP and VJP exact transposes); one 2 x 2 mat-vec per
  sample (:func:`exact_positions`); and the compiled program is a short scan instead
  of an adaptive loop inside every JVP;
* *adaptive* fidelity (what *accurate* meant before the exact flow): diffrax's Tsit5
  with tight tolerances and the step capped at the sample spacing (``dtmax``), steps
  landing on every sample (``step_ts``), replayed on a frozen grid. Kept for
  comparison and for users who want a general-purpose integrator in the loop. The cap
  matters: at theta with x0 = v0 = 0 the trajectory is identically zero, the error
  controller would cross [0, t_final] in ~3 steps, and the forward-mode derivatives
  (which ride on the same steps) come out wrong. ``rtol``, ``atol`` and
  ``max_steps`` apply to this fidelity only.

Only (c/m, k/m, x0, v0) are identifiable from x(t): scaling (m, c, k) together leaves
the trajectory unchanged.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._errors import SpecError
from .._problem import Problem
from .._spec import Key, Spec, positive
from ._ode import RK4, adaptive_grid, expm2, grid_solve
from ._registry import register

PARAMS = ("m", "c", "k", "x0", "v0")

SCHEMA = {
    "physics": {
        "n_obs": Key(int, default=64, check=lambda v: None if v >= 2 else "must be >= 2"),
        "t_final": Key(float, default=5.0, check=positive),
        "fidelity": Key(str, default="paper", choices=("paper", "accurate", "adaptive"),
                        doc="paper: RK4 at the sample spacing; accurate: the exact flow "
                            "(matrix exponential); adaptive: Tsit5 (rtol, atol, max_steps)"),
        "rtol": Key(float, default=1e-10, check=positive),
        "atol": Key(float, default=1e-12, check=positive),
        "max_steps": Key(int, default=512, check=positive),
    },
    "prior": {
        "kind": Key(str, default="uniform_box", choices=("uniform_box",)),
    },
}


def _vector_field(t, state, theta):
    m, c, k = theta[0], theta[1], theta[2]
    pos, vel = state[0], state[1]
    return jnp.stack([vel, -(c * vel + k * pos) / m])


def exact_positions(theta: Float[Array, " 5"], n_obs: int, t_final: float
                    ) -> Float[Array, " n_obs"]:
    """x(t) at ``n_obs`` equally spaced times on [0, t_final] by the exact flow.

    One exponential E = exp(A dt) over the sample spacing dt (the closed form
    :func:`~invphys.physics._ode.expm2`, A = [[0, 1], [-k/m, -c/m]]), then a scan of
    2 x 2 mat-vecs, state(t_{i+1}) = E state(t_i): every step lands on a sample by
    construction. The transcendental functions are evaluated once per problem rather
    than once per sample (an exponential per sample time would cost several
    transcendental evaluations per sample and per derivative), and the scan's JVP and
    VJP add one mat-vec per step: one mat-vec per step against RK4's four stages.
    Rounding accumulates over the n_obs - 1 products, to ~n_obs ulp of the state's
    scale, far inside the 1e-8 contract."""
    m, c, k = theta[0], theta[1], theta[2]
    zero, one = jnp.zeros_like(m), jnp.ones_like(m)
    A = jnp.stack([jnp.stack([zero, one]), jnp.stack([-k / m, -c / m])])
    E = expm2(A * (t_final / (n_obs - 1)))

    def step(y, _):
        y1 = E @ y
        return y1, y1[0]

    _, xs = jax.lax.scan(step, theta[3:5], None, length=n_obs - 1)
    return jnp.concatenate([theta[3:4], xs])


class Oscillator(eqx.Module):
    """The oscillator forward map theta (5,) -> x(t) at n_obs times."""

    n_obs: int = eqx.field(static=True)
    t_final: float = eqx.field(static=True)
    fidelity: str = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)

    def __call__(self, theta: Float[Array, " 5"]) -> Float[Array, " n_obs"]:
        ts = jnp.linspace(0.0, self.t_final, self.n_obs, dtype=theta.dtype)
        y0 = theta[3:5]
        if self.fidelity == "accurate":
            return exact_positions(theta, self.n_obs, self.t_final)
        term = diffrax.ODETerm(_vector_field)
        if self.fidelity == "paper":
            return grid_solve(term, RK4(), ts, y0, theta, save_all=True)[:, 0]
        # adaptive steps that land exactly on every sample time (step_ts), capped at
        # the sample spacing (dtmax), replayed on a frozen grid
        dt = self.t_final / (self.n_obs - 1)
        ctrl = diffrax.ClipStepSizeController(
            diffrax.PIDController(rtol=self.rtol, atol=self.atol, dtmax=dt), step_ts=ts
        )
        solver = diffrax.Tsit5()
        grid = adaptive_grid(term, solver, ts[0], ts[-1], y0, theta, ctrl, self.max_steps)
        states = grid_solve(term, solver, grid, y0, theta, save_all=True)
        # the grid steps onto every sample time (to rounding): take the nearest entry
        idx = jnp.argmin(jnp.abs(grid[None, :] - ts[:, None]), axis=1)
        return states[idx, 0]


class UniformBoxPrior(eqx.Module):
    """theta ~ uniform on the box [lower, upper]."""

    lower: Float[Array, " n"]
    upper: Float[Array, " n"]

    def __call__(self, key: PRNGKeyArray, count: int) -> Float[Array, "count n"]:
        u = jax.random.uniform(key, (count, self.lower.shape[0]), dtype=self.lower.dtype)
        return self.lower + u * (self.upper - self.lower)


def build(spec: Spec) -> Problem:
    ph, b = spec["physics"], spec["bounds"]
    fwd = Oscillator(
        n_obs=ph["n_obs"], t_final=ph["t_final"], fidelity=ph["fidelity"],
        rtol=ph["rtol"], atol=ph["atol"], max_steps=ph["max_steps"],
    )
    if b["lower"] is None or b["upper"] is None:
        raise SpecError(f"{spec.source}: the oscillator needs 'bounds.lower' and 'bounds.upper'")
    lower = jnp.broadcast_to(jnp.asarray(b["lower"], float), (5,))
    upper = jnp.broadcast_to(jnp.asarray(b["upper"], float), (5,))
    return Problem(
        fwd, lower, upper, x_size=5, pinned=b["pin"] or None, pin_value=b["pin_value"],
        sampler=UniformBoxPrior(lower, upper), noise=spec["noise"]["std"],
        x0=spec["solve"]["x0"], name=spec.name, spec=spec, identifiable=identifiable,
    )


def identifiable(x: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """(c/m, k/m, x0, v0) from theta = (m, c, k, x0, v0), a batch ``(K, 5)``.

    x(t) depends on theta only through these: scaling (m, c, k) together leaves it
    unchanged, so a recovered theta is scored on them.
    """
    x = np.asarray(x, np.float64)
    q = np.stack([x[:, 1] / x[:, 0], x[:, 2] / x[:, 0], x[:, 3], x[:, 4]], axis=1)
    return q, ("c/m", "k/m", "x0", "v0")


register("oscillator", SCHEMA, build, identifiable=identifiable)
