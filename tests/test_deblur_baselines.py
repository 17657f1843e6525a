"""The Deblur-2D baselines beyond the paper: regularised residuals (their Jacobians
against finite differences, TV / Tikhonov values), the discrepancy and oracle choices
of alpha, the noise level, and one tiny end-to-end run (16 x 16 fields)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import invphys
from invphys.experiments import deblur as D
from invphys.experiments.deblur import regularised as R
from invphys.physics import deblur2d

N = 16


def _op():
    return deblur2d.Deblur2D(sigma=1.1, n=N, pool=2, gain=1.2, radius=4)


def _x(seed=0):
    # away from the clamp's kinks and the bounds: a smooth-ish field in (0.2, 0.8)
    rng = np.random.default_rng(seed)
    return jnp.asarray(0.5 + 0.3 * np.tanh(rng.normal(size=N * N)), jnp.float64)


@pytest.mark.parametrize("term", sorted(R.TERMS))
def test_augmented_jacobian_matches_finite_differences(term):
    """J v of [A x; sqrt(alpha) R(x)] (what the solver's JVP linearisation uses) and the
    gradient of 1/2 |F(x) - [y; 0]|^2 equal central differences."""
    op, x, alpha = _op(), _x(), 0.07
    fn = R.augmented(op, R.TERMS[term], alpha, N)
    k = R.TERMS[term](x, N).size
    y_aug = R.augmented_target(op(x + 0.05), k)
    assert fn(x).shape == y_aug.shape == (op.m**2 + k,)
    rng = np.random.default_rng(1)
    v = jnp.asarray(rng.normal(size=x.size))
    h = 1e-6
    _, jv = jax.jvp(fn, (x,), (v,))
    fd = (fn(x + h * v) - fn(x - h * v)) / (2 * h)
    np.testing.assert_allclose(np.asarray(jv), np.asarray(fd), rtol=1e-6, atol=1e-8)

    def cost(z):
        return 0.5 * jnp.sum((fn(z) - y_aug) ** 2)

    g = jax.grad(cost)(x)
    for i in rng.choice(x.size, 6, replace=False):
        e = jnp.zeros_like(x).at[i].set(1.0)
        fd_i = (cost(x + h * e) - cost(x - h * e)) / (2 * h)
        assert float(g[i]) == pytest.approx(float(fd_i), rel=1e-5, abs=1e-9)
    # the regularised part of the cost is alpha/2 times the penalty
    pen = 0.5 * jnp.sum((fn(x)[op.m**2:]) ** 2)
    dx, dy = R.grad2d(x, N)
    expect = jnp.sum(dx**2 + dy**2) if term == "Tikhonov" else R.tv(x, N) + R.TV_EPS * N * N
    assert float(pen) == pytest.approx(0.5 * alpha * float(expect), rel=1e-10)


def test_tv_and_tikhonov_values():
    const = jnp.full(N * N, 0.37)
    assert abs(float(R.tv(const, N))) < 1e-12
    assert float(jnp.sum(R.tikhonov_term(const, N) ** 2)) == 0.0
    # a ramp along rows: (n - 1) n differences of size c, none along columns
    c = 0.02
    ramp = jnp.asarray(np.repeat(c * np.arange(N)[:, None], N, axis=1).reshape(-1))
    eps = R.TV_EPS
    assert float(R.tv(ramp, N)) == pytest.approx((N - 1) * N * (np.hypot(c, eps) - eps))
    assert float(R.tv(ramp, N, eps=1e-9)) == pytest.approx((N - 1) * N * c, rel=1e-6)
    assert float(jnp.sum(R.tikhonov_term(ramp, N) ** 2)) == pytest.approx((N - 1) * N * c**2)


def test_discrepancy_and_oracle_choices():
    """From known residual(alpha) curves, the discrepancy rule picks the alpha whose
    residual is closest to tau x sigma (per image), the oracle the smallest x-RMSE."""
    sigma = np.array([0.02, 0.03])
    tau = 1.05
    shape = np.array([0.5, 0.8, 0.97, 1.2, 2.0])  # residual / sigma, increasing in alpha
    res = shape[None, :] * sigma[:, None]
    res[1] = np.array([0.5, 0.8, 0.9, 1.06, 2.0]) * sigma[1]
    idx = R.discrepancy_choice(res, tau * sigma)
    assert idx.tolist() == [2, 3]
    for i in range(2):  # closest, by brute force
        assert idx[i] == np.argmin(np.abs(res[i] - tau * sigma[i]))
    x_rmse = np.array([[0.3, 0.1, 0.05, 0.06, 0.2], [0.3, 0.2, 0.1, 0.09, 0.08]])
    assert R.oracle_choice(x_rmse).tolist() == [2, 4]


def test_noise_level_matches_the_noise():
    """delta from the noise model at the noisy y is within 1% of the noise's RMS."""
    key = jax.random.PRNGKey(0)
    y = jax.random.uniform(key, (4, 4096), jnp.float64, 0.35, 0.65)
    noise = deblur2d.SqrtNoise(scale=0.03)
    yn = noise(jax.random.PRNGKey(1), y)
    true = np.sqrt(np.mean(np.asarray(yn - y) ** 2, axis=-1))
    np.testing.assert_allclose(R.noise_level(yn, 0.03), true, rtol=0.03)
    np.testing.assert_allclose(R.noise_level(yn, 0.03),
                               np.sqrt(np.mean(0.03**2 * np.asarray(y), -1)), rtol=0.01)


def test_extended_rows_tiny():
    """A tiny end-to-end run (16 x 16, 3 images, 2 alphas, a few iterations): every row
    finite, the chosen alphas come from the grid and the discrepancy row is the grid
    solve whose residual is closest to tau delta."""
    spec = invphys.load_spec("deblur2d").replace({"physics.n": 16, "physics.radius": 4})
    problem = deblur2d.build(spec)
    x, s, _, y = deblur2d.draw(problem, jax.random.PRNGKey(3), 3)
    ts = D.TestSet("test", np.asarray(x), np.asarray(s), np.asarray(y))
    bank = D.SolverBank(problem, max_iter=4, reg_max_iter=4)
    grid = {"Tikhonov": (1e-2, 1e-1), "TV": (1e-3, 1e-2)}
    rows, recon = D.extended_rows(bank, problem, ts, alphas=grid)
    names = {D.XGD_SUM, D.LM_NOISE} | {D.regularised_name(t, c) for t in grid
                                       for c in ("discrepancy", "oracle")}
    assert set(rows) == names == set(recon)
    for name, row in rows.items():
        assert np.isfinite(row["x_rmse"]) and np.isfinite(row["residual_rmse"]), name
        assert recon[name].shape == (3, 256)
        assert np.all((recon[name] >= 0) & (recon[name] <= 1))
    for term in grid:
        d = rows[D.regularised_name(term, "discrepancy")]
        o = rows[D.regularised_name(term, "oracle")]
        assert d["alpha_median"] in grid[term] or d["alpha_median"] == np.median(grid[term])
        assert sum(d["alpha_counts"]) == 3
        assert o["x_rmse"] <= d["x_rmse"] + 1e-12  # the oracle is the best on the grid
