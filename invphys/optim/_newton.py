"""Newton's method in mixed precision, and GN_k (Gauss-Newton plus k second-order terms).

The Hessian of ``loss_fn(model_fn(theta))`` splits, by the chain rule, into

    H = J^T H_loss J  +  sum_i (d loss / d f_i) Hess f_i       (f = the flattened outputs)

Gauss-Newton keeps the first term, Newton both; GN_k keeps the first and the ``k`` terms
of the sum whose weights ``|d loss / d f_i|`` are largest (k = 0: GN; k = all: Newton).

Each part of a step has its own precision, after Kelley ("Newton's method in mixed
precision", SIAM Review 2022) and Carrino et al. (arXiv 2511.17660): the gradient
(it sets the accuracy reached), the curvature matrix and the linear solve (they set the
rate). A precision is used by casting the parameters with ``.astype`` before the
derivative is taken, so ``model_fn`` and ``loss_fn`` should compute in the dtype of
their inputs (cast closed-over data to it, ``x.astype(p.dtype)``); a model that does
not is promoted by JAX to its data's dtype. The step, the line search and the
refinement residuals stay in the working precision (the parameters' dtype).

XLA:CPU has no float16/bfloat16 LU or Cholesky, so a half-precision solve is emulated:
the matrix is rounded to the solve precision, LU-factored in float32, the factors are
rounded back to the solve precision and the triangular solves run in it. That keeps the
rounding of storing the factors, not the accumulated rounding of a half-precision
factorization. Half-precision arithmetic on CPU is itself emulated (float32 with
rounding), so its wall-clock says nothing about half-precision hardware.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, Int, PyTree, Scalar

from ._contract import require_model_and_loss, value_fn_of
from ._linesearch import backtracking, lm_damping_update

__all__ = [
    "CurvatureMatrix",
    "NewtonState",
    "curvature_matrix",
    "gn_k",
    "gradient_error_bound",
    "newton",
    "unit_roundoff",
]

DType = Any
Variant = Literal["exact", "quasi", "inexact"]
HALF = (jnp.float16, jnp.bfloat16)


def unit_roundoff(dtype: DType) -> float:
    """``u = eps / 2`` of a floating dtype (float16: 2^-11, bfloat16: 2^-8)."""
    return float(jnp.finfo(dtype).eps) / 2.0


def _cast(tree: PyTree[Array], dtype: DType | None) -> PyTree[Array]:
    return tree if dtype is None else jax.tree.map(lambda x: x.astype(dtype), tree)


def _flat(params: PyTree[Array], dtype: DType | None):
    """``(x0, unravel)``: the parameters cast to ``dtype`` and flattened."""
    return jax.flatten_util.ravel_pytree(_cast(params, dtype))


class CurvatureMatrix(NamedTuple):
    """A dense curvature matrix, the flattened gradient of the loss with respect to the
    outputs, and ``terms``: the output Hessians ``Hess f_i`` it includes."""

    matrix: Float[Array, "p p"]
    loss_grad: Float[Array, " m"]
    terms: Int[Array, ""]


def _selected_weights(gl: Float[Array, " m"], k: int) -> Float[Array, " m"]:
    """``gl`` on the ``k`` entries of largest magnitude, zero elsewhere (static ``k``)."""
    m = gl.shape[0]
    if k >= m:
        return gl
    if k <= 0:
        return jnp.zeros_like(gl)
    _, idx = jax.lax.top_k(jnp.abs(gl), k)
    return jnp.zeros_like(gl).at[idx].set(gl[idx])


def _split(model_fn, loss_fn, params, dtype):
    """The flattened model and loss at ``params`` cast to ``dtype``."""
    x0, unravel = _flat(params, dtype)
    f0, unravel_out = jax.flatten_util.ravel_pytree(model_fn(unravel(x0)))

    def model_flat(x):
        return jax.flatten_util.ravel_pytree(model_fn(unravel(x)))[0]

    def loss_flat(o):
        return loss_fn(unravel_out(o))

    return x0, f0, model_flat, loss_flat


def curvature_matrix(
    model_fn: Callable, loss_fn: Callable, params: PyTree[Array], k: int | None = None,
    dtype: DType | None = None,
) -> CurvatureMatrix:
    """The dense GN_k matrix ``J^T H_loss J + sum_{i in S_k} (dloss/df_i) Hess f_i``.

    ``S_k``: the ``k`` outputs with the largest ``|dloss/df_i|`` (``k=None`` or ``k >=``
    the number of outputs: all of them, the exact Hessian; ``k=0``: the GGN). Evaluated
    at ``params`` cast to ``dtype``. ``J`` is formed by forward mode (P JVPs), the
    second-order part as the Hessian of the scalar ``sum_{i in S_k} w_i f_i`` (P
    Hessian-vector products of the model), so the cost is counted in ``terms``, the
    number of output Hessians included, not in wall-clock. Meant for P up to ~10^4.
    """
    x0, f0, model_flat, loss_flat = _split(model_fn, loss_fn, params, dtype)
    m = f0.shape[0]
    k = m if k is None else min(int(k), m)
    jac = jax.jacfwd(model_flat)(x0)
    gl = jax.grad(loss_flat)(f0)
    grad_loss = jax.grad(loss_flat)
    hj = jax.vmap(lambda c: jax.jvp(grad_loss, (f0,), (c,))[1], in_axes=1, out_axes=1)(jac)
    mat = jac.T @ hj
    if k > 0:
        w = jax.lax.stop_gradient(_selected_weights(gl, k))
        mat = mat + jax.hessian(lambda x: jnp.vdot(w, model_flat(x)))(x0)
    mat = 0.5 * (mat + mat.T)
    return CurvatureMatrix(mat, gl, jnp.asarray(k, jnp.int32))


def _curvature_hvp(model_fn, loss_fn, params, k: int | None, dtype):
    """``v -> M v`` for the GN_k matrix at ``params`` (in ``dtype``), matrix-free, and the
    number of output Hessians each product includes."""
    x0, f0, model_flat, loss_flat = _split(model_fn, loss_fn, params, dtype)
    m = f0.shape[0]
    if k is None or k >= m:
        g = jax.grad(lambda x: loss_flat(model_flat(x)))
        return (lambda v: jax.jvp(g, (x0,), (v.astype(x0.dtype),))[1]), m
    _, jvp_fn = jax.linearize(model_flat, x0)
    vjp_fn = jax.linear_transpose(jvp_fn, x0)
    grad_loss = jax.grad(loss_flat)
    w = _selected_weights(grad_loss(f0), k)
    g2 = jax.grad(lambda x: jnp.vdot(w, model_flat(x)))

    def mv(v):
        v = v.astype(x0.dtype)
        gn = vjp_fn(jax.jvp(grad_loss, (f0,), (jvp_fn(v),))[1])[0]
        return gn + jax.jvp(g2, (x0,), (v,))[1] if k > 0 else gn

    return mv, max(k, 0)


def _factor(mat: Float[Array, "p p"], solve_dtype: DType):
    """LU of ``mat`` in ``solve_dtype`` (half precision: emulated, see the module doc)."""
    a = mat.astype(solve_dtype)
    if a.dtype in HALF:
        lu, piv = jax.scipy.linalg.lu_factor(a.astype(jnp.float32))
        return lu.astype(solve_dtype), piv
    return jax.scipy.linalg.lu_factor(a)


def _lu_solve(factors, rhs: Float[Array, " p"]) -> Float[Array, " p"]:
    """Solve with the factors in their precision; the right-hand side is scaled to unit
    max-norm first, so that a half-precision solve neither overflows nor underflows."""
    lu, piv = factors
    scale = jnp.max(jnp.abs(rhs))
    safe = jnp.where(scale > 0, scale, 1.0)
    x = jax.scipy.linalg.lu_solve((lu, piv), (rhs / safe).astype(lu.dtype))
    return x.astype(rhs.dtype) * safe


def _cg(mv, b, *, rtol, max_steps, dtype):
    """CG on ``M d = b`` in ``dtype`` to ``|M d - b| <= rtol |b|`` (the forcing term);
    stops at negative curvature (then returns the last iterate, or ``b`` if none)."""
    b_w = b
    b = b.astype(dtype)
    mvd = lambda v: mv(v).astype(dtype)
    tol2 = (rtol * jnp.linalg.norm(b_w)) ** 2

    def cond(c):
        i, _, r, _, rr, neg = c
        return (i < max_steps) & (rr.astype(b_w.dtype) > tol2) & ~neg

    def body(c):
        i, x, r, p, rr, _ = c
        mp = mvd(p)
        curv = jnp.vdot(p, mp)
        neg = curv <= 0
        alpha = jnp.where(neg, 0.0, rr / jnp.where(neg, 1.0, curv)).astype(dtype)
        x = x + alpha * p
        r = r - alpha * mp
        rr_new = jnp.vdot(r, r)
        p = r + (rr_new / jnp.where(rr > 0, rr, 1.0)).astype(dtype) * p
        return i + 1, x, r, p, rr_new, neg

    z = jnp.zeros_like(b)
    i, x, _, _, _, _ = jax.lax.while_loop(
        cond, body, (jnp.zeros((), jnp.int32), z, b, b, jnp.vdot(b, b), jnp.asarray(False)))
    x = jnp.where(jnp.any(x != 0), x, b)
    return x.astype(b_w.dtype), i


class NewtonState(NamedTuple):
    """Arrays only (checkpointable). ``factors``/``matrix``/``age``: the LU factors (solve
    precision) and matrix (curvature precision) a quasi-Newton step reuses, and the steps
    since they were formed (empty arrays for the other variants). Counters: ``grad_evals``,
    ``matrix_evals`` (dense matrices formed), ``hvps`` (Hessian-vector products of the
    inexact variant), ``second_order`` (output Hessians ``Hess f_i`` included: per matrix,
    or per product), ``solver_steps`` (refinement or CG steps, summed). Last step:
    ``step_size``, ``accepted``, ``fallback`` (not a descent direction: ``-g`` was used),
    ``grad_norm`` (of the gradient in its precision)."""

    count: Int[Array, ""]
    damping: Float[Array, ""]
    factors: Float[Array, "q q"]
    pivots: Int[Array, " q"]
    matrix: Float[Array, "q q"]
    age: Int[Array, ""]
    grad_evals: Int[Array, ""]
    matrix_evals: Int[Array, ""]
    hvps: Int[Array, ""]
    second_order: Int[Array, ""]
    solver_steps: Int[Array, ""]
    step_size: Float[Array, ""]
    accepted: Bool[Array, ""]
    fallback: Bool[Array, ""]
    grad_norm: Float[Array, ""]


def newton(
    *,
    variant: Variant = "exact",
    second_order_terms: int | None = None,
    grad_dtype: DType | None = None,
    hess_dtype: DType | None = None,
    solve_dtype: DType | None = None,
    refine_steps: int = 0,
    reuse: int = 5,
    forcing: float = 0.1,
    cg_max_steps: int = 100,
    damping: float = 0.0,
    adaptive_damping: bool = False,
    line_search: bool = True,
    max_backtracks: int = 20,
    armijo: float = 1e-4,
    noise: float = 10.0,
) -> optax.GradientTransformationExtraArgs:
    """Newton (or GN_k) with a precision per part, for full-batch problems up to ~10^4
    parameters; an optax transformation of the extra-args contract (``model_fn`` and
    ``loss_fn`` needed, see :mod:`invphys.optim`).

    Per update, with ``w`` the working precision (the parameters' dtype):

    1. gradient ``g`` at ``params`` cast to ``grad_dtype`` (None: the incoming update);
    2. curvature ``M`` = GN_k matrix (:func:`curvature_matrix`; ``second_order_terms``:
       None = the exact Hessian, 0 = GGN, k) at ``params`` cast to ``hess_dtype``, plus
       ``damping * I``;
    3. direction ``M d = -g``: ``"exact"``: LU in ``solve_dtype``, then ``refine_steps``
       steps of iterative refinement with residual ``-g - M d`` in ``w``; ``"quasi"``:
       the same with ``M`` and its factors formed every ``reuse`` steps only;
       ``"inexact"``: CG in ``solve_dtype`` on Hessian-vector products (``hess_dtype``)
       to the forcing tolerance ``|M d + g| <= forcing |g|``;
    4. ``d = -g`` if ``d`` is not a descent direction (``state.fallback``);
    5. the shared Armijo :func:`backtracking` on ``value_fn`` in ``w``, with the
       reference value raised by ``noise * u_w * |f|`` (the loss's own rounding: near the
       floor a decrease is invisible in ``w``, and an exact Armijo test would shrink good
       steps to nothing); the step is taken if the test holds or the loss went down,
       else none (a rejected step);
    6. ``adaptive_damping``: the GN core's Levenberg-Marquardt rule on ``damping`` (a
       non-descent direction counts as a rejected step: the damping grows).
    """
    if variant not in ("exact", "quasi", "inexact"):
        raise ValueError(f"variant must be 'exact', 'quasi' or 'inexact', got {variant!r}")
    if reuse < 1:
        raise ValueError(f"reuse must be >= 1, got {reuse}")

    def init(params):
        x0, _ = _flat(params, None)
        p = x0.shape[0] if variant == "quasi" else 0
        w = x0.dtype
        sd = solve_dtype or w
        hd = hess_dtype or w
        zi = jnp.zeros((), jnp.int32)
        zw = jnp.zeros((), w)
        return NewtonState(zi, jnp.asarray(damping, w), jnp.zeros((p, p), sd),
                           jnp.zeros((p,), jnp.int32), jnp.zeros((p, p), hd), zi, zi, zi,
                           zi, zi, zi, zw, jnp.asarray(False), jnp.asarray(False), zw)

    def update(updates, state, params=None, **extra):
        if params is None:
            raise ValueError("newton needs params in update(updates, state, params)")
        model_fn, loss_fn = require_model_and_loss(extra, "newton")
        value_fn = extra.get("value_fn") or value_fn_of(model_fn, loss_fn)
        x, unravel = _flat(params, None)
        w = x.dtype
        sd = solve_dtype or w
        hd = hess_dtype or w
        if grad_dtype is None:
            g = jax.flatten_util.ravel_pytree(updates)[0].astype(w)
        else:
            gp = jax.grad(value_fn)(_cast(params, grad_dtype))
            g = jax.flatten_util.ravel_pytree(gp)[0].astype(w)
        lam = state.damping
        counts: dict[str, Array] = {}

        def form():
            cm = curvature_matrix(model_fn, loss_fn, params, second_order_terms, hd)
            mat = (cm.matrix + lam.astype(hd) * jnp.eye(x.shape[0], dtype=hd)).astype(hd)
            return mat, cm.terms

        if variant == "inexact":
            mv, terms = _curvature_hvp(model_fn, loss_fn, params, second_order_terms, hd)
            d, steps = _cg(lambda v: mv(v).astype(w) + lam * v.astype(w), -g, rtol=forcing,
                           max_steps=cg_max_steps, dtype=sd)
            counts = dict(hvps=state.hvps + steps,
                          second_order=state.second_order + terms * steps)
            mat_w = None
            mv_w = lambda v: mv(v).astype(w) + lam * v
        else:
            if variant == "quasi":
                fresh = (state.age % reuse) == 0

                def new():
                    mat, t = form()
                    lu, piv = _factor(mat, sd)
                    return mat, lu, piv.astype(jnp.int32), t

                def old():
                    return (state.matrix, state.factors, state.pivots,
                            jnp.zeros((), jnp.int32))

                mat, lu, piv, terms = jax.lax.cond(fresh, new, old)
                counts = dict(matrix=mat, factors=lu, pivots=piv,
                              age=jnp.where(fresh, 1, state.age + 1).astype(jnp.int32),
                              matrix_evals=state.matrix_evals + fresh.astype(jnp.int32))
            else:
                mat, terms = form()
                lu, piv = _factor(mat, sd)
                counts = dict(matrix_evals=state.matrix_evals + 1)
            mat_w = mat.astype(w)
            d = _lu_solve((lu, piv), -g)
            for _ in range(refine_steps):
                d = d + _lu_solve((lu, piv), -g - mat_w @ d)
            steps = jnp.asarray(refine_steps, jnp.int32)
            counts["second_order"] = state.second_order + terms
            mv_w = lambda v: mat_w @ v

        slope = jnp.vdot(g, d)
        fallback = ~(jnp.all(jnp.isfinite(d)) & (slope < 0))
        d = jnp.where(fallback, -g, d)
        slope = jnp.where(fallback, -jnp.vdot(g, g), slope)
        direction = unravel(d)
        value0 = extra.get("value")
        value0 = value_fn(params) if value0 is None else value0
        tol = noise * unit_roundoff(w) * jnp.abs(value0)
        alpha, f_new, _, ok = backtracking(value_fn, params, direction, value0 + tol, slope,
                                           max_backtracks=max_backtracks if line_search else 0,
                                           armijo=armijo)
        take = ok | (jnp.isfinite(f_new) & (f_new < value0))
        scale = jnp.where(take, alpha, 0.0)
        new_lam = lam
        if adaptive_damping:
            predicted = -(alpha * slope + 0.5 * alpha**2 * jnp.vdot(d, mv_w(d)))
            actual = value0 - f_new
            rho = jnp.where(predicted > 0, actual / jnp.where(predicted > 0, predicted, 1.0),
                            -jnp.inf)
            new_lam = lm_damping_update(lam, jnp.where(take & ~fallback, rho, -jnp.inf))
        out = jax.tree.map(lambda v: (scale * v).astype(v.dtype), direction)
        new_state = state._replace(
            count=state.count + 1, damping=jnp.asarray(new_lam, w),
            grad_evals=state.grad_evals + 1, solver_steps=state.solver_steps + steps,
            step_size=jnp.asarray(alpha, w), accepted=take, fallback=fallback,
            grad_norm=jnp.linalg.norm(g).astype(w), **counts)
        return out, new_state

    return optax.GradientTransformationExtraArgs(init, update)


def gn_k(k: int, **kwargs: Any) -> optax.GradientTransformationExtraArgs:
    """GN_k: :func:`newton` with the GGN plus the ``k`` second-order terms of largest
    ``|dloss/df_i|`` (``k=0``: Gauss-Newton; ``k >=`` the number of outputs: Newton).
    Keywords as :func:`newton` (precisions, variant, damping, line search)."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return newton(second_order_terms=int(k), **kwargs)


def gradient_error_bound(
    model_fn: Callable, loss_fn: Callable, params: PyTree[Array], grad_dtype: DType
) -> Scalar:
    """A priori bound on the error of the gradient ``J^T dloss/df`` evaluated in
    ``grad_dtype`` at ``params``: ``u * || |J|^T (|dloss/df| + |diag d2loss/df2| |f|) ||_2``.

    ``u`` is the unit roundoff of ``grad_dtype``; the model is that of a first-order
    rounding analysis in which the outputs ``f``, the loss derivatives and the products
    with ``J`` are each rounded once and sums accumulate in at least float32 (as XLA
    does for half precision), so no ``n u`` growth term. ``loss_fn`` is taken to be
    separable over the outputs (a mean of per-sample losses: ``d2loss/df2`` diagonal).
    Near a minimiser ``x*`` with a non-singular Hessian, Newton's iteration cannot push
    the true gradient norm below about this (Kelley 2022, Sec. 2; Tisseur 2001):
    the accuracy floor ``|grad f(x_inf)| <~ bound``, ``|x_inf - x*| <~ |H^-1| bound``.
    """
    x0, f0, model_flat, loss_flat = _split(model_fn, loss_fn, params, None)
    jac = jax.jacfwd(model_flat)(x0)
    gl = jax.grad(loss_flat)(f0)
    hdiag = jnp.abs(jax.jvp(jax.grad(loss_flat), (f0,), (jnp.ones_like(f0),))[1])
    size = jnp.abs(gl) + jnp.abs(f0) * hdiag
    return unit_roundoff(grad_dtype) * jnp.linalg.norm(jnp.abs(jac).T @ size)
