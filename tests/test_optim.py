"""invphys.optim: the Gauss-Newton family as optax transformations, tested from mathematics."""


import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from invphys import optim

jax.config.update("jax_enable_x64", True)

N_IN, N_OUT, N_BATCH = 4, 3, 16


def _linear(key):
    return {"W": jax.random.normal(key, (N_OUT, N_IN)) / 2}, lambda p, x: p["W"] @ x


def _one_layer(key):
    return eqx.nn.Linear(N_IN, N_OUT, key=key), None


def _mlp(key):
    return eqx.nn.MLP(N_IN, N_OUT, 6, 2, activation=jnp.tanh, key=key), None


MODELS = {"linear": _linear, "one_layer": _one_layer, "mlp": _mlp}
MODES = ["full", "layerwise"]


def mse(y):
    return lambda out: 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=-1))


def softmax_ce(y):
    labels = jnp.argmax(y, axis=-1)
    return lambda out: -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(out), labels[:, None], 1))


LOSSES = {"mse": mse, "softmax_ce": softmax_ce}


def problem(name, seed=0, dtype=jnp.float64):
    """``(params, model_fn, y)`` for a model of the table on a fixed random batch."""
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    model, apply = MODELS[name](k1)
    x = jax.random.normal(k2, (N_BATCH, N_IN), dtype)
    y = jax.random.normal(k3, (N_BATCH, N_OUT), dtype)
    if apply is None:
        params, static = eqx.partition(model, eqx.is_inexact_array)
        apply = lambda p, xi: eqx.combine(p, static)(xi)
    else:
        params = model
    params = jax.tree.map(lambda a: a.astype(dtype), params)
    return params, lambda p: jax.vmap(lambda xi: apply(p, xi))(x), y


def flat(tree):
    return jax.flatten_util.ravel_pytree(tree)[0]


def explicit_ggn(params, model_fn, loss_fn):
    """``J^T H J`` with ``J`` and ``H`` materialised (the reference, small sizes only)."""
    w, unravel = jax.flatten_util.ravel_pytree(params)
    out = model_fn(params)
    j = jax.jacfwd(lambda v: model_fn(unravel(v)).ravel())(w)
    h = jax.hessian(lambda o: loss_fn(o.reshape(out.shape)))(out.ravel())
    return j.T @ h @ j


def exact_gn(damping=0.0, **kw):
    """GN with CG budget above every P in the table, tolerances at fp64 level."""
    return optim.gauss_newton(damping, min_damping=0.0, cg_max_steps=200, cg_rtol=1e-14, **kw)


# --------------------------------------------------------------------- curvature products


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("name", MODELS)
def test_ggn_matvec_equals_explicit_jthj(name, loss):
    params, model_fn, y = problem(name)
    loss_fn = LOSSES[loss](y)
    g_dense = explicit_ggn(params, model_fn, loss_fn)
    w, unravel = jax.flatten_util.ravel_pytree(params)
    ggn = optim.linearize_ggn(model_fn, loss_fn, params)
    for seed in range(3):
        v = jax.random.normal(jax.random.key(10 + seed), w.shape)
        np.testing.assert_allclose(flat(ggn.matvec(unravel(v))), g_dense @ v,
                                   rtol=1e-10, atol=1e-12 * np.abs(g_dense).max())
    grad = jax.grad(lambda p: loss_fn(model_fn(p)))(params)
    np.testing.assert_allclose(flat(ggn.gradient()), flat(grad), rtol=1e-12, atol=1e-14)


def test_lanczos_exact_extremes_and_breakdown():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(30, 30)))
    evals = np.linspace(0.1, 5.0, 30)
    a = jnp.asarray(q @ np.diag(evals) @ q.T)
    lo, hi = optim.lanczos_extreme_eigenvalues(lambda v: a @ v, jnp.ones(30), 30)
    np.testing.assert_allclose([lo, hi], [0.1, 5.0], rtol=1e-8)
    # three distinct eigenvalues: Lanczos breaks down after three steps; the rest is masked
    b = jnp.asarray(q @ np.diag(np.repeat([0.5, 2.0, 7.0], 10)) @ q.T)
    lo, hi = optim.lanczos_extreme_eigenvalues(lambda v: b @ v, jnp.ones(30), 12)
    np.testing.assert_allclose([lo, hi], [0.5, 7.0], rtol=1e-8)


def test_ggn_lambda_min_matches_eigvalsh():
    params, model_fn, y = problem("one_layer")
    g_dense = explicit_ggn(params, model_fn, mse(y))
    lam = optim.ggn_lambda_min(model_fn, mse(y), params, jax.random.key(3),
                               num_iters=g_dense.shape[0])
    np.testing.assert_allclose(lam, np.linalg.eigvalsh(g_dense)[0], rtol=1e-7, atol=1e-10)


# --------------------------------------------------------------------- gauss_newton


@pytest.mark.parametrize("mode", MODES)
def test_linear_least_squares_one_step_normal_equations(mode):
    params, model_fn, y = problem("linear")  # one leaf: layer-wise is the full GN matrix
    loss_fn = mse(y)
    g_dense = explicit_ggn(params, model_fn, loss_fn)
    opt = exact_gn(mode=mode)
    value, grads, kw = optim.extra_args(model_fn, loss_fn, params)
    updates, state = opt.update(grads, opt.init(params), params, **kw)
    # the normal equations G (w* - w) = -g
    expected = np.linalg.solve(g_dense, -flat(grads))
    np.testing.assert_allclose(flat(updates), expected, rtol=1e-8)
    assert bool(state.accepted) and float(state.step_size) == 1.0
    np.testing.assert_allclose(state.rho, 1.0, rtol=1e-8)  # the GN model is exact here
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(flat(jax.grad(lambda p: loss_fn(model_fn(p)))(new)), 0.0,
                               atol=1e-10)


@pytest.mark.parametrize("name,groups", [("linear", None), ("one_layer", optim.by_layer)])
def test_layerwise_equals_full_with_one_layer(name, groups):
    params, model_fn, y = problem(name)
    _, grads, kw = optim.extra_args(model_fn, mse(y), params)
    full = exact_gn(1e-3)
    layer = exact_gn(1e-3, mode="layerwise", groups=groups)
    uf, sf = full.update(grads, full.init(params), params, **kw)
    ul, sl = layer.update(grads, layer.init(params), params, **kw)
    np.testing.assert_allclose(flat(ul), flat(uf), rtol=1e-10)
    np.testing.assert_allclose(sl.damping, sf.damping, rtol=1e-15)
    if name == "one_layer":  # weight and bias as two blocks drop their coupling: not full GN
        per_leaf = exact_gn(1e-3, mode="layerwise")
        up, _ = per_leaf.update(grads, per_leaf.init(params), params, **kw)
        assert not np.allclose(flat(up), flat(uf), rtol=1e-3)


def test_layerwise_solves_the_block_diagonal_system():
    params, model_fn, y = problem("mlp")
    loss_fn = mse(y)
    g_dense = explicit_ggn(params, model_fn, loss_fn)
    _, grads, _ = optim.extra_args(model_fn, loss_fn, params)
    lam = 1e-2
    d, steps = optim.gauss_newton_direction(model_fn, loss_fn, params, grads, lam,
                                            mode="layerwise", cg_max_steps=200, cg_rtol=1e-14)
    sizes = [leaf.size for leaf in jax.tree.leaves(params)]
    block = np.zeros_like(g_dense)
    for s, e in zip(np.cumsum([0] + sizes[:-1]), np.cumsum(sizes), strict=True):
        block[s:e, s:e] = g_dense[s:e, s:e]
    expected = np.linalg.solve(block + lam * np.eye(len(block)), -flat(grads))
    np.testing.assert_allclose(flat(d), expected, rtol=1e-8)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("groups", [None, optim.by_layer])
def test_block_products_equal_the_block_diagonal_of_g(groups, loss):
    """Each block's own linearisation gives ``G_bb v_b``: the block-diagonal of the explicit
    ``J^T H J`` and the zero-padded full product restricted to the block, to 1e-10 (fp64)."""
    from invphys.optim._gauss_newton import _block_operators, _blocks

    params, model_fn, y = problem("mlp")
    loss_fn = LOSSES[loss](y)
    g_dense = np.asarray(explicit_ggn(params, model_fn, loss_fn))
    ggn = optim.linearize_ggn(model_fn, loss_fn, params)
    leaves, treedef = jax.tree.flatten(params)
    starts = np.cumsum([0] + [leaf.size for leaf in leaves])
    blocks = _blocks(params, groups)
    assert len(blocks) == (3 if groups else 6)
    rng = np.random.default_rng(0)
    for idx, op in zip(blocks, _block_operators(model_fn, ggn, params, blocks), strict=True):
        vb = tuple(jnp.asarray(rng.normal(size=leaves[i].shape)) for i in idx)
        cols = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in idx])
        expected = g_dense[np.ix_(cols, cols)] @ np.concatenate([np.ravel(v) for v in vb])
        got = np.concatenate([np.ravel(x) for x in op(vb)])
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12 * np.abs(g_dense).max())
        padded = [jnp.zeros_like(leaf) for leaf in leaves]
        for j, i in enumerate(idx):
            padded[i] = vb[j]
        old = jax.tree.leaves(ggn.matvec(jax.tree.unflatten(treedef, padded)))
        np.testing.assert_allclose(got, np.concatenate([np.ravel(old[i]) for i in idx]),
                                   rtol=1e-10, atol=1e-12 * np.abs(g_dense).max())


ROSENBROCK = (lambda p: jnp.stack([10 * (p[1] - p[0] ** 2), 1 - p[0]]),
              lambda r: 0.5 * jnp.sum(r**2), jnp.array([-1.2, 1.0]))


def test_lm_rejected_step_raises_damping():
    # the undamped GN step from (-1.2, 1) lands at (1, -3.84): loss 24.2 -> 1171
    model_fn, loss_fn, p = ROSENBROCK
    _, grads, kw = optim.extra_args(model_fn, loss_fn, p)
    opt = optim.gauss_newton(1e-8, line_search=False, increase=3.0)
    updates, state = opt.update(grads, opt.init(p), p, **kw)
    assert not bool(state.accepted) and float(state.rho) < 0 and float(state.actual) < 0
    np.testing.assert_array_equal(updates, 0.0)
    np.testing.assert_allclose(state.damping, 3e-8, rtol=1e-12)
    # with the line search the same direction gives a decrease, and the step is taken
    opt = optim.gauss_newton(1e-8)
    updates, state = opt.update(grads, opt.init(p), p, **kw)
    assert bool(state.accepted) and float(state.step_size) < 1.0
    assert loss_fn(model_fn(p + updates)) < loss_fn(model_fn(p))


@pytest.mark.parametrize("rho,factor", [(0.9, 1 / 3), (0.5, 1.0), (0.1, 3.0), (-2.0, 3.0),
                                        (np.nan, 3.0), (-np.inf, 3.0)])
def test_lm_damping_rule(rho, factor):
    np.testing.assert_allclose(optim.lm_damping_update(jnp.asarray(2.0), jnp.asarray(rho)),
                               2.0 * factor, rtol=1e-15)


def test_prox_linear_on_a_linear_model_is_exact():
    params, model_fn, y = problem("linear")
    loss_fn = mse(y)
    _, grads, kw = optim.extra_args(model_fn, loss_fn, params)
    # L-BFGS as the inner optimizer also checks that extra args reach it (value_fn)
    opt = optim.gauss_newton_prox_linear(optax.lbfgs(), 40)
    updates, state = opt.update(grads, opt.init(params), params, **kw)
    expected = np.linalg.solve(explicit_ggn(params, model_fn, loss_fn), -flat(grads))
    np.testing.assert_allclose(flat(updates), expected, rtol=1e-8)
    np.testing.assert_allclose(state.rho, 1.0, rtol=1e-10)  # linearised loss = true loss


@pytest.mark.parametrize("mode", MODES)
def test_gn_trains_mlp(mode):
    params, model_fn, y = problem("mlp")
    loss_fn = mse(y)
    groups = optim.by_layer if mode == "layerwise" else None
    opt = optim.gauss_newton(1e-2, mode=mode, groups=groups)
    step = jax.jit(lambda p, s: _step(opt, p, s, model_fn, loss_fn))
    state, v0 = opt.init(params), loss_fn(model_fn(params))
    for _ in range(15):
        params, state = step(params, state)
    assert loss_fn(model_fn(params)) < 0.2 * v0
    assert all(eqx.is_array(leaf) for leaf in jax.tree.leaves(state))  # checkpointable


def _step(opt, params, state, model_fn, loss_fn, key=None):
    _, grads, kw = optim.extra_args(model_fn, loss_fn, params, key)
    updates, state = opt.update(grads, state, params, **kw)
    return optax.apply_updates(params, updates), state


def test_missing_extra_args_is_a_clear_error():
    params, model_fn, y = problem("linear")
    for opt in (optim.gauss_newton(), optim.sgn_lm(),
                optim.gauss_newton_prox_linear(optax.sgd(0.1), 2)):
        with pytest.raises(TypeError, match="loss_fn"):
            opt.update(params, opt.init(params), params, model_fn=model_fn)
    # ValueError from the check; a TypeError first when jaxtyping's runtime checks run
    with pytest.raises((ValueError, TypeError), match="mode"):
        optim.gauss_newton(mode="diagonal")


@pytest.mark.parametrize("mode", MODES)
def test_matrix_free_step_never_forms_the_jacobian(mode):
    """XLA's accounting of one compiled GN step (compile only): a 4-256-256-8 tanh MLP on
    512 samples has J of 4096 x 68,360 (2.2 GB in fp64) and G of 37 GB; the step's
    temporaries stay below 1% of J, while the same step with J materialised (the
    reference) accounts for at least J."""
    key = jax.random.key(0)
    sizes = (4, 256, 256, 8)
    params = [{"w": jax.random.normal(k, (a, b)) / np.sqrt(a), "b": jnp.zeros(b)}
              for k, a, b in zip(jax.random.split(key, 3), sizes[:-1], sizes[1:], strict=True)]
    x = jax.random.normal(jax.random.key(1), (512, 4))
    y = jax.random.normal(jax.random.key(2), (512, 8))

    def apply(p, x):
        for layer in p[:-1]:
            x = jnp.tanh(x @ layer["w"] + layer["b"])
        return x @ p[-1]["w"] + p[-1]["b"]

    n_params = sum(leaf.size for leaf in jax.tree.leaves(params))
    j_bytes = 512 * 8 * n_params * 8
    opt = optim.gauss_newton(1e-3, mode=mode, groups=optim.by_layer if mode == "layerwise"
                             else None, cg_max_steps=20, cg_atol=1e-12)

    def step(p, x, y):
        _, g, kw = optim.extra_args(lambda q: apply(q, x), mse(y), p)
        return opt.update(g, opt.init(p), p, **kw)[0]

    def dense_step(p, x, y):
        w, unravel = jax.flatten_util.ravel_pytree(p)
        jac = jax.jacrev(lambda v: apply(unravel(v), x).ravel())(w)
        return jac.T @ (jac @ w)

    free = jax.jit(step).lower(params, x, y).compile().memory_analysis()
    dense = jax.jit(dense_step).lower(params, x, y).compile().memory_analysis()
    if free is None or dense is None:
        pytest.skip("no memory analysis on this backend")
    assert free.temp_size_in_bytes + free.output_size_in_bytes < 0.01 * j_bytes
    assert dense.temp_size_in_bytes >= j_bytes
