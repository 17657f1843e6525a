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

RNG = np.random.default_rng(0)


def _normal(*shape, scale=1.0):
    return jnp.asarray(scale * RNG.standard_normal(shape))


def _uniform(*shape):
    return jnp.asarray(RNG.uniform(size=shape))


def _start_np(y):
    """The protocol start clamp(upsample(y), 0, 1) in numpy, for (b, 32, 32) or (b, 1024)."""
    y = np.asarray(y).reshape(len(y), 32, 32)
    return np.clip(y.repeat(2, axis=1).repeat(2, axis=2), 0.0, 1.0)


# one compiled batch of true operators, reused: (count, 4096) x (count,) -> (count, 1024)
A_batch = jax.jit(jax.vmap(lambda x, s: d.true_forward(d.Deblur2D(sigma=1.3), x, s)))


@pytest.fixture(scope="module")
def problem():
    return invphys.load_problem("deblur2d")


@pytest.fixture(scope="module")
def tiny_data(problem):
    x, sigma, _, y = d.draw(problem, jax.random.key(3), 4)
    return x, sigma, y


# "rbg" keys: the network's weight init compiles far faster than with threefry
def _net_key(seed):
    return jax.random.key(seed, impl="rbg")


@pytest.fixture(scope="module")
def tiny_net():
    return DeceptronNet(_net_key(11), **TINY_CONFIG)


@eqx.filter_jit
def _net_bundle(net, x, y, sigma, y_wild):
    """Everything the network tests read from a forward pass, in one compilation."""
    b = y.shape[0]
    x2, y2 = x.reshape(b, 64, 64), y.reshape(b, 32, 32)
    return {
        "x_hat": jax.vmap(net)(y_wild),                       # image convention
        "iterates": jax.vmap(net.steps)(y_wild.reshape(b, -1)),  # flat convention
        "loss_true": deceptronnet_loss(net, x, y, sigma),    # flat, true-kernel data term
        "loss_nom": deceptronnet_loss(net, x2, y2, data_weight=1.0),  # images, A_nom
    }


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
    # own generator: the module's RNG state depends on which tests ran before (xdist)
    rng = np.random.default_rng(102)
    v, w, u = (jnp.asarray(rng.standard_normal(s)) for s in ((64, 64), (32, 32), (64, 64)))

    @jax.jit
    def pieces(sigma):
        op = d.Deblur2D(sigma=sigma)
        (lin_T,) = jax.linear_transpose(op.linear, v)(w)
        scale = jnp.linalg.norm(op.linear(v)) * jnp.linalg.norm(w)
        return (jnp.vdot(op.linear(v), w), jnp.vdot(v, op.linear_T(w)),
                jnp.vdot(op.blur(v), u), jnp.vdot(v, op.blur(u)), lin_T, op.linear_T(w), scale)

    for sigma in (1.3, 0.83, 1.97):
        lw, vlw, bu, vbu, lin_T, mine, scale = pieces(sigma)
        # the identity to rounding, relative to |A v| |w|; and not trivially 0 = 0
        assert abs(float(lw) - float(vlw)) <= 1e-12 * float(scale)
        assert abs(float(lw)) > 1e-3 * float(scale)
        assert abs(float(bu) - float(vbu)) <= 1e-10  # the blur alone is self-adjoint
        np.testing.assert_allclose(mine, lin_T, rtol=0, atol=1e-14)  # = jax's transpose


def test_full_forward_jvp_vjp_adjoint_and_fd():
    x = _uniform(64 * 64)
    v, w = _normal(64 * 64), _normal(32 * 32)
    h = 1e-6

    @jax.jit
    def pieces(sigma):
        op = d.Deblur2D(sigma=sigma)
        _, jv = jax.jvp(op, (x,), (v,))
        (jtw,) = jax.vjp(op, x)[1](w)
        fd = (op(x + h * v) - op(x - h * v)) / (2 * h)
        # the derivative in sigma (the true kernel is a differentiable parameter too)
        f = lambda s: d.true_forward(op, x, s)
        fd_s = (f(sigma + h) - f(sigma - h)) / (2 * h)
        return jnp.vdot(jv, w), jnp.vdot(v, jtw), jv, fd, jax.jacfwd(f)(sigma), \
            jax.jacrev(f)(sigma), fd_s

    for sigma in (1.3, 0.9):
        jvw, vjtw, jv, fd, ds_fwd, ds_rev, fd_s = pieces(sigma)
        assert abs(float(jvw) - float(vjtw)) <= 1e-10
        np.testing.assert_allclose(jv, fd, rtol=0, atol=1e-8)
        np.testing.assert_allclose(ds_fwd, fd_s, rtol=0, atol=1e-8)
        np.testing.assert_allclose(ds_rev, ds_fwd, rtol=0, atol=1e-12)


def test_true_and_nominal_agree_at_nominal_sigma(problem):
    x, sigma = problem.sampler.pairs(jax.random.key(4), 4)

    @jax.jit
    def pieces(x):
        nominal = jax.vmap(problem.fn)(x)
        tp = d.true_problem(problem, 1.3)
        return nominal, jax.vmap(tp.forward)(x), d.true_forward(problem.fn, x[0], 2.0)

    nominal, via_problem, other = pieces(x)
    np.testing.assert_allclose(A_batch(x, np.full(4, 1.3)), nominal, rtol=0, atol=1e-15)
    np.testing.assert_allclose(via_problem, nominal, rtol=0, atol=1e-15)
    assert np.max(np.abs(np.asarray(other) - np.asarray(nominal[0]))) > 1e-3  # differ elsewhere
    # vmapping over per-sample sigmas matches one operator at a time
    batched = A_batch(x, sigma)
    one = jax.jit(lambda x, s: d.Deblur2D(sigma=s)(x))
    for i in range(2):
        np.testing.assert_allclose(batched[i], one(x[i], float(sigma[i])), rtol=0, atol=1e-14)


def test_blur_preserves_constants_and_mean():
    x = _uniform(64, 64)

    @jax.jit
    def pieces(c):
        op = d.Deblur2D(sigma=2.0)
        const = jnp.full((64, 64), c)
        return op.blur(const), op.linear(const), op(const), jnp.mean(op.blur(x)), \
            jnp.mean(op.linear(x))

    for c in (0.0, 0.37, 1.0, 0.8):
        blurred, pooled, image, mean_b, mean_l = pieces(c)
        np.testing.assert_allclose(blurred, c, rtol=0, atol=1e-14)
        np.testing.assert_allclose(pooled, c, rtol=0, atol=1e-14)
        # a constant field maps to the constant image sigmoid(gain (c - 0.5))
        expected = 1.0 / (1.0 + np.exp(-1.2 * (c - 0.5)))
        np.testing.assert_allclose(image, expected, rtol=0, atol=1e-14)
    np.testing.assert_allclose(mean_b, np.mean(x), rtol=0, atol=1e-14)
    np.testing.assert_allclose(mean_l, np.mean(x), rtol=0, atol=1e-14)


def test_shapes_and_conventions():
    op = d.Deblur2D(sigma=1.3)
    img, w = _uniform(64, 64), _normal(32, 32, scale=2.0)

    @jax.jit
    def both(img, w):
        return (op(img), op(img.ravel()), op.linear_T(w), op.linear_T(w.ravel()),
                d.upsample(w), d.upsample(w.ravel()), d.start(w))

    y2, y1, t2, t1, u2, u1, s2 = both(img, w)
    assert y2.shape == (32, 32) and y1.shape == (1024,)
    np.testing.assert_array_equal(y1, np.asarray(y2).ravel())
    np.testing.assert_array_equal(t1, np.asarray(t2).ravel())
    np.testing.assert_array_equal(u1, np.asarray(u2).ravel())
    np.testing.assert_array_equal(u2, np.asarray(w).repeat(2, 0).repeat(2, 1))
    np.testing.assert_array_equal(s2, _start_np(w[None])[0])
    with pytest.raises(ValueError, match="expected shape"):
        jax.eval_shape(op, jax.ShapeDtypeStruct((100,), jnp.float64))
    with pytest.raises(ValueError, match="divisible"):
        d.Deblur2D(sigma=1.0, n=62, pool=4)
    with pytest.raises(ValueError, match="radius"):
        d.Deblur2D(sigma=1.0, n=8, radius=9)


# ------------------------------------------------------------------- noise, prior
def test_sqrt_noise():
    noise = d.SqrtNoise(scale=0.03)
    y = np.full(200_000, 0.49)
    y[0] = -0.1  # std 0 below zero
    std, noisy = jax.jit(lambda k, y: (noise.std(y), noise(k, y)))(jax.random.key(6), y)
    np.testing.assert_allclose(std[1:], 0.03 * 0.7, rtol=1e-14)
    assert float(std[0]) == 0.0 and float(noisy[0]) == -0.1
    assert abs(np.std(np.asarray(noisy) - y) / (0.03 * 0.7) - 1) < 0.01


def test_sampler_seeded_and_in_box(problem):
    k7, k8 = jax.random.key(7), jax.random.key(8)
    x1, s1 = map(np.asarray, problem.sampler.pairs(k7, 4))
    x2, s2 = map(np.asarray, problem.sampler.pairs(k7, 4))
    x3, _ = map(np.asarray, problem.sampler.pairs(k8, 4))
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(s1, s2)
    assert np.max(np.abs(x1 - x3)) > 0.1
    assert x1.shape == (4, 4096) and s1.shape == (4,)
    np.testing.assert_array_equal(x1.min(axis=1), 0.0)  # each field spans [0, 1] exactly
    np.testing.assert_array_equal(x1.max(axis=1), 1.0)
    assert np.all((s1 >= 0.7) & (s1 <= 2.0))
    np.testing.assert_array_equal(problem.sample(k7, 4), x1)  # = the Problem's sampler
    # sample i depends on (key, i) only, so a smaller count gives a prefix
    field, sigma = jax.jit(problem.sampler.one)(jax.random.split(k7, 4)[2])
    np.testing.assert_array_equal(np.asarray(field).ravel(), x1[2])
    assert float(sigma) == s1[2]
    # smooth: neighbouring pixels are strongly correlated
    assert np.mean(np.abs(np.diff(x1.reshape(4, 64, 64), axis=2))) < 0.1
    # draw: y from each sample's true operator, seeded
    x, sigma, y, yn = d.draw(problem, jax.random.key(9), 4)
    np.testing.assert_array_equal(yn, d.draw(problem, jax.random.key(9), 4)[3])
    np.testing.assert_allclose(y, A_batch(x, sigma), rtol=0, atol=1e-15)
    assert np.max(np.abs(np.asarray(yn) - np.asarray(y))) > 0


# ---------------------------------------------------------------------- the network
def _perturbed(net):
    """The net with a random output layer and gains (corrections no longer zero)."""
    w = net.unet.out.weight
    return eqx.tree_at(lambda m: (m.unet.out.weight, m.gains), net,
                       (_normal(*w.shape, scale=10.0), jnp.array([3.0, -1.0])))


def test_network_output_in_box_and_shapes(tiny_net, tiny_data):
    x, sigma, y = tiny_data
    ys = _normal(4, 32, 32, scale=3.0)  # far outside the range of real observations
    out = _net_bundle(_perturbed(tiny_net), x, y, sigma, ys)
    xh, it = np.asarray(out["x_hat"]), np.asarray(out["iterates"])
    assert xh.shape == (4, 64, 64)
    assert np.all((xh >= 0.0) & (xh <= 1.0))
    x0 = _start_np(ys)
    assert np.std(xh - x0) > 0.01  # it moved
    assert it.shape == (4, TINY_CONFIG["steps"] + 1, 4096)
    assert np.all((it >= 0) & (it <= 1))
    np.testing.assert_allclose(it[:, -1], xh.reshape(4, -1), rtol=0, atol=1e-14)
    np.testing.assert_array_equal(it[:, 0], x0.reshape(4, -1))
    # untrained (zero output layer): the network returns the common start
    np.testing.assert_array_equal(_net_bundle(tiny_net, x, y, sigma, ys)["x_hat"], x0)
    # the nominal operator is configuration, not a trainable leaf
    params = jax.tree.leaves(eqx.filter(tiny_net, eqx.is_inexact_array))
    assert all(p.ndim > 0 for p in params)
    assert tiny_net.operator.sigma == 1.3 and tiny_net.n_steps == TINY_CONFIG["steps"]


def test_loss_terms(tiny_net, tiny_data):
    x, sigma, y = tiny_data
    out = _net_bundle(tiny_net, x, y, sigma, y.reshape(4, 32, 32))
    x, y = np.asarray(x), np.asarray(y)
    x0 = _start_np(y).reshape(4, -1)  # what the untrained network returns
    mse = np.mean((x0 - x) ** 2)
    y_true = np.asarray(A_batch(x0, sigma))
    y_nom = np.asarray(A_batch(x0, np.full(4, 1.3)))
    np.testing.assert_allclose(out["loss_true"], mse + 0.1 * np.mean((y_true - y) ** 2),
                               rtol=1e-10)
    np.testing.assert_allclose(out["loss_nom"], mse + np.mean((y_nom - y) ** 2), rtol=1e-10)


def test_adam_steps_lower_the_loss(tiny_net, tiny_data):
    x, sigma, y = tiny_data
    opt = optax.adam(2e-3)
    net = tiny_net
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
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    assert np.max(np.abs(np.asarray(net.unet.out.weight))) > 0  # the zero layer learned


def test_serialise_round_trip_exact(tiny_net, tiny_data):
    x, sigma, y = tiny_data
    net = _perturbed(tiny_net)
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, net)
    buf.seek(0)
    back = eqx.tree_deserialise_leaves(buf, DeceptronNet(_net_key(99), **TINY_CONFIG))
    for a, b in zip(jax.tree.leaves(net), jax.tree.leaves(back), strict=True):
        np.testing.assert_array_equal(a, b)
    ys = y.reshape(4, 32, 32)
    np.testing.assert_array_equal(_net_bundle(net, x, y, sigma, ys)["x_hat"],
                                  _net_bundle(back, x, y, sigma, ys)["x_hat"])
