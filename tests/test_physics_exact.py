"""The exact linear flows behind the *accurate* fidelities, against independent
references: a long-double Taylor exponential, scipy's Frechet derivative, the adaptive
integrator (the *adaptive* fidelity), the literal explicit scheme.

The assumptions the exact flows add, each tested here: the closed-form 2 x 2 exponential
is right in all three branches of its discriminant and continuous (with its
derivatives) across the branch switches, including critical damping (q = 0); the heat
propagator's dense and FFT forms are the same map; the paper scheme's one-matrix form
equals the literal steps.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from problem_table import central_difference_orders, problem

import invphys
from invphys.physics import heat1d
from invphys.physics._ode import expm2, scaled_cosh_sinhc


def _expm_longdouble(m: np.ndarray) -> np.ndarray:
    """exp(m) by scaling, a 40-term Taylor sum and squaring in long double: a reference
    independent of the closed form (and of scipy's Pade approximant)."""
    m = m.astype(np.longdouble)
    s = max(0, int(np.ceil(np.log2(max(float(np.abs(m).sum()), 1e-300)))) + 4)
    a = m / np.longdouble(2) ** s
    out, term = np.eye(2, dtype=np.longdouble), np.eye(2, dtype=np.longdouble)
    for j in range(1, 40):
        term = term @ a / j
        out = out + term
    for _ in range(s):
        out = out @ out
    return out


def _matrix_with_q(h, q, n00, n01):
    """A 2 x 2 matrix with half-trace h and discriminant q = n00^2 + n01 n10."""
    n10 = (q - n00**2) / n01
    return np.array([[h + n00, n01], [n10, h - n00]])


# ------------------------------------------------------------- the 2 x 2 exponential
@pytest.mark.parametrize("scale", [1e-3, 1.0, 4.0, 15.0])
def test_expm2_matches_longdouble_reference(scale):
    rng = np.random.default_rng(int(scale * 1000))
    Ms = rng.normal(size=(200, 2, 2)) * scale
    got = np.asarray(expm2(jnp.asarray(Ms)))
    ref = np.stack([_expm_longdouble(m) for m in Ms]).astype(np.float64)
    rel = np.abs(got - ref).max(axis=(1, 2)) / np.abs(ref).max(axis=(1, 2))
    # the exponential's condition number grows with the norm (~ ||M|| ulp)
    assert rel.max() <= 4 * np.finfo(float).eps * max(1.0, 4 * scale), rel.max()


@pytest.mark.parametrize("q", [0.0, 1e-300, -1e-12, 1e-12, 1.0, -1.0, 1 + 1e-15, -1 - 1e-15,
                               0.5, -3.0, 50.0, -400.0])
def test_expm2_each_branch_and_its_edges(q):
    """The three branches (series |q| <= 1, cos/sin below, exponentials above) and the
    switches between them, against the long-double reference."""
    M = _matrix_with_q(-0.3, q, 0.2, 0.7)
    got = np.asarray(expm2(jnp.asarray(M)))
    ref = _expm_longdouble(M).astype(np.float64)
    np.testing.assert_allclose(got, ref, rtol=0, atol=8 * np.finfo(float).eps * np.abs(ref).max())


def test_scaled_cosh_sinhc_continuous_across_branch_switches():
    """Values and first derivatives in q agree on both sides of |q| = 1 (the series and
    the transcendental forms describe the same entire functions)."""
    h = jnp.asarray(0.1)
    for edge in (1.0, -1.0):
        lo, hi = jnp.nextafter(edge, 0.0), jnp.nextafter(edge, 2 * edge)
        for out in (0, 1):
            f = lambda q, out=out: scaled_cosh_sinhc(q, h)[out]
            assert abs(float(f(lo) - f(hi))) <= 4e-16
            assert abs(float(jax.grad(f)(lo) - jax.grad(f)(hi))) <= 1e-15


@pytest.mark.parametrize("q", [0.0, 0.7, -0.7, 1.0, 3.0, -3.0, -30.0])
def test_scaled_cosh_sinhc_derivatives_against_their_series_and_differences(q):
    """The hand-written tangent rule, first and second order: d/dq of e^h cosh(sqrt q)
    and e^h sinh(sqrt q) / sqrt q against central differences of the values (first
    order) and of the first derivatives (second order), in every branch."""
    h, step = 0.2, 1e-5
    qq = jnp.asarray(q)
    for out in (0, 1):
        f = lambda q, out=out: scaled_cosh_sinhc(q, jnp.asarray(h))[out]  # noqa: E731
        d1, d2 = jax.grad(f), jax.grad(jax.grad(f))
        fd1 = (f(qq + step) - f(qq - step)) / (2 * step)
        fd2 = (d1(qq + step) - d1(qq - step)) / (2 * step)
        # central differences: O(step^2) truncation plus O(eps / step) rounding
        assert abs(float(d1(qq) - fd1)) <= 1e-9 * max(1.0, abs(float(fd1)))
        assert abs(float(d2(qq) - fd2)) <= 1e-8 * max(1.0, abs(float(fd2)))
        dh = jax.grad(lambda hh, out=out: scaled_cosh_sinhc(qq, hh)[out])(jnp.asarray(h))
        np.testing.assert_allclose(float(dh), float(f(qq)), rtol=1e-15)


def test_expm2_frechet_derivative_at_and_near_repeated_eigenvalues():
    """The JVP of expm2 is the Frechet derivative (scipy's expm_frechet) at q = 0 exactly
    (a Jordan block: the oscillator at critical damping), just beside it, and in
    each branch; the VJP is its transpose to rounding."""
    import scipy.linalg

    rng = np.random.default_rng(0)
    for q in (0.0, 1e-14, -1e-14, 1e-7, -0.9, 2.0, -5.0):
        M = _matrix_with_q(-0.5, q, 0.3, 1.1)
        E = rng.normal(size=(2, 2))
        _, dE = jax.jvp(expm2, (jnp.asarray(M),), (jnp.asarray(E),))
        _, ref = scipy.linalg.expm_frechet(M, E)
        np.testing.assert_allclose(np.asarray(dE), ref, rtol=0, atol=1e-13)
        W = rng.normal(size=(2, 2))
        (ET_W,) = jax.vjp(expm2, jnp.asarray(M))[1](jnp.asarray(W))
        lhs, rhs = float(jnp.vdot(dE, W)), float(jnp.vdot(jnp.asarray(E), ET_W))
        assert abs(lhs - rhs) <= 1e-13 * (abs(lhs) + 1.0)
        assert np.all(np.isfinite(np.asarray(jax.hessian(lambda m: expm2(m)[0, 1])(
            jnp.asarray(M)))))


# ------------------------------------------------------------------------ oscillator
def _critical_theta(offset: float):
    """theta with c^2 - 4 m k = offset (critical damping at 0)."""
    m, k = 1.2, 0.8
    c = np.sqrt(4 * m * k + offset)
    return jnp.array([m, c, k, 0.9, -0.4])


@pytest.mark.parametrize("offset", [0.0, 1e-12, -1e-12, 1e-6, -1e-6])
def test_oscillator_exact_derivatives_near_critical_damping(offset):
    """Critical damping (repeated eigenvalue) is where a naive closed form divides by
    zero. There: the JVP matches central differences at O(h^2) (halving h quarters the
    error), and <J v, w> = <v, J^T w> to 1e-12."""
    p = problem("oscillator", "accurate")
    x = _critical_theta(offset)
    v = jnp.array([0.3, -0.2, 0.5, 0.4, 0.1])
    y, jv = jax.jvp(p.fn, (x,), (v,))
    assert np.all(np.isfinite(np.asarray(jv)))
    slopes = central_difference_orders(p.fn, x, v, (4e-3, 2e-3, 1e-3))
    np.testing.assert_allclose(slopes, 2.0, atol=0.15)
    w = jax.random.normal(jax.random.key(1), y.shape)
    (jtw,) = jax.vjp(p.fn, x)[1](w)
    lhs, rhs = float(jnp.vdot(jv, w)), float(jnp.vdot(v, jtw))
    norm = jnp.linalg.norm
    assert abs(lhs - rhs) <= 1e-12 * float(norm(jv) * norm(w) + norm(v) * norm(jtw))


def test_oscillator_exact_jacobian_agrees_with_adaptive_integration():
    """The exact flow against Tsit5 at rtol 1e-10 (the adaptive fidelity): trajectories
    and Jacobians, over prior samples in all damping regimes."""
    pa, pd = problem("oscillator", "accurate"), problem("oscillator", "adaptive")
    xs = pa.sample(jax.random.key(3), 16)
    xs = jnp.concatenate([xs, jnp.stack([_critical_theta(0.0), _critical_theta(0.3)])])
    np.testing.assert_allclose(jax.vmap(pa.fn)(xs), jax.vmap(pd.fn)(xs), rtol=0, atol=1e-8)
    Ja, Jd = jax.vmap(jax.jacfwd(pa.fn))(xs), jax.vmap(jax.jacfwd(pd.fn))(xs)
    np.testing.assert_allclose(Ja, Jd, rtol=0, atol=1e-7)


def test_oscillator_exact_flow_has_no_step_limit():
    """The stiff theta on which the adaptive loop runs out of steps (NaN there) is a
    plain fast oscillation for the exact flow: the closed form, to the rounding of a
    phase of ~1e4 radians."""
    p = problem("oscillator", "accurate")
    m, c, k, x0, v0 = 1e-6, 0.0, 5.0, 1.0, 0.0
    t = np.linspace(0.0, 5.0, 64)
    got = np.asarray(p.fn(jnp.array([m, c, k, x0, v0])))
    np.testing.assert_allclose(got, np.cos(np.sqrt(k / m) * t), rtol=0, atol=1e-10)


def test_old_accurate_specs_load_and_mean_the_exact_flow():
    """A spec written before the exact flow (fidelity = "accurate", with the integrator's
    tolerances) still loads; its simulator is the exact flow."""
    p = invphys.load_problem("oscillator", {"physics.fidelity": "accurate",
                                            "physics.rtol": 1e-9, "physics.max_steps": 64})
    assert p.fn.fidelity == "accurate"
    theta = jnp.array([1.0, 0.4, 4.0, 1.5, -0.5])
    np.testing.assert_allclose(p.fn(theta), problem("oscillator", "accurate").fn(theta),
                               rtol=0, atol=0)


# ---------------------------------------------------------------------------- heat
def test_heat_dense_and_fft_propagators_are_the_same_map():
    """Above DENSE_MAX interior points the propagator runs as two FFT sine transforms:
    the same map as the dense matrix (checked in NumPy at that size), JVP and VJP
    adjoint to rounding."""
    k = heat1d.DENSE_MAX + 37
    u = jax.random.normal(jax.random.key(0), (k,))
    tau = 7.5
    got = heat1d.propagator(u, "exp", tau=tau)
    j = np.arange(1, k + 1)
    S = np.sqrt(2.0 / (k + 1)) * np.sin(np.pi * np.outer(j, j) / (k + 1))
    np.testing.assert_allclose(S @ S.T, np.eye(k), atol=1e-12)  # the basis is orthonormal
    ref = (S * np.exp(heat1d.laplacian_eigenvalues(k) * tau)) @ (S.T @ np.asarray(u))
    np.testing.assert_allclose(np.asarray(got), ref, rtol=0, atol=1e-13)
    w = jax.random.normal(jax.random.key(1), (k,))
    f = lambda z: heat1d.propagator(z, "exp", tau=tau)  # noqa: E731
    _, jv = jax.jvp(f, (u,), (w,))
    (jtw,) = jax.vjp(f, u)[1](w)
    assert abs(float(jnp.vdot(jv, w) - jnp.vdot(w, jtw))) <= 1e-12 * float(jnp.vdot(w, w))


def test_heat_eigenpairs_are_those_of_the_discrete_laplacian():
    k = 10
    L = np.diag(-2.0 * np.ones(k)) + np.diag(np.ones(k - 1), 1) + np.diag(np.ones(k - 1), -1)
    np.testing.assert_allclose(np.sort(heat1d.laplacian_eigenvalues(k)),
                               np.linalg.eigvalsh(L), atol=1e-13)


@pytest.mark.parametrize("n,steps", [(64, 200), (12, 10), (700, 50)])
def test_heat_paper_matrix_form_equals_literal_steps(n, steps):
    """paper_form = "matrix" is S diag((1 + s lambda)^steps) S^T, the explicit scheme's
    product in one mat-vec: within 1e-12 of the literal steps (rounding only), on both
    the dense (n = 64, 12) and the FFT (n = 700) paths."""
    over = {"physics.n": n, "physics.steps": steps, "bounds.pin": [0, n - 1]}
    lit = invphys.load_problem("heat1d", over)
    mat = invphys.load_problem("heat1d", {**over, "physics.paper_form": "matrix"})
    xs = lit.sample(jax.random.key(2), 8)
    np.testing.assert_allclose(jax.vmap(mat.fn)(xs), jax.vmap(lit.fn)(xs), rtol=0, atol=1e-12)


def test_heat_accurate_has_no_stability_limit():
    """The exact flow needs no step: s far above the explicit limit only sets T."""
    over = {"physics.s": 4.0, "physics.steps": 10}
    acc = invphys.load_problem("heat1d", {**over, "physics.fidelity": "accurate"})
    ada = invphys.load_problem("heat1d", {**over, "physics.fidelity": "adaptive"})
    xs = acc.sample(jax.random.key(5), 4)
    np.testing.assert_allclose(jax.vmap(acc.fn)(xs), jax.vmap(ada.fn)(xs), rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ["heat1d", "oscillator"])
def test_adaptive_fidelity_adjoint_identity_and_vmap(name):
    """The adaptive fidelity keeps its contract: JVP and VJP adjoint to 1e-12, vmap
    equals the loop."""
    p = problem(name, "adaptive")
    xs = p.sample(jax.random.key(4), 3)
    x = xs[0]
    kv, kw = jax.random.split(jax.random.key(5))
    v = jax.random.normal(kv, x.shape)
    y, jv = jax.jvp(p.fn, (x,), (v,))
    w = jax.random.normal(kw, y.shape)
    (jtw,) = jax.vjp(p.fn, x)[1](w)
    norm = jnp.linalg.norm
    scale = float(norm(jv) * norm(w) + norm(v) * norm(jtw))
    assert abs(float(jnp.vdot(jv, w)) - float(jnp.vdot(v, jtw))) <= 1e-12 * scale
    np.testing.assert_allclose(jax.vmap(p.fn)(xs), jnp.stack([p.fn(z) for z in xs]),
                               rtol=1e-13, atol=1e-13)
