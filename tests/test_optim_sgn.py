"""invphys.optim.sgn_lm and the projection in a metric: the formulas and the KKT conditions."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from test_optim import explicit_ggn, flat, mse, problem

from invphys import optim

jax.config.update("jax_enable_x64", True)


def spd(n, seed, cond=100.0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return jnp.asarray(q @ np.diag(np.geomspace(1.0, cond, n)) @ q.T)


@pytest.mark.parametrize("kind", ["dense", "diagonal"])
def test_projection_satisfies_kkt(kind):
    n, radius = 7, 0.5
    h = spd(n, 0) if kind == "dense" else jnp.geomspace(0.1, 10.0, n)
    hm = h if kind == "dense" else jnp.diag(h)
    rng = np.random.default_rng(1)
    center, u = jnp.asarray(rng.normal(size=n)), jnp.asarray(3 * rng.normal(size=n))
    w, mu = optim.project_onto_ball(u, center, radius, h)
    # feasibility, complementary slackness (active), dual feasibility, stationarity
    np.testing.assert_allclose(jnp.linalg.norm(w - center), radius, rtol=1e-12)
    assert float(mu) > 0
    np.testing.assert_allclose(hm @ (w - u) + mu * (w - center), 0.0, atol=1e-11)
    # the first-order optimality condition over the convex set: <H(w - u), z - w> >= 0
    z = rng.normal(size=(200, n))
    z = center + radius * rng.uniform(size=(200, 1)) ** (1 / n) * z / np.linalg.norm(z, axis=1,
                                                                                   keepdims=True)
    assert np.all((z - w) @ (hm @ (w - u)) >= -1e-12)
    # inside the ball, the projection is the identity
    w_in, mu_in = optim.project_onto_ball(center + 0.1 * (u - center) / jnp.linalg.norm(u - center),
                                          center, radius, h)
    np.testing.assert_allclose(w_in, center + 0.1 * (u - center) / jnp.linalg.norm(u - center),
                               rtol=1e-15)
    assert float(mu_in) == 0.0


def test_sgn_dense_step_and_cumulative_metric():
    params, model_fn, y = problem("one_layer")
    lr, alpha, lam = 0.7, 2.0, 1e-2
    opt = optim.sgn_lm(lr, alpha=alpha, damping=lam, log_lambda_min=True)
    state = opt.init(params)
    total = 0.0
    for seed in range(2):  # two "batches": the same model on two target sets
        y_t = y + seed
        loss_fn = mse(y_t)
        _, grads, kw = optim.extra_args(model_fn, loss_fn, params)
        g_t = explicit_ggn(params, model_fn, loss_fn)
        total = total + g_t
        updates, state = opt.update(grads, state, params, **kw)
        h = alpha * total + lam * np.eye(len(total))
        np.testing.assert_allclose(flat(updates), -lr * np.linalg.solve(h, flat(grads)),
                                   rtol=1e-9)
        np.testing.assert_allclose(state.metric, total, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(state.lambda_min, np.linalg.eigvalsh(g_t)[0], atol=1e-10)
    assert int(state.count) == 2 and state.metric.shape == (len(total),) * 2


@pytest.mark.parametrize("metric", ["dense", "diagonal"])
def test_sgn_projection_keeps_iterates_in_the_ball(metric):
    params, model_fn, y = problem("mlp")
    loss_fn, radius = mse(y), 0.3
    opt = optim.sgn_lm(1.0, damping=1e-3, radius=radius, metric=metric, log_lambda_min=True,
                       lanczos_iters=10)
    state, w0 = opt.init(params), flat(params)
    assert state.metric.ndim == (2 if metric == "dense" else 1)
    v0 = loss_fn(model_fn(params))

    @jax.jit
    def step(p, s, key):
        _, grads, kw = optim.extra_args(model_fn, loss_fn, p, key)
        updates, s = opt.update(grads, s, p, **kw)
        return jax.tree.map(jnp.add, p, updates), s

    for k in range(5):
        params, state = step(params, state, jax.random.key(k))
        assert float(jnp.linalg.norm(flat(params) - w0)) <= radius * (1 + 1e-10)
    assert bool(state.projected) and float(state.multiplier) > 0
    assert np.isfinite(float(state.lambda_min))
    assert loss_fn(model_fn(params)) < v0


def test_sgn_diagonal_metric_is_an_unbiased_diagonal():
    params, model_fn, y = problem("one_layer")
    g = explicit_ggn(params, model_fn, mse(y))
    probes = 4000
    opt = optim.sgn_lm(metric="diagonal", probes=probes)
    _, grads, kw = optim.extra_args(model_fn, mse(y), params, jax.random.key(0))
    _, state = opt.update(grads, opt.init(params), params, **kw)
    # Rademacher probes: the variance of one estimate of G_ii is sum_{j != i} G_ij^2
    sd = np.sqrt((np.sum(g**2, axis=1) - np.diag(g) ** 2) / probes)
    assert np.all(np.abs(state.metric - np.diag(g)) <= 5 * sd + 1e-12)


def test_auto_metric_threshold():
    params, _, _ = problem("mlp")
    n = flat(params).size
    assert optim.sgn_lm(dense_max_params=n).init(params).metric.shape == (n, n)
    assert optim.sgn_lm(dense_max_params=n - 1).init(params).metric.shape == (n,)


def test_informative_lambda_min_when_the_batch_is_smaller_than_the_network():
    """m = 48 outputs < P = 93 parameters: G_t has P - m zero eigenvalues whatever the model;
    the logged value is the smallest of its top m, that of H^{1/2} J J^T H^{1/2}."""
    params, model_fn, y = problem("mlp")
    loss_fn = mse(y)
    g = np.asarray(explicit_ggn(params, model_fn, loss_fn))
    p, m = g.shape[0], y.size
    assert m < p
    evals = np.linalg.eigvalsh(g)
    assert np.all(np.abs(evals[: p - m]) < 1e-12 * evals[-1])  # the trivial side
    expected = evals[p - m]
    assert expected > 1e-9 * evals[-1]  # and a non-trivial value to match (~1e-7 here)
    # the output-space matrix from the materialised J and H (the reference)
    w, unravel = jax.flatten_util.ravel_pytree(params)
    out = model_fn(params)
    j = np.asarray(jax.jacfwd(lambda v: model_fn(unravel(v)).ravel())(w))
    h = np.asarray(jax.hessian(lambda o: loss_fn(o.reshape(out.shape)))(out.ravel()))
    np.testing.assert_allclose(np.linalg.eigvalsh(j @ j.T * h[0, 0])[0], expected, rtol=1e-6)
    ggn = optim.linearize_ggn(model_fn, loss_fn, params)
    np.testing.assert_allclose(optim.ggn_lambda_min_informative(ggn, params), expected,
                               rtol=1e-6)
    for metric in ("dense", "diagonal"):
        opt = optim.sgn_lm(metric=metric, log_lambda_min=True)
        _, grads, kw = optim.extra_args(model_fn, loss_fn, params, jax.random.key(0))
        _, state = opt.update(grads, opt.init(params), params, **kw)
        np.testing.assert_allclose(state.lambda_min, expected, rtol=1e-6)


def test_informative_lambda_min_is_lambda_min_of_g_when_outputs_outnumber_parameters():
    params, model_fn, y = problem("one_layer")  # 15 parameters, 48 outputs
    g = np.asarray(explicit_ggn(params, model_fn, mse(y)))
    ggn = optim.linearize_ggn(model_fn, mse(y), params)
    np.testing.assert_allclose(optim.ggn_lambda_min_informative(ggn, params, num_iters=15),
                               np.linalg.eigvalsh(g)[0], rtol=1e-7)
