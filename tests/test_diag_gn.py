"""invphys.optim.diagonal_gn / diagonal_adam: diagonal preconditioners in a basis, tested
from mathematics (one-step Newton, unbiased estimators, orthogonal rotations, reductions
to gradient descent)."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from invphys import optim

jax.config.update("jax_enable_x64", True)


def flat(tree):
    return jax.flatten_util.ravel_pytree(tree)[0]


def linear_problem(seed=0, n=40, d_in=5, d_out=3, rotate=True, bias=True):
    """A linear least-squares layer ``x @ w + b`` with a correlated, ill-conditioned input."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d_in, d_in)))
    scales = np.geomspace(0.1, 3.0, d_in)
    x = rng.normal(size=(n, d_in)) * scales
    if rotate:
        x = x @ q.T
    y = rng.normal(size=(n, d_out))
    params = {"w": jnp.asarray(rng.normal(size=(d_in, d_out))),
              "b": jnp.asarray(rng.normal(size=d_out))}
    if not bias:
        params = {"w": params["w"]}
    x, y = jnp.asarray(x), jnp.asarray(y)
    model_fn = lambda p: x @ p["w"] + p.get("b", 0.0)
    loss_fn = lambda out: 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=1))
    return params, model_fn, loss_fn


def mlp_problem(seed=0, n=12):
    k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
    params = [{"w": jax.random.normal(k1, (4, 6)) / 2, "b": 0.1 * jax.random.normal(k4, (6,))},
              {"w": jax.random.normal(k2, (6, 3)) / 2, "b": jnp.zeros(3)}]
    x = jax.random.normal(k3, (n, 4))
    labels = jnp.arange(n) % 3

    def model_fn(p):
        return jnp.tanh(x @ p[0]["w"] + p[0]["b"]) @ p[1]["w"] + p[1]["b"]

    loss_fn = lambda out: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, labels))
    return params, model_fn, loss_fn


def explicit_ggn(params, model_fn, loss_fn):
    w, unravel = jax.flatten_util.ravel_pytree(params)
    out = model_fn(params)
    j = jax.jacfwd(lambda v: model_fn(unravel(v)).ravel())(w)
    h = jax.hessian(lambda o: loss_fn(o.reshape(out.shape)))(out.ravel())
    return j.T @ h @ j


def step(opt, params, model_fn, loss_fn, state=None, key=None):
    state = opt.init(params) if state is None else state
    _, grads, kw = optim.extra_args(model_fn, loss_fn, params, key)
    updates, state = opt.update(grads, state, params, **kw)
    return optax.apply_updates(params, updates), updates, grads, state


def rotation_matrix(basis, params, model_fn, loss_fn, estimator="exact"):
    """``U^T`` as a matrix: the rotation applied to the identity's columns (after a refresh)."""
    opt = optim.scale_by_rotation(optax.identity(), basis, estimator=estimator)
    _, _, _, state = step(opt, params, model_fn, loss_fn, key=jax.random.key(0))
    captured = {}

    def inner_update(u, s, p=None, **extra):
        captured["rot"] = extra["rotation"]
        return u, s

    spy = optim.scale_by_rotation(optax.GradientTransformationExtraArgs(
        lambda p: optax.EmptyState(), inner_update), basis, estimator=estimator,
        refresh_every=10**6)
    spy_state = state._replace(inner=optax.EmptyState())
    _, _, kw = optim.extra_args(model_fn, loss_fn, params, jax.random.key(0))
    spy_state = spy_state._replace(count=jnp.ones((), jnp.int32))  # no refresh: same basis
    spy.update(params, spy_state, params, **kw)
    w, unravel = jax.flatten_util.ravel_pytree(params)
    rot = captured["rot"]
    return np.asarray(jax.vmap(lambda e: flat(rot.rotate(unravel(e))))(jnp.eye(w.size))).T, rot


# ------------------------------------------------------------------------ one-step Newton
@pytest.mark.parametrize("basis", ["eigen", "kronecker"])
def test_gn_inverse_in_exact_eigenbasis_solves_a_quadratic_in_one_step(basis):
    # the Kronecker basis is exact for a single linear layer without bias:
    # G = (X^T X / n) (x) I, whose factors' eigenvectors diagonalise G
    params, model_fn, loss_fn = linear_problem(1, bias=basis == "eigen")
    opt = optim.diagonal_gn(1.0, power=1.0, basis=basis, damping=0.0, estimator="exact")
    new, _, _, _ = step(opt, params, model_fn, loss_fn)
    g = explicit_ggn(params, model_fn, loss_fn)
    _, grad = jax.value_and_grad(lambda p: loss_fn(model_fn(p)))(params)
    exact = flat(params) - np.linalg.solve(g, flat(grad))
    np.testing.assert_allclose(flat(new), exact, atol=1e-10)
    grad_new = jax.grad(lambda p: loss_fn(model_fn(p)))(new)
    assert float(jnp.linalg.norm(flat(grad_new))) < 1e-10


def test_gn_inverse_in_identity_basis_is_not_newton_on_a_rotated_quadratic():
    params, model_fn, loss_fn = linear_problem(1)
    new, _, _, _ = step(optim.diagonal_gn(1.0, damping=0.0), params, model_fn, loss_fn)
    assert float(jnp.linalg.norm(flat(jax.grad(lambda p: loss_fn(model_fn(p)))(new)))) > 1e-3


# ------------------------------------------------------------------------ estimators
@pytest.mark.parametrize("basis", ["identity", pytest.param("eigen", marks=pytest.mark.slow),
                                   pytest.param("kronecker", marks=pytest.mark.slow)])
def test_diagonal_estimate_is_unbiased(basis):
    params, model_fn, loss_fn = mlp_problem(2)
    u_t, rot = rotation_matrix(basis, params, model_fn, loss_fn)
    g = explicit_ggn(params, model_fn, loss_fn)
    exact = np.diag(u_t @ g @ u_t.T)
    ggn = optim.linearize_ggn(model_fn, loss_fn, params)
    from invphys.optim._diagonal import gn_diagonal

    np.testing.assert_allclose(gn_diagonal(ggn, params, rot, "exact", None), exact,
                               rtol=1e-9, atol=1e-12)
    n_probes = 4000
    samples = jax.jit(jax.vmap(lambda k: gn_diagonal(ggn, params, rot, "hutchinson", k)))(
        jax.random.split(jax.random.key(3), n_probes))
    mean, sem = samples.mean(0), samples.std(0) / np.sqrt(n_probes)
    # each coordinate within 5 standard errors (plus round-off where the variance is 0)
    assert np.all(np.abs(mean - exact) <= 5 * sem + 1e-10 * np.abs(exact).max())


def test_kronecker_factor_estimate_is_unbiased():
    params, model_fn, loss_fn = mlp_problem(4)
    from invphys.optim._diagonal import kronecker_stats

    ggn = optim.linearize_ggn(model_fn, loss_fn, params)
    exact = kronecker_stats(ggn, params, "exact", None)
    n = 3000
    many = jax.jit(jax.vmap(lambda k: kronecker_stats(ggn, params, "hutchinson", k, 1)))(
        jax.random.split(jax.random.key(5), n))
    for ex, sm in zip(jax.tree.leaves(exact), jax.tree.leaves(many), strict=True):
        mean, sem = sm.mean(0), sm.std(0) / np.sqrt(n)
        assert np.all(np.abs(mean - ex) <= 5 * sem + 1e-10 * np.abs(ex).max())


# ------------------------------------------------------------------------ rotations
@pytest.mark.parametrize("basis", ["identity", "eigen", "kronecker"])
def test_rotation_is_orthogonal(basis):
    params, model_fn, loss_fn = mlp_problem(6)
    u_t, rot = rotation_matrix(basis, params, model_fn, loss_fn, estimator="hutchinson")
    np.testing.assert_allclose(u_t @ u_t.T, np.eye(len(u_t)), atol=1e-12)
    g = jax.tree.map(lambda a: jnp.sin(3 * a) + 1, params)
    np.testing.assert_allclose(flat(rot.unrotate(rot.rotate(g))), flat(g), atol=1e-12)
    if basis == "eigen":  # U^T G U is diagonal in the exact eigenbasis
        gu = u_t @ explicit_ggn(params, model_fn, loss_fn) @ u_t.T
        np.testing.assert_allclose(gu - np.diag(np.diag(gu)), 0.0, atol=1e-10)


# ------------------------------------------------------------------------ reductions to GD
@pytest.mark.parametrize("basis", ["identity", "eigen", "kronecker"])
@pytest.mark.parametrize("power", [1.0, 0.5])
def test_gn_reduces_to_gradient_descent_for_isotropic_curvature(basis, power):
    # orthonormal design columns (X^T X / n = c I): G = c I, so U (c I)^-p U^T = c^-p I
    rng = np.random.default_rng(7)
    n, d, c, lr = 12, 4, 2.5, 0.3
    q, _ = np.linalg.qr(rng.normal(size=(n, d)))
    x = jnp.asarray(q * np.sqrt(c * n))
    y = jnp.asarray(rng.normal(size=(n, 2)))
    params = {"w": jnp.asarray(rng.normal(size=(d, 2)))}
    model_fn = lambda p: x @ p["w"]
    loss_fn = lambda out: 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=1))
    opt = optim.diagonal_gn(lr, power=power, basis=basis, damping=0.0, estimator="exact")
    _, updates, grads, _ = step(opt, params, model_fn, loss_fn)
    np.testing.assert_allclose(flat(updates), -lr * c ** (-power) * flat(grads), rtol=1e-10)


@pytest.mark.parametrize("basis", ["identity", "eigen", "kronecker"])
def test_power_zero_is_gradient_descent_in_every_basis(basis):
    params, model_fn, loss_fn = mlp_problem(8)
    opt = optim.diagonal_gn(0.1, power=0.0, basis=basis, damping=0.0)
    _, updates, grads, _ = step(opt, params, model_fn, loss_fn, key=jax.random.key(1))
    np.testing.assert_allclose(flat(updates), -0.1 * flat(grads), rtol=1e-10, atol=1e-14)


def test_adam_identity_basis_is_optax_adam():
    params, model_fn, loss_fn = mlp_problem(9)
    ours, ref = optim.diagonal_adam(0.01), optax.adam(0.01)
    s_ours, s_ref, p_ours, p_ref = ours.init(params), ref.init(params), params, params
    for _ in range(3):
        p_ours, _, _, s_ours = step(ours, p_ours, model_fn, loss_fn, s_ours)
        _, grads, _ = optim.extra_args(model_fn, loss_fn, p_ref)
        upd, s_ref = ref.update(grads, s_ref, p_ref)
        p_ref = optax.apply_updates(p_ref, upd)
    np.testing.assert_allclose(flat(p_ours), flat(p_ref), rtol=1e-12)


@pytest.mark.parametrize("basis", ["eigen", "kronecker"])
def test_adam_with_dominant_eps_is_gradient_descent_in_any_basis(basis):
    # b1 = 0 and eps >> |g|: Adam's diagonal is 1/eps in every coordinate, so the rotated
    # step U (U^T g / eps) is g / eps -- only if the rotation is applied and undone consistently
    params, model_fn, loss_fn = mlp_problem(10)
    eps = 1e8
    opt = optim.diagonal_adam(1.0, basis, b1=0.0, eps=eps)
    _, updates, grads, _ = step(opt, params, model_fn, loss_fn, key=jax.random.key(2))
    np.testing.assert_allclose(flat(updates), -flat(grads) / eps, rtol=1e-6)


# ------------------------------------------------------------------------ plumbing
def test_separate_curvature_batch_is_used_and_update_jits():
    params, model_fn, loss_fn = linear_problem(11)
    _, model_b, loss_b = linear_problem(12)
    opt = optim.diagonal_gn(1.0, basis="eigen", damping=0.0)
    state = opt.init(params)

    @jax.jit
    def run(params, state):
        _, grads, kw = optim.extra_args(model_fn, loss_fn, params, jax.random.key(0))
        return opt.update(grads, state, params, curvature_model_fn=model_b,
                          curvature_loss_fn=loss_b, **kw)

    updates, _ = run(params, state)
    grad = jax.grad(lambda p: loss_fn(model_fn(p)))(params)
    g_b = explicit_ggn(params, model_b, loss_b)
    np.testing.assert_allclose(flat(updates), -np.linalg.solve(g_b, flat(grad)), atol=1e-10)


def test_missing_model_fn_is_a_type_error_and_bad_options_raise():
    params, model_fn, loss_fn = linear_problem(0)
    opt = optim.diagonal_gn()
    with pytest.raises(TypeError, match="model_fn"):
        opt.update(params, opt.init(params), params)
    # (ValueError, TypeError): under --jaxtyping-packages the Literal annotation rejects
    # the value first (a jaxtyping.TypeCheckError); without it, the library's own check
    with pytest.raises((ValueError, TypeError), match="basis"):
        optim.diagonal_gn(basis="diag")
    with pytest.raises((ValueError, TypeError), match="estimator"):
        optim.diagonal_gn(estimator="magic")
