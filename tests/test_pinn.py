"""invphys.pinn: partition of unity, PDE residuals of closed forms, block vs dense solves."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from invphys import pinn


def _oscillator_residuals(n_sub, overlap, n_phys=0, points=40):
    def op(u, x, q, datum):
        return pinn.derivative(u, 0, 2)(x) + 0.3 * pinn.derivative(u)(x) + 4.0 * u(x)

    dec = pinn.Decomposition.uniform(0.0, 1.0, n_sub, overlap=overlap)
    field = pinn.Field.mlp(dec, 4, 1, key=jax.random.key(0))
    t = np.linspace(0, 1, points)
    terms = [pinn.Term(t, op), pinn.dirichlet(np.zeros(1), np.ones(1), weight=3.0)]
    bounds = None
    if n_phys:
        terms.append(pinn.observation(t[::3], np.cos(t[::3]), 0.1))
        bounds = pinn.Bounded(-np.ones(n_phys), 2 * np.ones(n_phys))

        def ansatz(x, u, q):
            return u + q[0] * x[0] + q[-1]

        field = pinn.Field(dec, field.template, ansatz)
    res = pinn.Residuals(field, terms, bounds)
    return res, res.init(jax.random.key(1))


@pytest.mark.parametrize("shape,lo,hi", [((7,), [0.0], [1.0]), ((3, 4), [0.0, -1.0], [1.0, 2.0])])
def test_partition_of_unity(shape, lo, hi):
    dec = pinn.Decomposition.uniform(lo, hi, shape, overlap=1.9)
    x = jax.random.uniform(jax.random.key(0), (200, len(shape)), minval=jnp.asarray(lo),
                           maxval=jnp.asarray(hi))
    w = jax.vmap(dec.windows)(x)
    assert np.all(np.asarray(w) >= 0)
    np.testing.assert_allclose(np.sum(w, axis=1), 1.0, atol=1e-14)
    # the windows have compact support: only covering subdomains are non-zero
    slots, mask = dec.cover(np.asarray(x))
    nz = np.asarray(w) > 0
    for i in range(len(x)):
        assert set(np.flatnonzero(nz[i])) <= set(slots[i][mask[i]])


def test_windowed_sum_local_equals_global():
    res, theta = _oscillator_residuals(5, 2.99)
    f = res.field
    x = np.linspace(0, 1, 17)
    slots, mask = f.decomposition.cover(x[:, None])
    loc = [f.at_slots(theta.nets[slots[i]], slots[i], mask[i], x[i:i + 1], theta.phys)
           for i in range(len(x))]
    np.testing.assert_allclose(loc, res.solution(theta, x), rtol=1e-13, atol=1e-13)


def test_pde_residual_of_closed_forms_vanishes():
    # damped oscillator u'' + 2 d u' + w0^2 u = 0, u = exp(-d t) cos(w t), w^2 = w0^2 - d^2
    d, w0 = 2.0, 80.0
    w = np.sqrt(w0**2 - d**2)
    u = lambda x: jnp.exp(-d * x[0]) * jnp.cos(w * x[0])
    op = lambda x: (pinn.derivative(u, 0, 2)(x) + 2 * d * pinn.derivative(u)(x)
                    + w0**2 * u(x)) / w0**2
    r = jax.vmap(op)(jnp.linspace(0, 1, 50)[:, None])
    assert float(jnp.max(jnp.abs(r))) < 1e-11
    # Poisson: -Laplace(sin(pi x) sin(pi y)) = 2 pi^2 sin sin
    v = lambda x: jnp.sin(jnp.pi * x[0]) * jnp.sin(jnp.pi * x[1])
    pts = jax.random.uniform(jax.random.key(3), (50, 2))
    r2 = jax.vmap(lambda x: pinn.laplacian(v, x) + 2 * jnp.pi**2 * v(x))(pts)
    assert float(jnp.max(jnp.abs(r2))) < 1e-11
    g = jax.vmap(lambda x: pinn.gradient(v, x))(pts)
    gx = jnp.pi * jnp.cos(jnp.pi * pts[:, 0]) * jnp.sin(jnp.pi * pts[:, 1])
    np.testing.assert_allclose(g[:, 0], gx, atol=1e-13)


def test_linearisation_matches_autodiff():
    res, theta = _oscillator_residuals(4, 2.99, n_phys=2)
    lin = eqx.filter_jit(res.linearise)(theta)
    np.testing.assert_allclose(lin.r, eqx.filter_jit(res.residual)(theta), rtol=1e-13,
                               atol=1e-13)
    vec = pinn.to_vector(theta)
    full = jax.jit(jax.jacfwd(lambda v: res.residual(pinn.from_vector(v, theta))))(vec)
    np.testing.assert_allclose(lin.dense_jacobian(), full, rtol=1e-11, atol=1e-11)
    # Gram blocks: every stored block equals the dense Gram's slice
    g = np.asarray(full.T @ full)
    p = theta.nets.shape[1]
    for q, (a, b) in enumerate(zip(lin.pattern.first, lin.pattern.second, strict=True)):
        np.testing.assert_allclose(lin.blocks()[q], g[a * p:(a + 1) * p, b * p:(b + 1) * p],
                                   rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("n_sub,overlap,n_phys", [
    (6, 1.9, 0), pytest.param(7, 2.99, 0, marks=pytest.mark.slow),
    pytest.param(5, 1.9, 2, marks=pytest.mark.slow), (1, 1.9, 1)])
def test_block_solves_equal_dense(n_sub, overlap, n_phys):
    res, theta = _oscillator_residuals(n_sub, overlap, n_phys)
    lin = eqx.filter_jit(res.linearise)(theta)
    # damping 1e-5 |G|: condition number <= 1e5, so any backward-stable solve agrees with
    # the dense one to ~1e5 * 1e-16 relative; 1e-10 leaves a margin of 100
    jd = np.asarray(lin.dense_jacobian())
    lam = 1e-5 * np.linalg.norm(jd, 2) ** 2
    dense, _ = pinn.DenseSolve()(lin, lam)
    dvec = pinn.to_vector(dense)
    scale = np.linalg.norm(dvec)
    banded, _ = pinn.BandedSolve()(lin, lam)
    assert np.linalg.norm(pinn.to_vector(banded) - dvec) <= 1e-10 * scale
    other, _ = pinn.DenseSolve("residuals")(lin, lam)
    assert np.linalg.norm(pinn.to_vector(other) - dvec) <= 1e-8 * scale
    pcg, steps = pinn.PCGSolve(rtol=1e-13, max_steps=2000)(lin, lam)
    assert np.linalg.norm(pinn.to_vector(pcg) - dvec) <= 1e-6 * scale
    assert int(steps) > 0


@pytest.mark.slow
def test_block_jacobi_preconditioner_is_block_inverse():
    res, theta = _oscillator_residuals(4, 1.9)
    lin = res.linearise(theta)
    op = pinn.BlockJacobi()(lin, 0.5)
    p = theta.nets.shape[1]
    g = np.asarray(lin.dense_jacobian())
    g = g.T @ g + 0.5 * np.eye(g.shape[1])
    e = jax.random.normal(jax.random.key(0), theta.nets.shape)
    out = op.mv(pinn.Theta(e, theta.phys))
    for a in range(4):
        blk = g[a * p:(a + 1) * p, a * p:(a + 1) * p]
        np.testing.assert_allclose(blk @ np.asarray(out.nets[a]), e[a], rtol=1e-10, atol=1e-10)


def test_gauss_newton_reduces_loss_and_respects_bounds():
    res, theta = _oscillator_residuals(4, 1.9, n_phys=2)
    state = pinn.init_state(1e-2)
    step = eqx.filter_jit(pinn.gauss_newton_step)
    l0 = float(res.loss(theta))
    for _ in range(5):
        theta, state = step(res, pinn.BandedSolve(), theta, state)
    assert float(res.loss(theta)) < 0.5 * l0
    q = np.asarray(res.q(theta))
    assert np.all((q > -1) & (q < 2))


def test_bounded_roundtrip():
    b = pinn.Bounded([0.0, -np.inf], [2.0, np.inf])
    q = jnp.array([0.3, -5.0])
    np.testing.assert_allclose(b(b.inverse(q)), q, rtol=1e-12)
    with pytest.raises(ValueError):
        pinn.Bounded([1.0], [0.0])


def test_cover_rejects_points_outside():
    dec = pinn.Decomposition.uniform(0.0, 1.0, 3)
    with pytest.raises(ValueError, match="no subdomain"):
        dec.cover(np.array([[5.0]]))


def test_svd_solve_equals_cholesky_and_pseudo_inverse():
    res, theta = _oscillator_residuals(3, 1.9, n_phys=1)
    lin = eqx.filter_jit(res.linearise)(theta)
    jd = np.asarray(lin.dense_jacobian())
    # damped: the same system as Cholesky's (condition number <= 1e5, as above)
    lam = 1e-5 * np.linalg.norm(jd, 2) ** 2
    chol = pinn.to_vector(pinn.DenseSolve()(lin, lam)[0])
    svd = pinn.to_vector(pinn.DenseSolve("svd", rcond=0.0)(lin, lam)[0])
    assert np.linalg.norm(svd - chol) <= 1e-10 * np.linalg.norm(chol)
    # undamped with a cut: the truncated pseudo-inverse, -pinv(J, rcond) r
    d = pinn.to_vector(pinn.DenseSolve("svd", rcond=1e-6)(lin, 0.0)[0])
    ref = -np.linalg.pinv(jd, rtol=1e-6) @ np.asarray(lin.r)
    np.testing.assert_allclose(d, ref, rtol=1e-9, atol=1e-9 * np.linalg.norm(ref))


class _NaNSolve(pinn.AbstractBlockSolver):
    def __call__(self, lin, damping):
        like = lin.like()
        return jax.tree.map(lambda a: jnp.full_like(a, jnp.nan), like), jnp.zeros((), int)


@pytest.mark.parametrize("line_search", ["backtracking", "grid"])
def test_failed_solve_leaves_parameters_and_raises_damping(line_search):
    # a NaN direction times a zero step is still NaN: the step must select, not scale
    res, theta = _oscillator_residuals(3, 1.9, n_phys=1)
    new, state = pinn.gauss_newton_step(res, _NaNSolve(), theta, pinn.init_state(1e-3),
                                        line_search=line_search)
    assert not bool(state.accepted)
    assert float(state.damping) > 1e-3
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(theta), strict=True):
        np.testing.assert_array_equal(a, b)


def test_grid_search_takes_the_best_power_of_two():
    # f(theta + alpha d) = (alpha - 0.3)^2: the grid's best is alpha = 0.25
    th = pinn.Theta(jnp.zeros((1, 1)), jnp.zeros(1))
    d = pinn.Theta(jnp.ones((1, 1)), jnp.zeros(1))
    f = lambda t: (t.nets[0, 0] - 0.3) ** 2
    alpha, fa, ok = pinn.grid_search(f, th, d, f(th), 31)
    assert float(alpha) == 0.25 and bool(ok)
    np.testing.assert_allclose(fa, 0.05**2)
