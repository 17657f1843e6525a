"""Mixed-precision Newton and GN_k (invphys.optim.newton, gn_k, curvature_matrix).

Tolerances come from the unit roundoff of each precision and from the a priori
gradient-error bound, not from printed values.
"""

import math

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from invphys import optim

F64, F32, F16 = jnp.float64, jnp.float32, jnp.float16


def _logistic(n=200, d=6, lam=1e-2, seed=0):
    """Regularised logistic regression, computing in its parameters' dtype; badly scaled
    features (kappa(H*) ~ 1e2) so that a float16 solve visibly slows the rate."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * np.array([1, 3, 10, 0.3, 1, 2])
    y = (rng.random(n) < 1 / (1 + np.exp(-x @ (0.3 * rng.standard_normal(d))))).astype(float)
    x, y = jnp.asarray(x), jnp.asarray(y)

    def model_fn(p):
        dt = p["w"].dtype
        return {"logit": x.astype(dt) @ p["w"] + p["b"], "reg": jnp.sqrt(lam).astype(dt) * p["w"]}

    def loss_fn(o):
        z = o["logit"]
        return jnp.mean(jax.nn.softplus(z) - y.astype(z.dtype) * z) + 0.5 * jnp.sum(o["reg"] ** 2)

    return model_fn, loss_fn, {"w": jnp.zeros(d), "b": jnp.zeros(())}


def _mlp(n=12, seed=0):
    """A tiny tanh MLP 3-4-2 with a least-squares loss (nonzero second-order term)."""
    k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
    x = jax.random.normal(k1, (n, 3))
    y = jax.random.normal(k2, (n, 2))
    p = {"w1": jax.random.normal(k3, (3, 4)), "b1": jnp.full(4, 0.1),
         "w2": jax.random.normal(k4, (4, 2)), "b2": jnp.zeros(2)}

    def model_fn(q):
        return jnp.tanh(x @ q["w1"] + q["b1"]) @ q["w2"] + q["b2"]

    def loss_fn(out):
        return 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=1))

    return model_fn, loss_fn, p


def _flat(tree):
    return jax.flatten_util.ravel_pytree(tree)[0]


def _run(opt, problem, iters=25):
    """``iters`` steps; the float64 gradient norm after each, and the final state."""
    model_fn, loss_fn, p0 = problem
    value_fn = lambda p: loss_fn(model_fn(p))

    @jax.jit
    def go(p):
        def body(c, _):
            p, s = c
            _, g, kw = optim.extra_args(model_fn, loss_fn, p)
            u, s = opt.update(g, s, p, **kw)
            p = optax.apply_updates(p, u)
            return (p, s), jnp.linalg.norm(_flat(jax.grad(value_fn)(p)))

        (p, s), gn = jax.lax.scan(body, (p, opt.init(p)), None, length=iters)
        return p, s, gn

    p, s, gn = go(p0)
    return p, s, np.asarray(gn)


def _first_below(curve, level):
    hits = np.flatnonzero(curve <= level)
    return int(hits[0]) if hits.size else math.inf


# --------------------------------------------------------------------- GN_k matrices
def test_gn_k_matrix_all_terms_is_the_hessian_and_none_is_the_ggn():
    model_fn, loss_fn, p = _mlp()
    x, unravel = jax.flatten_util.ravel_pytree(p)
    hess = jax.hessian(lambda v: loss_fn(model_fn(unravel(v))))(x)
    scale = float(jnp.max(jnp.abs(hess)))
    tol = 1e3 * optim.unit_roundoff(F64) * scale
    full = optim.curvature_matrix(model_fn, loss_fn, p)  # k = None: all
    assert int(full.terms) == 24
    np.testing.assert_allclose(full.matrix, hess, atol=tol)
    big = optim.curvature_matrix(model_fn, loss_fn, p, k=1000)
    np.testing.assert_allclose(big.matrix, hess, atol=tol)
    ggn = optim.linearize_ggn(model_fn, loss_fn, p)
    cols = jax.vmap(lambda e: _flat(ggn.matvec(unravel(e))))(jnp.eye(x.shape[0]))
    gn = optim.curvature_matrix(model_fn, loss_fn, p, k=0)
    assert int(gn.terms) == 0
    np.testing.assert_allclose(gn.matrix, cols.T, atol=tol)
    assert float(jnp.max(jnp.abs(hess - cols.T))) > 1e6 * tol  # the dropped term is real


def test_gn_k_keeps_the_k_largest_loss_gradient_terms():
    model_fn, loss_fn, p = _mlp()
    x, unravel = jax.flatten_util.ravel_pytree(p)
    f = lambda v: model_fn(unravel(v)).ravel()
    gl = jax.grad(lambda o: loss_fn(o.reshape(-1, 2)))(f(x))
    k = 5
    top = np.argsort(-np.abs(np.asarray(gl)))[:k]
    hf = jax.hessian(f)(x)  # (outputs, P, P)
    second = sum(gl[i] * hf[i] for i in top)
    gn = optim.curvature_matrix(model_fn, loss_fn, p, k=0).matrix
    got = optim.curvature_matrix(model_fn, loss_fn, p, k=k)
    tol = 1e3 * optim.unit_roundoff(F64) * float(jnp.max(jnp.abs(gn + second)))
    np.testing.assert_allclose(got.matrix, gn + second, atol=tol)
    assert int(got.terms) == k


def test_gn_k_step_counts_second_order_terms_and_all_terms_equals_newton():
    problem = _mlp()
    _, s_k, _ = _run(optim.gn_k(3, damping=1.0), problem, iters=4)
    assert int(s_k.second_order) == 4 * 3 and int(s_k.matrix_evals) == 4
    p_all, _, _ = _run(optim.gn_k(24, damping=1.0), problem, iters=4)
    p_newton, s_n, _ = _run(optim.newton(damping=1.0), problem, iters=4)
    assert int(s_n.second_order) == 4 * 24
    np.testing.assert_allclose(_flat(p_all), _flat(p_newton), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ Kelley's result
def test_kelley_float32_hessian_keeps_the_iteration_count_and_float16_solve_slows_it():
    problem = _logistic()
    model_fn, loss_fn, _ = problem
    p64, _, g64 = _run(optim.newton(), problem)
    floor64 = float(optim.gradient_error_bound(model_fn, loss_fn, p64, F64))
    target = 100 * floor64  # a few hundred ulps of the float64 gradient: its floor
    it64 = _first_below(g64, target)
    assert it64 < 12  # quadratic convergence from the start
    _, _, g32 = _run(optim.newton(hess_dtype=F32, solve_dtype=F32), problem)
    assert abs(_first_below(g32, target) - it64) <= 1
    _, _, g16 = _run(optim.newton(hess_dtype=F16, solve_dtype=F16), problem)
    it16 = _first_below(g16, target)
    assert it64 < it16 < math.inf  # slower (linear, rate ~ kappa u_16), same accuracy
    assert np.median(g16[-5:]) <= target and np.median(g64[-5:]) <= target
    # iterative refinement in float64 restores the float64 count (within one)
    _, _, gir = _run(optim.newton(solve_dtype=F16, refine_steps=2), problem)
    assert abs(_first_below(gir, target) - it64) <= 1


def test_gradient_precision_sets_the_accuracy_floor():
    problem = _logistic()
    model_fn, loss_fn, _ = problem
    p64, _, _ = _run(optim.newton(), problem, iters=12)
    bound = float(optim.gradient_error_bound(model_fn, loss_fn, p64, F16))
    _, _, g16 = _run(optim.newton(grad_dtype=F16), problem)
    floor = float(np.median(g16[-5:]))
    assert floor <= 2 * bound  # the a priori estimate holds
    assert floor >= 1e-3 * bound  # and the floor is real: far above float64's
    assert floor > 1e6 * float(optim.gradient_error_bound(model_fn, loss_fn, p64, F64))


# ------------------------------------------------------------------------- variants
def test_quasi_reuses_the_hessian_and_inexact_uses_cg():
    problem = _logistic()
    model_fn, loss_fn, _ = problem
    p64, _, _ = _run(optim.newton(), problem, iters=12)
    target = 100 * float(optim.gradient_error_bound(model_fn, loss_fn, p64, F64))
    _, sq, gq = _run(optim.newton(variant="quasi", reuse=4), problem, iters=30)
    assert int(sq.matrix_evals) == math.ceil(30 / 4)
    assert np.median(gq[-5:]) <= target
    _, si, gi = _run(optim.newton(variant="inexact", forcing=1e-2, solve_dtype=F32), problem)
    assert int(si.matrix_evals) == 0 and int(si.hvps) > 0
    assert np.median(gi[-5:]) <= target


def test_contract_errors_and_jit():
    opt = optim.newton()
    model_fn, loss_fn, p = _logistic()
    state = opt.init(p)
    g = jax.grad(lambda q: loss_fn(model_fn(q)))(p)
    with pytest.raises(TypeError, match="model_fn"):
        opt.update(g, state, p)
    # (ValueError, TypeError): under --jaxtyping-packages the Literal annotation rejects
    # the value first (a jaxtyping.TypeCheckError); without it, the library's own check
    with pytest.raises((ValueError, TypeError), match="variant"):
        optim.newton(variant="approximate")
    with pytest.raises(ValueError, match="k must be"):
        optim.gn_k(-1)
    upd, state = jax.jit(lambda g, s, q: opt.update(g, s, q, model_fn=model_fn,
                                                     loss_fn=loss_fn))(g, state, p)
    assert bool(state.accepted) and jax.tree.structure(upd) == jax.tree.structure(p)
