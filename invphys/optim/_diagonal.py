"""Diagonal preconditioners in a chosen basis: ``theta -= eta U P U^T g`` (arXiv 2510.13680).

``U`` is an orthogonal change of basis of the parameters and ``P`` a diagonal matrix;
the arms of the comparison differ only in ``P``:

* GN^-p (:func:`diagonal_gn`): ``P = (diag(U^T G U) + damping)^-p``, ``p = 1`` or ``1/2``,
  with ``G = J^T H_loss J`` the Gauss-Newton matrix (:mod:`invphys.optim._curvature`);
* Adam (:func:`diagonal_adam`): optax's ``scale_by_adam`` applied to ``U^T g`` (the EMA of
  the rotated squared gradients, power ``1/2``).

Both are ``optax.chain(scale_by_rotation(inner, basis), scale_by_learning_rate(lr))``:
:func:`scale_by_rotation` rotates the gradient into the basis, runs ``inner`` there and
rotates back, so Adam and GN go through the same rotation code. Bases (``basis=``):

* ``"identity"``: ``U = I``;
* ``"eigen"``: the eigenvectors of the exact GN matrix (formed from ``P`` matrix-free
  products, then ``eigh``): small models only;
* ``"kronecker"``: per parameter leaf, one orthogonal factor per axis (a 2-D weight
  ``W`` rotates as ``Q_L^T W Q_R``, a 1-D bias as ``Q^T b``, other leaves not at all), as
  in K-FAC/SOAP. The factors are the eigenvectors of the partial traces of the leaf's
  diagonal GN block (``L = tr_out G_WW``, ``R = tr_in G_WW``): for a linear
  least-squares layer ``G_WW = (X^T X / n) (x) I`` and ``U`` is an exact eigenbasis.

The GN diagonal ``d = diag(U^T G U)`` and the Kronecker factors are computed
``"exact"``-ly (the dense ``G``; small models) or estimated (``"hutchinson"``) without
forming ``G``, each estimate unbiased:

* ``d``: ``E_v[v * U^T G U v]`` for Rademacher ``v`` (``E[v v^T] = I``): one JVP, one
  loss-Hessian product and one VJP per probe; exact when ``U^T G U`` is diagonal;
* factors: ``E_z[A B^T]`` with ``A = mat(J^T z)``, ``B = mat(J^T H_loss z)`` and Rademacher
  ``z`` in output space (``E[J^T z z^T H J] = G``), summed over the leaf's other axis.

Curvature from a separate batch: the extra arguments ``curvature_model_fn`` and
``curvature_loss_fn`` (same meaning as ``model_fn``/``loss_fn``, on another batch) are
used for ``G`` when given; otherwise the step's own ``model_fn``/``loss_fn``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PyTree, Scalar

from ._contract import require_model_and_loss
from ._curvature import GGN, linearize_ggn

__all__ = [
    "BasisState",
    "GNDiagonalState",
    "Rotation",
    "diagonal_adam",
    "diagonal_gn",
    "scale_by_gn_diagonal",
    "scale_by_rotation",
]

Basis = Literal["identity", "eigen", "kronecker"]
Estimator = Literal["auto", "exact", "hutchinson"]
_EMPTY = (0, 0)


class Rotation(NamedTuple):
    """An orthogonal change of basis of a parameter pytree: ``rotate`` applies ``U^T``,
    ``unrotate`` applies ``U`` (both keep the pytree's structure)."""

    rotate: Callable[[PyTree[Array]], PyTree[Array]]
    unrotate: Callable[[PyTree[Array]], PyTree[Array]]


IDENTITY = Rotation(lambda t: t, lambda t: t)


class BasisState(NamedTuple):
    """Arrays only. ``matrix``: ``U`` for ``"eigen"`` (columns: GN eigenvectors), else
    ``0 x 0``; ``factors``/``stats``: for ``"kronecker"``, per leaf one ``(Q, S)`` per axis
    (``S``: the factor statistic, an EMA over refreshes; ``0 x 0``: that axis not rotated);
    ``inner``: the inner transformation's state, in the rotated coordinates."""

    count: Int[Array, ""]
    matrix: Float[Array, "P P"]
    factors: tuple[tuple[Array, ...], ...]
    stats: tuple[tuple[Array, ...], ...]
    inner: Any


class GNDiagonalState(NamedTuple):
    """``diag``: the (EMA of the) estimates of ``diag(U^T G U)``, flat; ``count``: steps."""

    count: Int[Array, ""]
    diag: Float[Array, " P"]


# ------------------------------------------------------------------ curvature pieces
def _curvature(extra: dict[str, Any], who: str) -> tuple[Callable, Callable]:
    model_fn, loss_fn = require_model_and_loss(extra, who)
    model_fn = extra.get("curvature_model_fn") or model_fn
    loss_fn = extra.get("curvature_loss_fn") or loss_fn
    return model_fn, loss_fn


def _key(extra: dict[str, Any], count: Array) -> Array:
    key = extra.get("key")
    return jax.random.fold_in(jax.random.key(0) if key is None else key, count)


def _flat_matvec(ggn: GGN, params: PyTree[Array]) -> Callable[[Array], Array]:
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    def mv(v):
        return jax.flatten_util.ravel_pytree(ggn.matvec(unravel(v)))[0].astype(flat.dtype)

    return mv


def dense_ggn(ggn: GGN, params: PyTree[Array]) -> Float[Array, "P P"]:
    """The GN matrix formed from ``P`` matrix-free products (symmetrised): small models."""
    flat, _ = jax.flatten_util.ravel_pytree(params)
    g = jax.vmap(_flat_matvec(ggn, params))(jnp.eye(flat.shape[0], dtype=flat.dtype))
    return 0.5 * (g + g.T)


def _resolve(estimator: Estimator, n: int, dense_max_params: int) -> str:
    if estimator not in ("auto", "exact", "hutchinson"):
        raise ValueError(f"estimator must be 'auto', 'exact' or 'hutchinson', got {estimator!r}")
    if estimator == "auto":
        return "exact" if n <= dense_max_params else "hutchinson"
    return estimator


def _flat_rotation(rot: Rotation, params: PyTree[Array]):
    _, unravel = jax.flatten_util.ravel_pytree(params)

    def on_flat(fn):
        return lambda v: jax.flatten_util.ravel_pytree(fn(unravel(v)))[0]

    return on_flat(rot.rotate), on_flat(rot.unrotate)


def gn_diagonal(ggn: GGN, params: PyTree[Array], rot: Rotation, estimator: str,
                key: Array | None, probes: int = 1) -> Float[Array, " P"]:
    """``diag(U^T G U)`` (flat, rotated coordinates): exact from the dense ``G``, or the
    Hutchinson estimate ``mean_v(v * U^T G U v)`` over ``probes`` Rademacher vectors
    (``key`` is unused, and may be None, for the exact one)."""
    flat, _ = jax.flatten_util.ravel_pytree(params)
    rotate, unrotate = _flat_rotation(rot, params)
    if estimator == "exact":
        g = dense_ggn(ggn, params)
        basis = jax.vmap(unrotate)(jnp.eye(flat.shape[0], dtype=flat.dtype))  # rows: U e_i
        return jnp.sum((basis @ g) * basis, axis=1)
    mv = _flat_matvec(ggn, params)
    v = jax.random.rademacher(key, (probes, flat.shape[0]), dtype=flat.dtype)
    return jnp.mean(v * jax.vmap(lambda x: rotate(mv(unrotate(x))))(v), axis=0)


# ------------------------------------------------------------------ Kronecker factors
def _axes(leaf: Array, max_dim: int) -> tuple[bool, ...]:
    """Which axes of a leaf get a factor: both of a matrix, the one of a vector."""
    if leaf.ndim not in (1, 2):
        return ()
    return tuple(0 < s <= max_dim for s in leaf.shape)


def _partial_traces(a: Array, b: Array) -> list[Array]:
    """Per axis, ``sum over the other axes of a (x) b``, symmetrised (``a``, ``b``: one leaf)."""
    out = []
    for axis in range(a.ndim):
        others = [i for i in range(a.ndim) if i != axis]
        s = jnp.tensordot(a, b, axes=(others, others))
        out.append(0.5 * (s + s.T))
    return out


def kronecker_stats(ggn: GGN, params: PyTree[Array], estimator: str, key: Array | None,
                    probes: int = 1) -> list[list[Array]]:
    """Per leaf and axis, the partial trace of the leaf's diagonal GN block: exact from
    the dense ``G`` or estimated from ``probes`` output-space Rademacher vectors (``key``
    is unused, and may be None, for the exact one)."""
    leaves = jax.tree.leaves(params)
    if estimator == "exact":
        g = dense_ggn(ggn, params)
        out, start = [], 0
        for leaf in leaves:
            block = g[start:start + leaf.size, start:start + leaf.size]
            start += leaf.size
            if leaf.ndim == 1:
                out.append([block])
            elif leaf.ndim == 2:
                m, n = leaf.shape
                b4 = block.reshape(m, n, m, n)
                out.append([jnp.einsum("ajbj->ab", b4), jnp.einsum("iaib->ab", b4)])
            else:
                out.append([])
        return out
    outs = ggn.outputs
    keys = jax.random.split(key, probes)

    def one(k):
        zs = [jax.random.rademacher(kk, o.shape, dtype=o.dtype)
              for kk, o in zip(jax.random.split(k, len(jax.tree.leaves(outs))),
                               jax.tree.leaves(outs), strict=True)]
        z = jax.tree.unflatten(jax.tree.structure(outs), zs)
        a, b = ggn.vjp(z), ggn.vjp(ggn.loss_hvp(z))
        return [_partial_traces(x, y) if x.ndim in (1, 2) else []
                for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)]

    return jax.tree.map(lambda s: jnp.mean(s, axis=0), jax.vmap(one)(keys))


def _apply_factors(tree: PyTree[Array], factors, transpose: bool) -> PyTree[Array]:
    leaves, treedef = jax.tree.flatten(tree)
    out = []
    for x, qs in zip(leaves, factors, strict=True):
        for axis, q in enumerate(qs):
            if q.shape == _EMPTY:
                continue
            m = (q.T if transpose else q).astype(x.dtype)
            x = jnp.moveaxis(jnp.tensordot(m, x, axes=([1], [axis])), 0, axis)
        out.append(x)
    return jax.tree.unflatten(treedef, out)


# ------------------------------------------------------------------ transformations
def scale_by_rotation(
    inner: optax.GradientTransformation,
    basis: Basis = "identity",
    *,
    estimator: Estimator = "auto",
    probes: int = 1,
    refresh_every: int = 1,
    factor_decay: float = 0.0,
    max_factor_dim: int = 1024,
    dense_max_params: int = 2000,
) -> optax.GradientTransformationExtraArgs:
    """Run ``inner`` in the basis ``U``: ``updates -> U inner(U^T updates)``.

    ``basis``: ``"identity"``, ``"eigen"`` (the exact GN eigenbasis) or ``"kronecker"``
    (per-leaf factors; see the module docstring). The basis is recomputed from the
    curvature batch every ``refresh_every`` steps (the first step included); Kronecker
    statistics are averaged over refreshes with weight ``factor_decay`` on the past
    (0: the latest only). ``estimator`` (``"auto"``: exact up to ``dense_max_params``
    parameters) and ``probes`` set how the Kronecker statistics are computed. ``inner``
    receives the extra arguments plus ``rotation=`` (a :class:`Rotation`), and its state
    lives in rotated coordinates. Extra args (non-identity bases): ``model_fn``,
    ``loss_fn``, optionally ``curvature_model_fn``/``curvature_loss_fn`` and ``key``.
    """
    if basis not in ("identity", "eigen", "kronecker"):
        raise ValueError(f"basis must be 'identity', 'eigen' or 'kronecker', got {basis!r}")
    if refresh_every < 1:
        raise ValueError(f"refresh_every must be >= 1, got {refresh_every}")
    _resolve(estimator, 0, dense_max_params)
    inner = optax.with_extra_args_support(inner)

    def init(params):
        flat, _ = jax.flatten_util.ravel_pytree(params)
        n, dtype = flat.shape[0], flat.dtype
        matrix = jnp.eye(n, dtype=dtype) if basis == "eigen" else jnp.zeros(_EMPTY, dtype)
        factors, stats = [], []
        for leaf in jax.tree.leaves(params):
            axes = _axes(leaf, max_factor_dim) if basis == "kronecker" else ()
            factors.append(tuple(jnp.eye(s, dtype=dtype) if on else jnp.zeros(_EMPTY, dtype)
                                 for s, on in zip(leaf.shape, axes, strict=False)))
            stats.append(tuple(jnp.zeros_like(q) for q in factors[-1]))
        return BasisState(jnp.zeros((), jnp.int32), matrix, tuple(factors), tuple(stats),
                          inner.init(params))

    def rotation(state: BasisState, params) -> Rotation:
        if basis == "identity":
            return IDENTITY
        if basis == "kronecker":
            return Rotation(lambda t: _apply_factors(t, state.factors, True),
                            lambda t: _apply_factors(t, state.factors, False))
        _, unravel = jax.flatten_util.ravel_pytree(params)
        u = state.matrix

        def rot(t, m):
            flat, _ = jax.flatten_util.ravel_pytree(t)
            return unravel((m @ flat).astype(flat.dtype))

        return Rotation(lambda t: rot(t, u.T), lambda t: rot(t, u))

    def refresh(state: BasisState, params, extra, key) -> BasisState:
        ggn = linearize_ggn(*_curvature(extra, "scale_by_rotation"), params)
        flat, _ = jax.flatten_util.ravel_pytree(params)
        if basis == "eigen":
            _, u = jnp.linalg.eigh(dense_ggn(ggn, params))
            return state._replace(matrix=u.astype(flat.dtype))
        est = _resolve(estimator, flat.shape[0], dense_max_params)
        new = kronecker_stats(ggn, params, est, key, probes)
        first = state.count == 0
        factors, stats = [], []
        for qs, old, fresh in zip(state.factors, state.stats, new, strict=True):
            fq, fs = [], []
            for q, s_old, s_new in zip(qs, old, fresh, strict=False):
                if q.shape == _EMPTY:
                    fq.append(q)
                    fs.append(s_old)
                    continue
                s = jnp.where(first, s_new, factor_decay * s_old + (1 - factor_decay) * s_new)
                fq.append(jnp.linalg.eigh(s)[1].astype(q.dtype))
                fs.append(s.astype(s_old.dtype))
            factors.append(tuple(fq))
            stats.append(tuple(fs))
        return state._replace(factors=tuple(factors), stats=tuple(stats))

    def update(updates, state, params=None, **extra):
        if params is None:
            raise ValueError("scale_by_rotation needs params in update(updates, state, params)")
        key = _key(extra, state.count)
        if basis != "identity":
            state = jax.lax.cond(state.count % refresh_every == 0,
                                 lambda s: refresh(s, params, extra, jax.random.fold_in(key, 1)),
                                 lambda s: s, state)
        rot = rotation(state, params)
        inner_extra = {**extra, "rotation": rot, "key": jax.random.fold_in(key, 2)}
        rotated, inner_state = inner.update(rot.rotate(updates), state.inner, params,
                                            **inner_extra)
        new_state = state._replace(count=state.count + 1, inner=inner_state)
        return rot.unrotate(rotated), new_state

    return optax.GradientTransformationExtraArgs(init, update)


def scale_by_gn_diagonal(
    power: float = 1.0,
    *,
    estimator: Estimator = "auto",
    probes: int = 1,
    decay: float = 0.0,
    damping: float = 1e-8,
    dense_max_params: int = 2000,
) -> optax.GradientTransformationExtraArgs:
    """Scale (rotated) updates by ``(max(d, 0) + damping)^-power``, ``d = diag(U^T G U)``.

    ``U`` is the extra argument ``rotation`` (identity if absent; :func:`scale_by_rotation`
    supplies it). ``d`` is exact (the dense ``G``, ``estimator="exact"``, the ``"auto"``
    choice up to ``dense_max_params`` parameters) or the unbiased Hutchinson estimate
    over ``probes`` Rademacher vectors; ``decay`` > 0 keeps a bias-corrected EMA of it
    (as Sophia does). Negative estimates are clipped to 0 before the power. ``G``
    comes from ``curvature_model_fn``/``curvature_loss_fn`` when given (a separate batch),
    else from ``model_fn``/``loss_fn``.
    """
    _resolve(estimator, 0, dense_max_params)

    def init(params):
        flat, _ = jax.flatten_util.ravel_pytree(params)
        return GNDiagonalState(jnp.zeros((), jnp.int32), jnp.zeros_like(flat))

    def update(updates, state, params=None, **extra):
        if params is None:
            raise ValueError("scale_by_gn_diagonal needs params in update(updates, state, "
                             "params)")
        ggn = linearize_ggn(*_curvature(extra, "scale_by_gn_diagonal"), params)
        rot = extra.get("rotation") or IDENTITY
        u, unravel = jax.flatten_util.ravel_pytree(updates)
        est = _resolve(estimator, u.shape[0], dense_max_params)
        d = gn_diagonal(ggn, params, rot, est, _key(extra, state.count), probes).astype(u.dtype)
        count = state.count + 1
        ema = decay * state.diag + (1 - decay) * d
        d_hat = ema / (1 - decay ** count.astype(u.dtype)) if decay > 0 else ema
        scaled = u * (jnp.maximum(d_hat, 0.0) + damping) ** (-power)
        return unravel(scaled.astype(u.dtype)), GNDiagonalState(count, ema)

    return optax.GradientTransformationExtraArgs(init, update)


def diagonal_gn(
    learning_rate: float | Scalar | Callable[[Int[Array, ""]], Scalar] = 1.0,
    power: float = 1.0,
    basis: Basis = "identity",
    *,
    estimator: Estimator = "auto",
    probes: int = 1,
    decay: float = 0.0,
    damping: float = 1e-8,
    refresh_every: int = 1,
    factor_decay: float = 0.0,
    max_factor_dim: int = 1024,
    dense_max_params: int = 2000,
) -> optax.GradientTransformationExtraArgs:
    """Diagonal Gauss-Newton ``GN^-power`` in ``basis``: ``theta -= lr U (d + damping)^-power
    U^T g`` with ``d = diag(U^T G U)`` (:func:`scale_by_gn_diagonal` inside
    :func:`scale_by_rotation`; see those for the options). ``power=1`` in the exact
    eigenbasis at ``lr=1`` is Newton's step on a quadratic; ``power=0`` is gradient descent.
    Extra args: ``model_fn``, ``loss_fn``; optionally ``curvature_model_fn``,
    ``curvature_loss_fn`` (the GN matrix's own batch) and ``key``."""
    inner = scale_by_gn_diagonal(power, estimator=estimator, probes=probes, decay=decay,
                                 damping=damping, dense_max_params=dense_max_params)
    return optax.chain(
        scale_by_rotation(inner, basis, estimator=estimator, probes=probes,
                          refresh_every=refresh_every, factor_decay=factor_decay,
                          max_factor_dim=max_factor_dim, dense_max_params=dense_max_params),
        optax.scale_by_learning_rate(learning_rate))


def diagonal_adam(
    learning_rate: float | Scalar | Callable[[Int[Array, ""]], Scalar] = 1e-3,
    basis: Basis = "identity",
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    estimator: Estimator = "auto",
    probes: int = 1,
    refresh_every: int = 1,
    factor_decay: float = 0.0,
    max_factor_dim: int = 1024,
    dense_max_params: int = 2000,
) -> optax.GradientTransformationExtraArgs:
    """optax's Adam run in ``basis`` through the same rotation as :func:`diagonal_gn` (so the
    arms differ only in the diagonal): ``basis="identity"`` is ``optax.adam``; in the
    eigen or Kronecker basis its moments live in rotated coordinates (SOAP-like)."""
    return optax.chain(
        scale_by_rotation(optax.scale_by_adam(b1, b2, eps), basis, estimator=estimator,
                          probes=probes, refresh_every=refresh_every,
                          factor_decay=factor_decay, max_factor_dim=max_factor_dim,
                          dense_max_params=dense_max_params),
        optax.scale_by_learning_rate(learning_rate))
