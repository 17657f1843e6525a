"""A small decoder-only transformer on a synthetic sequence task, for the full-gn study.

The paper's headline claim is about transformers (full GN ~5x fewer iterations than
SOAP/Muon, layer-wise GN close to full GN); this is the smallest setting in which the
claim can be checked on a CPU: a functional, pre-LayerNorm, causal decoder written with
``jax.numpy`` (learned positional embeddings, untied output head, GELU MLPs).

Parameters are a pytree of dicts, one dict per linear map, embedding or LayerNorm, so
:func:`invphys.optim.by_layer` gives layer-wise GN one block per such unit, and every
weight matrix (``w``: in x out) is 2-D, so optax's Muon orthogonalises it (the 1-D
biases and LayerNorm gains go to its Adam branch, its documented default; the two
embeddings are 2-D and are Muon's too). The head count is not a parameter: it is a
keyword of :func:`transformer_apply`.

The task is sequence reversal (:func:`reversal_data`): ``x_1 .. x_L SEP x_L .. x_1``
with the ``x_i`` uniform over ``symbols`` tokens, trained by next-token prediction on the
``L`` positions after ``SEP`` (the only determined ones; the others are masked out of the
loss). Copying from position ``2L - i`` is learnable by one attention layer with
positional embeddings; the cross-entropy is convex in the logits, so the GGN is PSD.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray, Scalar

TParams = dict  # {"embed", "pos", "blocks": [...], "ln_f", "head"}, leaves are arrays


def _linear(key: PRNGKeyArray, fan_in: int, fan_out: int, dtype, scale: float = 1.0) -> dict:
    w = jax.random.normal(key, (fan_in, fan_out), dtype) * (scale / math.sqrt(fan_in))
    return {"w": w, "b": jnp.zeros(fan_out, dtype)}


def _norm(d: int, dtype) -> dict:
    return {"g": jnp.ones(d, dtype), "b": jnp.zeros(d, dtype)}


def init_transformer(
    key: PRNGKeyArray,
    vocab: int,
    d_model: int,
    heads: int,
    layers: int,
    seq_len: int,
    *,
    mlp_ratio: int = 4,
    dtype=None,
) -> TParams:
    """Unit-variance embeddings, LeCun-normal linear maps (the residual outputs ``o`` and
    ``fc2`` scaled by ``1/sqrt(2 layers)``, as in GPT-2), zero biases, unit LayerNorm
    gains. ``heads`` only checks that it divides ``d_model``."""
    if d_model % heads:
        raise ValueError(f"d_model {d_model} is not a multiple of heads {heads}")
    dtype = dtype or jnp.result_type(float)
    k_emb, k_pos, k_head, *k_blocks = jax.random.split(key, 3 + layers)
    res = 1.0 / math.sqrt(2 * layers)
    blocks = []
    for kb in k_blocks:
        kq, kk, kv, ko, k1, k2 = jax.random.split(kb, 6)
        blocks.append(
            {
                "ln1": _norm(d_model, dtype),
                "q": _linear(kq, d_model, d_model, dtype),
                "k": _linear(kk, d_model, d_model, dtype),
                "v": _linear(kv, d_model, d_model, dtype),
                "o": _linear(ko, d_model, d_model, dtype, res),
                "ln2": _norm(d_model, dtype),
                "fc1": _linear(k1, d_model, mlp_ratio * d_model, dtype),
                "fc2": _linear(k2, mlp_ratio * d_model, d_model, dtype, res),
            }
        )
    return {
        "embed": {"w": jax.random.normal(k_emb, (vocab, d_model), dtype)},
        "pos": {"w": jax.random.normal(k_pos, (seq_len, d_model), dtype)},
        "blocks": blocks,
        "ln_f": _norm(d_model, dtype),
        "head": _linear(k_head, d_model, vocab, dtype),
    }


def _layer_norm(p: dict, x: Float[Array, "... d"], eps: float = 1e-5) -> Array:
    mu = jnp.mean(x, -1, keepdims=True)
    var = jnp.mean((x - mu) ** 2, -1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + eps) * p["g"] + p["b"]


def _dense(p: dict, x: Array) -> Array:
    return x @ p["w"] + p["b"]


def _attention(p: dict, x: Float[Array, "n t d"], heads: int) -> Float[Array, "n t d"]:
    n, t, d = x.shape
    split = lambda a: a.reshape(n, t, heads, d // heads)
    q, k, v = (split(_dense(p[name], x)) for name in ("q", "k", "v"))
    scores = jnp.einsum("nthc,nshc->nhts", q, k) / math.sqrt(d // heads)
    causal = jnp.tril(jnp.ones((t, t), bool))
    # a finite fill, not -inf: a fully masked row cannot occur (the diagonal is kept),
    # and -inf would put inf - inf into the tangents of the Gauss-Newton products
    scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min / 2)
    att = jax.nn.softmax(scores, axis=-1)
    return _dense(p["o"], jnp.einsum("nhts,nshc->nthc", att, v).reshape(n, t, d))


def transformer_apply(
    params: TParams, tokens: Int[Array, "n t"], *, heads: int = 4
) -> Float[Array, "n t vocab"]:
    """Next-token logits at every position; position ``j`` sees tokens ``0..j`` only."""
    t = tokens.shape[1]
    x = params["embed"]["w"][tokens] + params["pos"]["w"][:t]
    for blk in params["blocks"]:
        x = x + _attention(blk, _layer_norm(blk["ln1"], x), heads)
        h = jax.nn.gelu(_dense(blk["fc1"], _layer_norm(blk["ln2"], x)))
        x = x + _dense(blk["fc2"], h)
    return _dense(params["head"], _layer_norm(params["ln_f"], x))


def masked_cross_entropy(logits: Float[Array, "n t k"], targets: Int[Array, "n t"]) -> Scalar:
    """Mean softmax cross-entropy over the positions with a target (``targets >= 0``;
    ``-1`` marks an undetermined position). A nonnegative combination of per-position
    cross-entropies: convex in the logits, so the Gauss-Newton matrix is PSD."""
    mask = targets >= 0
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(mask, targets, 0))
    return jnp.sum(jnp.where(mask, ce, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def reversal_data(
    n: int, length: int, symbols: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs, targets)``, both ``(n, 2 length)`` int32: the sequences ``x_1 .. x_L SEP
    x_L .. x_1`` (``SEP = symbols``, so the vocabulary has ``symbols + 1`` tokens) without
    their last token, and the next tokens with ``-1`` before ``SEP``'s successor (those
    positions are random, not determined by the prefix)."""
    x = np.random.default_rng(seed).integers(0, symbols, size=(n, length))
    seq = np.concatenate([x, np.full((n, 1), symbols), x[:, ::-1]], axis=1)
    targets = seq[:, 1:].copy()
    targets[:, :length] = -1
    return seq[:, :-1].astype(np.int32), targets.astype(np.int32)


def apply_fn(heads: int):
    """``transformer_apply`` with the head count bound (the :class:`.mlp.Problem` form)."""
    return functools.partial(transformer_apply, heads=heads)


__all__ = [
    "apply_fn",
    "init_transformer",
    "masked_cross_entropy",
    "reversal_data",
    "transformer_apply",
]
