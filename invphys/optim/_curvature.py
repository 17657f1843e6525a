"""Curvature products shared by the Gauss-Newton family, and a Lanczos eigenvalue estimate.

The generalised Gauss-Newton (GGN) matrix of ``loss_fn(model_fn(theta))`` is
``G = J^T H_loss J``. It is never formed: ``jax.linearize`` gives ``v -> J v``,
its transpose gives ``u -> J^T u``, and a JVP of ``grad(loss_fn)`` at the
outputs gives ``u -> H_loss u``. One product costs about one forward and one
backward pass, and the memory of one linearisation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree, Scalar

__all__ = [
    "GGN",
    "ggn_extreme_eigenvalues",
    "ggn_lambda_min",
    "ggn_lambda_min_informative",
    "lanczos_extreme_eigenvalues",
    "linearize_ggn",
    "tree_vdot",
]


def tree_vdot(a: PyTree[Array], b: PyTree[Array]) -> Scalar:
    """The Euclidean inner product of two pytrees of the same structure."""
    parts = [jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)]
    return sum(parts[1:], parts[0]) if parts else jnp.zeros(())


def tree_axpy(alpha: Scalar, x: PyTree[Array], y: PyTree[Array]) -> PyTree[Array]:
    """``alpha * x + y`` leaf by leaf (each leaf keeps its dtype)."""
    return jax.tree.map(lambda a, b: (alpha * a).astype(b.dtype) + b, x, y)


class GGN(NamedTuple):
    """A linearisation of ``loss_fn(model_fn(.))`` at ``params``: the pieces of ``G v``."""

    outputs: PyTree[Array]
    value: Scalar
    jvp: Callable[[PyTree[Array]], PyTree[Array]]
    vjp: Callable[[PyTree[Array]], PyTree[Array]]
    loss_hvp: Callable[[PyTree[Array]], PyTree[Array]]
    loss_grad: PyTree[Array]

    def matvec(self, v: PyTree[Array]) -> PyTree[Array]:
        """``G v = J^T (H_loss (J v))``."""
        return self.vjp(self.loss_hvp(self.jvp(v)))

    def gradient(self) -> PyTree[Array]:
        """``J^T grad(loss_fn)(outputs)``: the gradient of the objective at ``params``."""
        return self.vjp(self.loss_grad)


def linearize_ggn(model_fn: Callable, loss_fn: Callable, params: PyTree[Array]) -> GGN:
    """Linearise ``model_fn`` at ``params`` and return the matrix-free GGN pieces."""
    outputs, jvp_fn = jax.linearize(model_fn, params)
    transpose = jax.linear_transpose(jvp_fn, params)
    value, loss_grad = jax.value_and_grad(loss_fn)(outputs)
    grad_loss = jax.grad(loss_fn)

    def loss_hvp(u):
        return jax.jvp(grad_loss, (outputs,), (u,))[1]

    def vjp(u):
        (out,) = transpose(u)
        return out

    return GGN(outputs, value, jvp_fn, vjp, loss_hvp, loss_grad)


def lanczos_extreme_eigenvalues(
    matvec: Callable[[Float[Array, " n"]], Float[Array, " n"]],
    v0: Float[Array, " n"],
    num_iters: int,
) -> tuple[Scalar, Scalar]:
    """The smallest and largest Ritz values of a symmetric operator after ``num_iters`` steps.

    Lanczos with full reorthogonalisation (the basis, ``num_iters x n``, is kept),
    run under ``lax.fori_loop`` so it jit-compiles and vmaps. Ritz values lie inside
    the spectrum, so the smallest is an *upper* bound on ``lambda_min`` that is exact
    once ``num_iters`` reaches the number of distinct eigenvalues seen by ``v0``;
    on breakdown (an invariant subspace found early) the remaining steps are masked out.
    """
    n = v0.shape[0]
    k = int(num_iters)
    dtype = v0.dtype
    tiny = jnp.finfo(dtype).eps * 10
    q0 = v0 / jnp.linalg.norm(v0)

    def body(i, carry):
        basis, alphas, betas, used, q, alive = carry
        basis = basis.at[i].set(q)
        w = matvec(q)
        alpha = jnp.vdot(q, w)
        w = w - basis.T @ (basis @ w)  # full reorthogonalisation, twice for stability
        w = w - basis.T @ (basis @ w)
        beta = jnp.linalg.norm(w)
        alphas = alphas.at[i].set(jnp.where(alive, alpha, 0.0))
        betas = betas.at[i].set(jnp.where(alive, beta, 0.0))
        used = used.at[i].set(alive)
        alive_next = alive & (beta > tiny * jnp.maximum(jnp.abs(alpha), 1.0))
        q_next = jnp.where(alive_next, w / jnp.where(alive_next, beta, 1.0), 0.0)
        return basis, alphas, betas, used, q_next, alive_next

    init = (jnp.zeros((k, n), dtype), jnp.zeros(k, dtype), jnp.zeros(k, dtype),
            jnp.zeros(k, bool), q0, jnp.asarray(True))
    _, alphas, betas, used, _, _ = jax.lax.fori_loop(0, k, body, init)
    off = jnp.where(used[1:], betas[:-1], 0.0)  # couples step i to i+1 only if i+1 ran

    def extreme(fill):
        diag = jnp.where(used, alphas, fill)
        t = jnp.diag(diag) + jnp.diag(off, 1) + jnp.diag(off, -1)
        return jnp.linalg.eigvalsh(t)

    big = jnp.max(jnp.abs(alphas)) + 2 * jnp.max(betas) + 1.0
    return extreme(big)[0], extreme(-big)[-1]


def ggn_extreme_eigenvalues(ggn: GGN, params: PyTree[Array], key: Array, num_iters: int):
    """Lanczos extreme Ritz values of the GGN matrix at ``params`` (matrix-free)."""
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    v0 = jax.random.normal(key, flat.shape, flat.dtype)

    def mv(v):
        return jax.flatten_util.ravel_pytree(ggn.matvec(unravel(v)))[0]

    return lanczos_extreme_eigenvalues(mv, v0, num_iters)


def ggn_lambda_min(
    model_fn: Callable, loss_fn: Callable, params: PyTree[Array], key: Array, num_iters: int = 20
) -> Scalar:
    """The smallest Ritz value of ``G = J^T H_loss J`` at ``params`` after ``num_iters`` Lanczos
    steps: an upper bound on its smallest eigenvalue (exact when ``num_iters >= P``)."""
    return ggn_extreme_eigenvalues(linearize_ggn(model_fn, loss_fn, params), params, key,
                                   num_iters)[0]



def _output_space_lambda_min(ggn: GGN) -> Scalar:
    """The smallest eigenvalue of ``H^{1/2} J J^T H^{1/2}`` (``m x m``, ``m`` the number of
    output entries), built column by column from ``m`` products ``J (J^T e)`` and ``m``
    loss-Hessian products: ``J`` itself is never formed."""
    flat_out, unravel = jax.flatten_util.ravel_pytree(ggn.outputs)
    m, dtype = flat_out.shape[0], flat_out.dtype
    eye = jnp.eye(m, dtype=dtype)

    def ravel(t):
        return jax.flatten_util.ravel_pytree(t)[0].astype(dtype)

    gram = jax.vmap(lambda e: ravel(ggn.jvp(ggn.vjp(unravel(e)))))(eye)
    hess = jax.vmap(lambda e: ravel(ggn.loss_hvp(unravel(e))))(eye)
    h_evals, h_vecs = jnp.linalg.eigh(0.5 * (hess + hess.T))
    root = (h_vecs * jnp.sqrt(jnp.maximum(h_evals, 0.0))) @ h_vecs.T
    return jnp.linalg.eigvalsh(root @ (0.5 * (gram + gram.T)) @ root)[0]


def ggn_lambda_min_informative(
    ggn: GGN, params: PyTree[Array], key: Array | None = None, num_iters: int = 20
) -> Scalar:
    """The smallest eigenvalue of ``G = J^T H_loss J`` on its informative side.

    With ``m`` output entries and ``P`` parameters, ``G`` (``P x P``) has rank at most
    ``m``: when ``m < P`` (a mini-batch smaller than the network) its smallest eigenvalue
    is 0 whatever the model, so the informative quantity is the smallest eigenvalue of
    the ``m x m`` output-space matrix ``H^{1/2} J J^T H^{1/2}``, which has the same
    non-zero eigenvalues as ``G`` (for ``loss = 1/(2n) |r|^2``, ``H = I/n``: the NTK-type
    Gram ``J J^T / n``). It is formed exactly from ``m`` products (memory ``m^2``, no
    Jacobian). When ``m >= P`` it is ``lambda_min(G)`` itself, by ``num_iters`` Lanczos
    steps (an upper bound, exact once ``num_iters >= P``; ``key`` draws the start vector).
    """
    m = sum(x.size for x in jax.tree.leaves(ggn.outputs))
    p = sum(x.size for x in jax.tree.leaves(params))
    if m < p:
        return _output_space_lambda_min(ggn)
    key = jax.random.key(0) if key is None else key
    return ggn_extreme_eigenvalues(ggn, params, key, num_iters)[0]
