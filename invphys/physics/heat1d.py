"""Heat-1D initial-condition recovery: the semi-discrete heat equation.

Method of lines on ``linspace(0, 1, n)`` with Dirichlet (pinned, zero) endpoints:
``u' = kappa / dx^2 * (u[i+1] - 2 u[i] + u[i-1])`` on the interior. Time is measured in
``tau = kappa t / dx^2`` so the vector field is the plain discrete Laplacian L, and

* *paper* fidelity takes ``steps`` explicit-Euler steps of size ``s`` in tau: one step
  is exactly the paper's update ``u[1:-1] += s (u[2:] - 2 u[1:-1] + u[:-2])``
  (a scan of the literal scheme; see ``paper_form`` for its one-matrix equivalent);
* *accurate* fidelity: the exact flow of the same system to physical time ``T``
  (default: the paper's ``steps * s * dx^2 / kappa``). L is diagonalised by the
  orthonormal discrete sine transform (DST-I) S, with eigenvalues
  ``-4 sin^2(pi k / (2 (n - 1)))``, so u(T) = S diag(exp(lambda tau)) S^T u0: exact to
  rounding, with no stability limit and no step size (see :func:`propagator`);
* *adaptive* fidelity (what *accurate* meant before the exact flow): a diffrax solver
  (``solver``) with tight tolerances to the same T, kept for comparison and for users
  who want an integrator in the loop. ``solver``, ``rtol``, ``atol``, ``max_steps`` and
  ``dtmax`` apply to it only.

x is the full initial state (n values); its endpoints are pinned to 0 by the constraint
set, and the forward map reads only the interior (the boundary condition holds them at
0), so the observed endpoints carry noise only.
"""

from __future__ import annotations

import functools

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._errors import SpecError
from .._problem import Problem
from .._spec import Key, Spec, nonnegative, positive
from ._ode import SOLVERS, adaptive_grid, grid_solve
from ._registry import register

SCHEMA = {
    "physics": {
        "n": Key(int, default=64, check=lambda v: None if v >= 3 else "must be >= 3"),
        "fidelity": Key(str, default="paper", choices=("paper", "accurate", "adaptive"),
                        doc="paper: explicit FD steps; accurate: the exact flow to T "
                            "(sine transform); adaptive: a diffrax solver to T"),
        "paper_form": Key(str, default="steps", choices=("steps", "matrix"),
                          doc="paper: 'steps' runs the explicit scheme step by step; "
                              "'matrix' applies its product S diag((1 + s lambda)^steps) "
                              "S^T in one mat-vec (the same map; rounding differs)"),
        "steps": Key(int, default=200, check=positive, doc="paper: number of FD steps"),
        "s": Key(float, default=0.45, check=positive,
                 doc="paper: kappa dt / dx^2 of one explicit step (stable only for "
                     "s <= 0.5)"),
        "kappa": Key(float, default=1.0, check=positive),
        "T": Key(float, default=None, check=positive,
                 doc="accurate, adaptive: final time (default steps * s * dx^2 / kappa)"),
        "solver": Key(str, default="tsit5", choices=tuple(SOLVERS)),
        "rtol": Key(float, default=1e-10, check=positive),
        "atol": Key(float, default=1e-12, check=positive),
        "max_steps": Key(int, default=512, check=positive),
        "dtmax": Key(float, default=None, check=positive,
                     doc="adaptive: largest step in tau = kappa t / dx^2 units "
                         "(default 0.6 for explicit solvers: stability, see Heat1D)"),
    },
    "prior": {
        "n_modes": Key(int, default=12, check=positive),
        "amp_std": Key(float, default=0.5, check=nonnegative),
        "clip": Key(float, default=3.0, check=positive),
    },
}


def laplacian_dirichlet(u: Float[Array, " k"]) -> Float[Array, " k"]:
    """Discrete Laplacian (no 1/dx^2) of interior values with zero boundary values."""
    up = jnp.pad(u, 1)
    return up[2:] - 2.0 * up[1:-1] + up[:-2]


#: Interior sizes up to which the propagator is one dense matrix (a mat-vec: a GEMM
#: under vmap, the fastest form at the paper's sizes); above it, two sine transforms by
#: FFT (O(n log n) per solve and no n x n constant in the compiled program).
DENSE_MAX = 512


def laplacian_eigenvalues(k: int) -> np.ndarray:
    """Eigenvalues of the Dirichlet discrete Laplacian on ``k`` interior points (no
    1/dx^2): ``-4 sin^2(pi j / (2 (k + 1)))``, j = 1..k, for the DST-I eigenvectors
    ``sin(pi i j / (k + 1))``."""
    j = np.arange(1, k + 1)
    return -4.0 * np.sin(np.pi * j / (2.0 * (k + 1))) ** 2


def _decay(k: int, kind: str, tau: float, s: float, steps: int) -> np.ndarray:
    lam = laplacian_eigenvalues(k)
    if kind == "exp":  # the exact flow over tau
        return np.exp(lam * tau)
    return (1.0 + s * lam) ** steps  # `steps` explicit Euler steps of size s


@functools.lru_cache(maxsize=16)
def _dense_propagator(k: int, kind: str, tau: float, s: float, steps: int) -> np.ndarray:
    """S diag(decay) S^T (float64, symmetric) from the orthonormal DST-I matrix S."""
    j = np.arange(1, k + 1)
    S = np.sqrt(2.0 / (k + 1)) * np.sin(np.pi * np.outer(j, j) / (k + 1))
    P = (S * _decay(k, kind, tau, s, steps)) @ S.T
    P.setflags(write=False)
    return P


def dst1(u: Float[Array, " k"]) -> Float[Array, " k"]:
    """The orthonormal DST-I of ``u`` (its own inverse), by one real FFT of the odd
    extension ``[0, u, 0, -u reversed]``: sum_i u_i sin(pi i j / (k + 1)) is minus half
    the imaginary part of its DFT at j."""
    k = u.shape[-1]
    z = jnp.zeros((1,), u.dtype)
    v = jnp.concatenate([z, u, z, -u[::-1]])
    return -jnp.fft.rfft(v)[1:k + 1].imag * np.sqrt(0.5 / (k + 1))


def propagator(u0: Float[Array, " k"], kind: str, tau: float = 0.0, s: float = 0.0,
               steps: int = 0) -> Float[Array, " k"]:
    """S diag(d) S^T u0 for the Dirichlet Laplacian's eigenbasis S: the exact flow
    ``d = exp(lambda tau)`` (``kind="exp"``) or ``steps`` explicit Euler steps of size
    s, ``d = (1 + s lambda)^steps`` (``kind="euler"``; the same linear map as the
    literal scheme). Linear in u0 with a symmetric operator, so its JVP is the same
    map and its VJP too: the adjoint identity holds to rounding."""
    k = u0.shape[-1]
    if k <= DENSE_MAX:
        P = _dense_propagator(k, kind, float(tau), float(s), int(steps))
        return jnp.asarray(P, u0.dtype) @ u0
    d = jnp.asarray(_decay(k, kind, float(tau), float(s), int(steps)), u0.dtype)
    return dst1(d * dst1(u0))


class Heat1D(eqx.Module):
    """The Heat-1D forward map x (initial state, n values) -> final state (n values)."""

    n: int = eqx.field(static=True)
    fidelity: str = eqx.field(static=True)
    steps: int = eqx.field(static=True)
    s: float = eqx.field(static=True)
    kappa: float = eqx.field(static=True)
    T: float = eqx.field(static=True)
    solver: str = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    dtmax: float | None = eqx.field(static=True, default=None)
    paper_form: str = eqx.field(static=True, default="steps")

    @property
    def dx(self) -> float:
        return 1.0 / (self.n - 1)

    @property
    def tau_final(self) -> float:
        """Final time in tau units (kappa t / dx^2)."""
        if self.fidelity == "paper":
            return self.steps * self.s
        return self.kappa * self.T / self.dx**2

    def _dtmax(self) -> float | None:
        """Cap on the step (tau units). The discrete Laplacian's eigenvalues reach -4,
        and an explicit solver is stable only for |lambda dt| below ~3 (Tsit5: ~3.5).
        An error controller tuned on a smooth solution happily takes steps beyond that,
        which is harmless for the primal (the unstable modes are absent) but amplifies
        those modes in every JVP/VJP direction. The cap keeps derivatives exact."""
        if self.dtmax is not None:
            return self.dtmax
        return None if self.solver == "kvaerno5" else 0.6

    def __call__(self, x: Float[Array, " n"]) -> Float[Array, " n"]:
        term = diffrax.ODETerm(lambda t, u, args: laplacian_dirichlet(u))
        u0 = x[1:-1]
        if self.fidelity == "accurate":
            u1 = propagator(u0, "exp", tau=self.tau_final)
        elif self.fidelity == "paper" and self.paper_form == "matrix":
            u1 = propagator(u0, "euler", s=self.s, steps=self.steps)
        elif self.fidelity == "paper":
            ts = self.s * jnp.arange(self.steps + 1, dtype=u0.dtype)
            u1 = grid_solve(term, diffrax.Euler(), ts, u0)
        else:
            solver = SOLVERS[self.solver]()
            ctrl = diffrax.PIDController(rtol=self.rtol, atol=self.atol, dtmax=self._dtmax())
            ts = adaptive_grid(term, solver, 0.0, self.tau_final, u0, None, ctrl,
                               self.max_steps)
            u1 = grid_solve(term, solver, ts, u0)
        return jnp.pad(u1, 1)


class SineSeriesPrior(eqx.Module):
    """u0 = sum_k a_k sin(pi k x), a_k ~ N(0, amp_std^2), clipped, endpoints exactly 0."""

    n: int = eqx.field(static=True)
    n_modes: int = eqx.field(static=True)
    amp_std: float = eqx.field(static=True)
    clip: float = eqx.field(static=True)

    def __call__(self, key: PRNGKeyArray, count: int) -> Float[Array, "count n"]:
        grid = jnp.linspace(0.0, 1.0, self.n)
        k = jnp.arange(1, self.n_modes + 1)
        basis = jnp.sin(jnp.pi * k[:, None] * grid[None, :])
        a = self.amp_std * jax.random.normal(key, (count, self.n_modes))
        u = jnp.clip(a @ basis, -self.clip, self.clip)
        return u.at[:, 0].set(0.0).at[:, -1].set(0.0)


#: The explicit (forward Euler) scheme's stability limit on s = kappa dt / dx^2: the
#: discrete Laplacian's eigenvalues reach -4, so one step multiplies a mode by 1 - 4 s,
#: whose magnitude exceeds 1 once s > 1/2.
S_STABLE_MAX = 0.5


def check_stability(spec: Spec) -> None:
    """Raise :class:`SpecError` when the paper fidelity's explicit step is unstable."""
    ph = spec["physics"]
    if ph["fidelity"] == "paper" and ph["s"] > S_STABLE_MAX:
        raise SpecError(
            f"{spec.source}: key 'physics.s' = {ph['s']} makes the explicit paper scheme "
            f"unstable: s = kappa dt / dx^2 must be <= {S_STABLE_MAX} (the stability limit "
            "of explicit Euler for the heat equation); lower s and raise steps, or use "
            "fidelity = \"accurate\"")


def build(spec: Spec) -> Problem:
    check_stability(spec)
    ph, pr, b = spec["physics"], spec["prior"], spec["bounds"]
    n = ph["n"]
    T = ph["T"] if ph["T"] is not None else ph["steps"] * ph["s"] / (n - 1) ** 2 / ph["kappa"]
    fwd = Heat1D(
        n=n, fidelity=ph["fidelity"], steps=ph["steps"], s=ph["s"], kappa=ph["kappa"],
        T=T, solver=ph["solver"], rtol=ph["rtol"], atol=ph["atol"],
        max_steps=ph["max_steps"], dtmax=ph["dtmax"], paper_form=ph["paper_form"],
    )
    prior = SineSeriesPrior(n=n, n_modes=pr["n_modes"], amp_std=pr["amp_std"],
                            clip=pr["clip"])
    return Problem(
        fwd, b["lower"], b["upper"], x_size=n, pinned=b["pin"], pin_value=b["pin_value"],
        sampler=prior, noise=spec["noise"]["std"], x0=spec["solve"]["x0"],
        name=spec.name, spec=spec,
    )


register("heat1d", SCHEMA, build)
