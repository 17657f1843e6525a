"""Forward simulators against closed forms, convergence orders and adjoint identities."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from problem_table import FIDELITIES, central_difference_orders, problem

from invphys.physics.heat1d import Heat1D
from invphys.physics.oscillator import Oscillator


def _x(name, seed=0):
    return problem(name).sample(jax.random.key(seed), 1)[0]


# ------------------------------------------------------------------ Heat-1D
def test_heat_paper_equals_numpy_fd_recurrence():
    p = problem("heat1d", "paper")
    x = np.asarray(_x("heat1d"))
    u = x.copy()
    for _ in range(200):
        u[1:-1] += 0.45 * (u[2:] - 2 * u[1:-1] + u[:-2])
        u[0] = u[-1] = 0.0
    np.testing.assert_allclose(np.asarray(p.forward(jnp.asarray(x))), u, rtol=0, atol=1e-12)


@pytest.mark.parametrize("steps", [100, 150])
def test_heat_paper_steps_configurable(steps):
    p = problem("heat1d", "paper", **{"physics.steps": steps})
    x = np.asarray(_x("heat1d", 1))
    u = x.copy()
    for _ in range(steps):
        u[1:-1] += 0.45 * (u[2:] - 2 * u[1:-1] + u[:-2])
    np.testing.assert_allclose(np.asarray(p.forward(jnp.asarray(x))), u, atol=1e-12)


@pytest.mark.parametrize("fidelity", ["accurate", "adaptive"])
def test_heat_accurate_matches_semidiscrete_modal_solution(fidelity):
    """Sine modes are eigenvectors of the Dirichlet discrete Laplacian: exact decay."""
    n, kappa = 64, 1.0
    dx = 1.0 / (n - 1)
    T = 200 * 0.45 * dx**2 / kappa
    p = problem("heat1d", fidelity)
    grid = np.linspace(0.0, 1.0, n)
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 0.5, 12)
    k = np.arange(1, 13)
    modes = np.sin(np.pi * k[:, None] * grid[None, :])
    lam = (4.0 / dx**2) * np.sin(k * np.pi * dx / 2) ** 2
    x0 = a @ modes
    x0[0] = x0[-1] = 0.0
    exact = (a * np.exp(-kappa * lam * T)) @ modes
    exact[0] = exact[-1] = 0.0
    got = np.asarray(p.forward(jnp.asarray(x0)))
    rel = np.linalg.norm(got - exact) / np.linalg.norm(exact)
    assert rel < 1e-8, rel


def test_heat_paper_is_linear_and_jvp_exact():
    """Paper Heat is a fixed linear recurrence: F(x + h v) - F(x) = h J v up to rounding."""
    p = problem("heat1d", "paper")
    x = _x("heat1d", 2)
    v = p.project(jax.random.normal(jax.random.key(3), x.shape))
    _, jv = jax.jvp(p.forward, (x,), (v,))
    for h in (1e-3, 1.0):
        diff = (p.forward(x + h * v) - p.forward(x)) / h
        assert float(jnp.linalg.norm(diff - jv)) <= 1e-12 * float(jnp.linalg.norm(x)) / h


@pytest.mark.parametrize("fidelity", ["accurate", "adaptive"])
def test_heat_accurate_jvp_equals_matrix_exponential(fidelity):
    """The accurate JVP is exp(T kappa/dx^2 L) v, L the Dirichlet Laplacian (any v)."""
    import scipy.linalg

    n = 64
    dx = 1.0 / (n - 1)
    T = 200 * 0.45 * dx**2
    L = (np.diag(-2.0 * np.ones(n - 2)) + np.diag(np.ones(n - 3), 1)
         + np.diag(np.ones(n - 3), -1)) / dx**2
    E = scipy.linalg.expm(T * L)
    p = problem("heat1d", fidelity)
    x = _x("heat1d", 2)
    v = p.project(jax.random.normal(jax.random.key(3), x.shape))
    _, jv = jax.jvp(p.forward, (x,), (v,))
    exact = np.pad(E @ np.asarray(v[1:-1]), 1)
    assert np.linalg.norm(np.asarray(jv) - exact) <= 1e-8 * np.linalg.norm(exact)


# -------------------------------------------------------------- oscillator
def _closed_form(m, c, k, x0, v0, t):
    """x(t) of m x'' + c x' + k x = 0 in the three damping regimes."""
    gamma = c / (2 * m)
    w0sq = k / m
    disc = gamma**2 - w0sq
    if abs(disc) < 1e-14:
        return np.exp(-gamma * t) * (x0 + (v0 + gamma * x0) * t)
    if disc < 0:
        wd = np.sqrt(-disc)
        return np.exp(-gamma * t) * (x0 * np.cos(wd * t) + (v0 + gamma * x0) / wd * np.sin(wd * t))
    r1, r2 = -gamma + np.sqrt(disc), -gamma - np.sqrt(disc)
    c2 = (v0 - r1 * x0) / (r2 - r1)
    c1 = x0 - c2
    return c1 * np.exp(r1 * t) + c2 * np.exp(r2 * t)


REGIMES = {
    "under": (1.0, 0.4, 4.0, 1.5, -0.5),
    "critical": (1.0, 2.0, 1.0, 1.0, 0.5),  # c^2 = 4 m k
    "over": (0.5, 1.0, 0.1, -1.0, 2.0),
}


@pytest.mark.parametrize("fidelity", ["accurate", "adaptive"])
@pytest.mark.parametrize("regime", REGIMES)
def test_oscillator_accurate_matches_closed_form(regime, fidelity):
    theta = REGIMES[regime]
    p = problem("oscillator", fidelity)
    t = np.linspace(0.0, 5.0, 64)
    got = np.asarray(p.fn(jnp.asarray(theta)))
    np.testing.assert_allclose(got, _closed_form(*theta, t), rtol=0, atol=1e-8)


def test_oscillator_adaptive_step_limit_gives_nan_not_an_exception():
    """An optimiser may try a stiff, unphysical theta: the adaptive loop then runs out of
    steps. The simulator must return NaN (a rejected trial), inside jit and vmap too,
    and leave the physical members of a batch untouched."""
    p = problem("oscillator", "adaptive")
    # m = 1e-6, k = 5: omega ~ 2236 rad/s, ~1800 periods in [0, 5] > 512 steps
    stiff = jnp.array([1e-6, 0.0, 5.0, 1.0, 0.0])
    good = jnp.asarray(REGIMES["under"])
    out = np.asarray(jax.jit(jax.vmap(p.fn))(jnp.stack([stiff, good])))
    assert np.all(np.isnan(out[0]))
    t = np.linspace(0.0, 5.0, 64)
    np.testing.assert_allclose(out[1], _closed_form(*REGIMES["under"], t), rtol=0, atol=1e-8)


def test_oscillator_rk4_is_fourth_order():
    theta = REGIMES["under"]
    errs = []
    for n_obs in (33, 65, 129):  # the step (= sample spacing) halves each time
        f = Oscillator(n_obs=n_obs, t_final=5.0, fidelity="paper", rtol=0.0, atol=0.0, max_steps=0)
        got = np.asarray(f(jnp.asarray(theta)))
        t = np.linspace(0.0, 5.0, n_obs)
        errs.append(np.max(np.abs(got - _closed_form(*theta, t))))
    orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    # asymptotic order 4: the observed order approaches 4 as h -> 0
    assert abs(orders[-1] - 4.0) < 0.1, orders
    assert abs(orders[0] - 4.0) < 0.3, orders


def test_oscillator_jvp_accurate_at_zero_trajectory_start():
    """At x0 = v0 = 0 the trajectory is 0; d/dx0 and d/dv0 must still be right."""
    theta = jnp.array([1.25, 0.5, 2.75, 0.0, 0.0])  # the paper's start (box midpoint)
    t = np.linspace(0.0, 5.0, 64)
    m, c, k = 1.25, 0.5, 2.75
    for fid in ("paper", "accurate", "adaptive"):
        p = problem("oscillator", fid)
        J = np.asarray(jax.jacfwd(p.fn)(theta))
        # the model is linear in (x0, v0): those columns are the closed-form responses
        tol = 1e-3 if fid == "paper" else 1e-8  # RK4 at h = 5/63: O(h^4) ~ 4e-5
        np.testing.assert_allclose(J[:, 3], _closed_form(m, c, k, 1.0, 0.0, t), atol=tol)
        np.testing.assert_allclose(J[:, 4], _closed_form(m, c, k, 0.0, 1.0, t), atol=tol)
        np.testing.assert_allclose(J[:, :3], 0.0, atol=1e-14)


@pytest.mark.parametrize("fidelity", ["paper", "accurate", "adaptive"])
def test_oscillator_jvp_taylor_slope(fidelity):
    """Central differences converge to the JVP at O(h^2): halving h quarters the error."""
    p = problem("oscillator", fidelity)
    x = jnp.array([1.1, 0.3, 2.0, 0.7, -0.4])
    v = jnp.array([0.3, -0.2, 0.5, 0.4, 0.1])
    slopes = central_difference_orders(p.fn, x, v, (4e-2, 2e-2, 1e-2))
    np.testing.assert_allclose(slopes, 2.0, atol=0.15)


# ------------------------------------------------------------ both problems
@pytest.mark.parametrize("name,fidelity", FIDELITIES)
def test_adjoint_identity(name, fidelity):
    """<J v, w> = <v, J^T w> for the JVP and the VJP of the same forward map."""
    p = problem(name, fidelity)
    x = _x(name, 4)
    kv, kw = jax.random.split(jax.random.key(5))
    v = jax.random.normal(kv, x.shape)
    y, jv = jax.jvp(p.fn, (x,), (v,))
    w = jax.random.normal(kw, y.shape)
    (jtw,) = jax.vjp(p.fn, x)[1](w)
    lhs, rhs = float(jnp.vdot(jv, w)), float(jnp.vdot(v, jtw))
    norm = jnp.linalg.norm
    scale = float(norm(jv) * norm(w) + norm(v) * norm(jtw))
    assert abs(lhs - rhs) <= 1e-12 * scale


@pytest.mark.parametrize("name,fidelity", FIDELITIES)
def test_vmap_equals_loop(name, fidelity):
    p = problem(name, fidelity)
    xs = p.sample(jax.random.key(6), 3)
    batched = jax.vmap(p.forward)(xs)
    looped = jnp.stack([p.forward(x) for x in xs])
    np.testing.assert_allclose(batched, looped, rtol=1e-13, atol=1e-13)


def test_jit_does_not_retrace():
    traces = []

    @eqx.filter_jit
    def run(prob, x):
        traces.append(1)
        return prob.forward(x)

    import invphys

    for seed in range(3):
        # a freshly built problem with the same spec hashes equal: no retrace
        prob = invphys.load_problem("oscillator")
        run(prob, prob.sample(jax.random.key(seed), 1)[0])
    assert len(traces) == 1


def test_heat_forward_module_is_hashable_static():
    a = Heat1D(n=8, fidelity="paper", steps=3, s=0.45, kappa=1.0, T=1.0, solver="tsit5",
               rtol=1e-8, atol=1e-8, max_steps=16)
    b = Heat1D(n=8, fidelity="paper", steps=3, s=0.45, kappa=1.0, T=1.0, solver="tsit5",
               rtol=1e-8, atol=1e-8, max_steps=16)
    assert hash(jax.tree_util.tree_structure(a)) == hash(jax.tree_util.tree_structure(b))


# ------------------------------------------------------------ identifiable combinations
def test_oscillator_identifiable_combinations():
    from invphys.physics import REGISTRY, oscillator

    p = problem("oscillator")
    assert p.identifiable is oscillator.identifiable
    assert REGISTRY["oscillator"].identifiable is oscillator.identifiable
    assert problem("heat1d").identifiable is None
    theta = np.array([[2.0, 1.0, 8.0, 0.5, -0.2]])
    q, names = p.identifiable(theta)
    assert names == ("c/m", "k/m", "x0", "v0")
    np.testing.assert_array_equal(q, [[0.5, 4.0, 0.5, -0.2]])
    # scaling (m, c, k) together leaves x(t) and the identifiable values unchanged
    scaled = theta * np.array([3.0, 3.0, 3.0, 1.0, 1.0])
    np.testing.assert_allclose(p.identifiable(scaled)[0], q, rtol=1e-15)
    np.testing.assert_allclose(p.forward(jnp.asarray(scaled[0])),
                               p.forward(jnp.asarray(theta[0])), rtol=1e-9, atol=1e-12)
