"""Deblur-2D physics (operators, noise, prior, spec) and the DeceptronNet v0 module."""

import io

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import invphys
from invphys.learn.deceptronnet import (
    TINY_CONFIG,
    DeceptronNet,
    deceptronnet_loss,
)
from invphys.physics import deblur2d as d

KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def problem():
    return invphys.load_problem("deblur2d")


@pytest.fixture(scope="module")
def tiny_data(problem):
    x, sigma, _, y = d.draw(problem, jax.random.key(3), 4)
    return x, sigma, y


def _rand(key, shape):
    return jax.random.uniform(key, shape, jnp.float64)


# --------------------------------------------------------------------------- spec
def test_spec_builds_problem(problem):
    assert problem.x_size == 64 * 64
    assert problem.y_shape() == (32 * 32,)
    assert isinstance(problem.fn, d.Deblur2D)
    assert problem.fn.sigma == 1.3 and problem.fn.gain == 1.2 and problem.fn.radius == 8
    assert isinstance(problem.noise, d.SqrtNoise) and problem.noise.scale == 0.03
    assert float(problem.lower[0]) == 0.0 and float(problem.upper[0]) == 1.0
    data = problem.spec["data"]
    assert (data["n_train"], data["n_val"], data["n_test"]) == (4000, 400, 400)
    assert problem.spec["physics"]["sigma_range"] == (0.7, 2.0)
    with pytest.raises(invphys.SpecError, match="sigma_range"):
        problem.spec.replace({"physics.sigma_range": [2.0, 0.7]})
    with pytest.raises(invphys.SpecError, match="pool"):
        d.build(problem.spec.replace({"physics.pool": 3}))


# ----------------------------------------------------------------------- operators
def test_blur_matrix_symmetric_and_stochastic():
    for sigma in (0.7, 1.3, 2.0):
        K = np.asarray(d.blur_matrix(sigma, 64, 8))
        np.testing.assert_allclose(K, K.T, rtol=0, atol=1e-15)
        np.testing.assert_allclose(K.sum(0), 1.0, rtol=0, atol=1e-14)
        np.testing.assert_allclose(K.sum(1), 1.0, rtol=0, atol=1e-14)
        assert (K >= 0).all()


def test_linear_part_adjoint_identity():
    k1, k2, k3 = jax.random.split(KEY, 3)
    v = jax.random.normal(k1, (64, 64))
    w = jax.random.normal(k2, (32, 32))
    for sigma in (1.3, float(jax.random.uniform(k3, (), minval=0.7, maxval=2.0))):
        op = d.Deblur2D(sigma=sigma)
        lhs = jnp.vdot(op.linear(v), w)
        rhs = jnp.vdot(v, op.linear_T(w))
        assert abs(float(lhs - rhs)) <= 1e-10
        # the blur alone is self-adjoint, and linear_T is jax's transpose
        u = jax.random.normal(k3, (64, 64))
        assert abs(float(jnp.vdot(op.blur(v), u) - jnp.vdot(v, op.blur(u)))) <= 1e-10
        (lin_T,) = jax.linear_transpose(op.linear, v)(w)
        np.testing.assert_allclose(lin_T, op.linear_T(w), rtol=0, atol=1e-14)
        # flat convention gives the same numbers
        np.testing.assert_allclose(op.linear_T(w.ravel()), op.linear_T(w).ravel(), atol=0)


def test_full_forward_jvp_vjp_adjoint_and_fd():
    kx, kv, kw = jax.random.split(jax.random.key(1), 3)
    x = _rand(kx, (64 * 64,))
    v = jax.random.normal(kv, x.shape)
    w = jax.random.normal(kw, (32 * 32,))
    for sigma in (1.3, 0.9):
        op = d.Deblur2D(sigma=sigma)
        y, jv = jax.jvp(op, (x,), (v,))
        _, pullback = jax.vjp(op, x)
        (jtw,) = pullback(w)
        assert abs(float(jnp.vdot(jv, w) - jnp.vdot(v, jtw))) <= 1e-10
        h = 1e-6
        fd = (op(x + h * v) - op(x - h * v)) / (2 * h)
        np.testing.assert_allclose(jv, fd, rtol=0, atol=1e-8)
    # the derivative in sigma (the true kernel is a differentiable parameter too)
    f = lambda s: d.true_forward(op, x, s)
    ds = jax.jacfwd(f)(1.1)
    fd = (f(1.1 + 1e-6) - f(1.1 - 1e-6)) / 2e-6
    np.testing.assert_allclose(ds, fd, rtol=0, atol=1e-8)
    np.testing.assert_allclose(jax.jacrev(f)(1.1), ds, rtol=0, atol=1e-12)


def test_true_and_nominal_agree_at_nominal_sigma(problem):
    x = problem.sample(jax.random.key(2), 3)
    nominal = jax.vmap(problem.fn)(x)
    true = jax.jit(jax.vmap(lambda xi, si: d.true_forward(problem.fn, xi, si)))(
        x, jnp.full((3,), 1.3))
    np.testing.assert_allclose(true, nominal, rtol=0, atol=1e-15)
    tp = d.true_problem(problem, 1.3)
    np.testing.assert_allclose(tp.forward(x[0]), problem.forward(x[0]), rtol=0, atol=1e-15)
    # and they differ at another sigma
    assert float(jnp.max(jnp.abs(d.true_forward(problem.fn, x[0], 2.0) - nominal[0]))) > 1e-3


def test_vmap_over_sigma_matches_loop(problem):
    x, sigma = problem.sampler.pairs(jax.random.key(4), 3)
    batched = jax.vmap(lambda xi, si: d.true_forward(problem.fn, xi, si))(x, sigma)
    for i in range(3):
        np.testing.assert_allclose(batched[i], d.Deblur2D(sigma=float(sigma[i]))(x[i]),
                                   rtol=0, atol=1e-14)


def test_blur_preserves_constants_and_mean():
    op = d.Deblur2D(sigma=2.0)
    for c in (0.0, 0.37, 1.0):
        np.testing.assert_allclose(op.blur(jnp.full((64, 64), c)), c, rtol=0, atol=1e-14)
        np.testing.assert_allclose(op.linear(jnp.full((64, 64), c)), c, rtol=0, atol=1e-14)
    x = _rand(jax.random.key(5), (64, 64))
    np.testing.assert_allclose(jnp.mean(op.blur(x)), jnp.mean(x), rtol=0, atol=1e-14)
    np.testing.assert_allclose(jnp.mean(op.linear(x)), jnp.mean(x), rtol=0, atol=1e-14)
    # a constant field maps to the constant image sigmoid(gain (c - 0.5))
    np.testing.assert_allclose(op(jnp.full((64, 64), 0.8)), jax.nn.sigmoid(1.2 * 0.3),
                               rtol=0, atol=1e-14)


def test_shapes_and_errors():
    op = d.Deblur2D(sigma=1.3)
    assert op(jnp.zeros((64, 64))).shape == (32, 32)
    assert op(jnp.zeros(4096)).shape == (1024,)
    with pytest.raises(ValueError, match="expected shape"):
        op(jnp.zeros(100))
    with pytest.raises(ValueError, match="divisible"):
        d.Deblur2D(sigma=1.0, n=63, pool=2)
    assert d.upsample(jnp.arange(4.0).reshape(2, 2)).shape == (4, 4)
    np.testing.assert_array_equal(d.start(jnp.array([[-1.0, 2.0], [0.5, 0.2]]))[0],
                                  [0.0, 0.0, 1.0, 1.0])


# ------------------------------------------------------------------- noise, prior
def test_sqrt_noise():
    noise = d.SqrtNoise(scale=0.03)
    y = jnp.full((200_000,), 0.49)
    np.testing.assert_allclose(noise.std(y), 0.03 * 0.7, rtol=1e-14)
    e = noise(jax.random.key(6), y) - y
    assert abs(float(jnp.std(e)) / (0.03 * 0.7) - 1) < 0.01
    assert float(noise.std(jnp.array(-0.1))) == 0.0


def test_sampler_seeded_and_in_box(problem):
    x1, s1 = problem.sampler.pairs(jax.random.key(7), 8)
    x2, s2 = problem.sampler.pairs(jax.random.key(7), 8)
    x3, _ = problem.sampler.pairs(jax.random.key(8), 8)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(s1, s2)
    assert float(jnp.max(jnp.abs(x1 - x3))) > 0.1
    assert x1.shape == (8, 4096) and s1.shape == (8,)
    assert float(x1.min()) == 0.0 and float(x1.max()) == 1.0
    np.testing.assert_allclose(x1.min(axis=1), 0.0, atol=0)
    np.testing.assert_allclose(x1.max(axis=1), 1.0, atol=0)
    assert bool(jnp.all((s1 >= 0.7) & (s1 <= 2.0)))
    np.testing.assert_array_equal(problem.sample(jax.random.key(7), 8), x1)
    # smooth: neighbouring pixels are strongly correlated
    f = x1.reshape(8, 64, 64)
    assert float(jnp.mean(jnp.abs(jnp.diff(f, axis=2)))) < 0.1
    # draw: y from each sample's true operator, seeded
    x, sigma, y, yn = d.draw(problem, jax.random.key(9), 4)
    _, _, _, yn2 = d.draw(problem, jax.random.key(9), 4)
    np.testing.assert_array_equal(yn, yn2)
    np.testing.assert_allclose(y[1], d.true_forward(problem.fn, x[1], sigma[1]), atol=1e-15)
    assert float(jnp.max(jnp.abs(yn - y))) > 0


# ---------------------------------------------------------------------- the network
def test_network_output_in_box_and_shapes():
    net = DeceptronNet(KEY, **TINY_CONFIG)
    # perturb the zero-initialised output layer so the corrections are non-trivial
    out = net.unet.out
    net = eqx.tree_at(lambda m: (m.unet.out.weight, m.gains), net,
                      (10.0 * jax.random.normal(KEY, out.weight.shape), jnp.array([3.0, -1.0])))
    ys = 3.0 * jax.random.normal(jax.random.key(10), (3, 32, 32))
    xh = jax.vmap(net)(ys)
    assert xh.shape == (3, 64, 64)
    assert bool(jnp.all((xh >= 0.0) & (xh <= 1.0)))
    assert float(jnp.std(xh - jax.vmap(d.start)(ys))) > 0  # it moved
    it = net.steps(ys[0].ravel())
    assert it.shape == (TINY_CONFIG["steps"] + 1, 4096)
    assert bool(jnp.all((it >= 0) & (it <= 1)))
    np.testing.assert_allclose(it[-1], xh[0].ravel(), atol=1e-14)
    # untrained (zero output layer): the network returns the common start
    fresh = DeceptronNet(KEY, **TINY_CONFIG)
    np.testing.assert_array_equal(fresh(ys[0]), d.start(ys[0]))
    # the nominal operator is configuration, not a trainable leaf
    params = eqx.filter(fresh, eqx.is_inexact_array)
    assert all(p is None or p.ndim > 0 for p in jax.tree.leaves(params))
    assert fresh.operator.sigma == 1.3


def test_adam_steps_lower_the_loss(tiny_data):
    x, sigma, y = tiny_data
    net = DeceptronNet(jax.random.key(11), **TINY_CONFIG)
    opt = optax.adam(2e-3)
    state = opt.init(eqx.filter(net, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(net, state):
        loss, g = eqx.filter_value_and_grad(deceptronnet_loss)(net, x, y, sigma)
        updates, state = opt.update(g, state, eqx.filter(net, eqx.is_inexact_array))
        return eqx.apply_updates(net, updates), state, loss

    losses = []
    for _ in range(6):
        net, state, loss = step(net, state)
        losses.append(float(loss))
    final = float(deceptronnet_loss(net, x, y, sigma))
    assert final < losses[0]
    assert losses[-1] < losses[0]
    # the nominal-operator data term and the flat convention work too
    l_nom = deceptronnet_loss(net, x.reshape(4, 64, 64), y.reshape(4, 32, 32))
    assert np.isfinite(float(l_nom))


def test_serialise_round_trip_exact(tiny_data):
    _, _, y = tiny_data
    net = DeceptronNet(jax.random.key(12), **TINY_CONFIG)
    net = eqx.tree_at(lambda m: m.gains, net, jnp.array([0.3, -0.7]))
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, net)
    buf.seek(0)
    like = DeceptronNet(jax.random.key(99), **TINY_CONFIG)
    back = eqx.tree_deserialise_leaves(buf, like)
    for a, b in zip(jax.tree.leaves(net), jax.tree.leaves(back), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(jax.vmap(net)(y), jax.vmap(back)(y))
