"""Stochastic Gauss-Newton with LM damping and a cumulative (AdaGrad-like) GN metric.

The update of arXiv 2511.03972: ``u_k = w_k - eta H_k^{-1} g_k`` with
``H_k = alpha sum_{t<=k} G_t + lambda I`` (``G_t = J_t^T H_loss J_t``, the GGN of batch t:
``J_t^T J_t`` for the loss ``1/2 |r|^2``), then ``w_{k+1}`` = the projection of ``u_k``
onto the ball ``|w - w_0| <= R`` in the ``H_k`` metric.

Which representation of ``sum_t G_t`` (``metric=``):

* ``"dense"`` (the default, ``"auto"``, when ``P <= dense_max_params``, 2000): the exact
  ``P x P`` sum, each ``G_t`` formed from ``P`` matrix-free products (``vmap`` over the
  identity); the step is an eigen-solve, the projection exact.
* ``"diagonal"`` (``"auto"`` above the threshold): a cumulative sum of *unbiased*
  estimates of ``diag(G_t)`` (Hutchinson, ``probes`` Rademacher vectors per step, one
  GGN product each). A cumulative sum of full matrices cannot be kept matrix-free
  without storing every past batch's linearisation; the diagonal keeps the
  metric's defining property (it accumulates curvature of all batches seen, as
  AdaGrad accumulates squared gradients), costs ``O(P)`` memory, and makes the step and
  the projection exact in that metric. The noise of single estimates averages out in
  the sum; the metric uses ``max(sum, 0)`` so it stays ``>= lambda``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, Int, PyTree, Scalar

from ._contract import require_model_and_loss
from ._curvature import ggn_lambda_min_informative, linearize_ggn

__all__ = ["SGNState", "project_onto_ball", "sgn_lm"]


class SGNState(NamedTuple):
    """Arrays only. ``metric``: ``sum_t G_t`` (``P x P``, dense) or its diagonal (``P``);
    ``anchor``: ``w_0``, the ball's centre; ``multiplier``: the projection's Lagrange
    multiplier ``mu`` (0 when the ball constraint is inactive); ``projected``: whether
    it was active; ``lambda_min``: the smallest eigenvalue of this batch's ``G_t`` on its
    informative side (see :func:`sgn_lm`; NaN when not logged)."""

    count: Int[Array, ""]
    anchor: PyTree[Array]
    metric: Float[Array, "P P"] | Float[Array, " P"]
    multiplier: Float[Array, ""]
    projected: Bool[Array, ""]
    lambda_min: Float[Array, ""]


def _secular(h: Float[Array, " n"], c: Float[Array, " n"], radius: float | Scalar, iters: int):
    """``s(mu) = h c / (h + mu)`` with ``|s(mu)| = radius`` (``mu = 0`` if ``|c| <= radius``).

    Newton on ``1/|s(mu)| - 1/radius`` from ``mu = 0``: the function is concave and
    increasing, so the iterates rise monotonically to the root (More-Sorensen).
    """
    active = jnp.linalg.norm(c) > radius

    def body(_, mu):
        s = h * c / (h + mu)
        ns = jnp.linalg.norm(s)
        dphi = jnp.sum(s * s / (h + mu)) / ns**3
        mu_new = mu - (1.0 / ns - 1.0 / radius) / jnp.where(dphi > 0, dphi, 1.0)
        return jnp.where(active & (ns > 0), jnp.maximum(mu_new, 0.0), mu)

    mu = jax.lax.fori_loop(0, iters, body, jnp.zeros((), c.dtype))
    return h * c / (h + mu), mu, active


def project_onto_ball(
    u: Float[Array, " P"],
    center: Float[Array, " P"],
    radius: float | Scalar,
    metric: Float[Array, "P P"] | Float[Array, " P"],
    *,
    iters: int = 50,
) -> tuple[Float[Array, " P"], Float[Array, ""]]:
    """``argmin_{|w - center| <= radius} (w - u)^T H (w - u)`` and its multiplier ``mu``.

    ``metric`` is ``H``: a symmetric positive definite matrix, or a positive vector for a
    diagonal ``H``. KKT: ``H (w - u) + mu (w - center) = 0``, ``mu >= 0``, ``mu
    (|w - center| - radius) = 0``, so ``w - center = (H + mu I)^{-1} H (u - center)``;
    in ``H``'s eigenbasis that is a 1-D root find for ``mu`` (:func:`_secular`).
    """
    c = u - center
    if metric.ndim == 1:
        s, mu, _ = _secular(metric, c, radius, iters)
        return center + s, mu
    evals, q = jnp.linalg.eigh(metric)
    s, mu, _ = _secular(evals, q.T @ c, radius, iters)
    return center + q @ s, mu


def sgn_lm(
    learning_rate: float | Callable[[Int[Array, ""]], Scalar] = 1.0,
    *,
    alpha: float = 1.0,
    damping: float | Scalar = 1e-3,  # a traced scalar too (a sweep over lambda, jitted)
    radius: float | None = None,
    metric: Literal["auto", "dense", "diagonal"] = "auto",
    dense_max_params: int = 2000,
    probes: int = 1,
    log_lambda_min: bool = False,
    lanczos_iters: int = 20,
    projection_iters: int = 50,
) -> optax.GradientTransformationExtraArgs:
    """Stochastic Gauss-Newton with LM damping on mini-batches (arXiv 2511.03972).

    ``w_{k+1} = Proj^{H_k}_{|w - w_0| <= radius}(w_k - eta_k H_k^{-1} g_k)`` with
    ``H_k = alpha sum_{t<=k} G_t + damping I`` (see the module docstring for the dense and
    diagonal representations and when each is used); ``radius=None`` skips the
    projection. ``w_0`` is the ``params`` given to ``init``. ``learning_rate`` is ``eta``
    (a float or an optax schedule of the step count). Extra args: ``model_fn``,
    ``loss_fn`` and, for the diagonal metric or Lanczos, ``key`` (a key derived from the
    step count is used if none is given).

    ``log_lambda_min`` stores in the state the smallest eigenvalue of the *batch's* GN
    matrix ``G_k`` on its informative side (:func:`ggn_lambda_min_informative`): a batch
    of ``m`` output entries gives ``G_k`` rank ``<= m``, so when ``m < P`` its smallest
    eigenvalue is 0 for any model, and what is logged is the smallest of its top ``m``
    eigenvalues, i.e. of the output-space ``H^{1/2} J_k J_k^T H^{1/2}`` (dense metric:
    ``eigvalsh(G_k)[P - m]``, exact; diagonal: that ``m x m`` matrix, exact, from ``m``
    products). When ``m >= P``: ``lambda_min(G_k)`` (dense: exact; diagonal:
    ``lanczos_iters`` Lanczos steps, an upper bound). The generalisation claims of the
    paper concern the GN matrix of the whole training set: evaluate
    :func:`ggn_lambda_min_informative` on the full data for that (as
    ``invphys reproduce --paper sgn`` does); the mini-batch value is a noisy proxy.
    """
    if metric not in ("auto", "dense", "diagonal"):
        raise ValueError(f"metric must be 'auto', 'dense' or 'diagonal', got {metric!r}")

    def is_dense(n: int) -> bool:
        return metric == "dense" or (metric == "auto" and n <= dense_max_params)

    def init(params):
        flat, _ = jax.flatten_util.ravel_pytree(params)
        n = flat.shape[0]
        shape = (n, n) if is_dense(n) else (n,)
        z = jnp.zeros((), flat.dtype)
        return SGNState(jnp.zeros((), jnp.int32), params, jnp.zeros(shape, flat.dtype), z,
                        jnp.asarray(False), jnp.full((), jnp.nan, flat.dtype))

    def update(updates, state, params=None, **extra):
        if params is None:
            raise ValueError("sgn_lm needs params in update(updates, state, params)")
        model_fn, loss_fn = require_model_and_loss(extra, "sgn_lm")
        key = extra.get("key")
        if key is None:
            key = jax.random.fold_in(jax.random.key(0), state.count)
        ggn = linearize_ggn(model_fn, loss_fn, params)
        w, unravel = jax.flatten_util.ravel_pytree(params)
        g, _ = jax.flatten_util.ravel_pytree(updates)
        w0, _ = jax.flatten_util.ravel_pytree(state.anchor)
        n, dtype = w.shape[0], w.dtype

        def mv(v):
            return jax.flatten_util.ravel_pytree(ggn.matvec(unravel(v)))[0].astype(dtype)

        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        lam_min = jnp.full((), jnp.nan, dtype)
        if is_dense(n):
            gt = jax.vmap(mv)(jnp.eye(n, dtype=dtype))
            gt = 0.5 * (gt + gt.T)
            total = state.metric + gt
            evals, q = jnp.linalg.eigh(alpha * total + damping * jnp.eye(n, dtype=dtype))
            u = w - lr * (q @ ((q.T @ g) / evals))
            if log_lambda_min:
                m = sum(x.size for x in jax.tree.leaves(ggn.outputs))
                lam_min = jnp.linalg.eigvalsh(gt)[max(n - m, 0)]
            h, c_of, back = evals, (lambda x: q.T @ x), (lambda s: q @ s)
        else:
            v = jax.random.rademacher(key, (probes, n), dtype=dtype)
            total = state.metric + jnp.mean(v * jax.vmap(mv)(v), axis=0)
            h = alpha * jnp.maximum(total, 0.0) + damping
            u = w - lr * g / h
            if log_lambda_min:
                lam_min = ggn_lambda_min_informative(ggn, params, jax.random.fold_in(key, 1),
                                                     lanczos_iters).astype(dtype)
            c_of, back = (lambda x: x), (lambda s: s)
        if radius is None:
            w_new, mu, active = u, jnp.zeros((), dtype), jnp.asarray(False)
        else:
            s, mu, active = _secular(h, c_of(u - w0), jnp.asarray(radius, dtype),
                                     projection_iters)
            w_new = w0 + back(s)
        new_state = SGNState(state.count + 1, state.anchor, total, mu.astype(dtype), active,
                             lam_min)
        return unravel(w_new - w), new_state

    return optax.GradientTransformationExtraArgs(init, update)
