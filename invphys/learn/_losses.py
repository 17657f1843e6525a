"""The Deceptron losses of the paper's protocol and the Jacobian Composition Penalty.

On a batch of raw x and normalised z (all weights as in the protocol)::

    loss = w_fit MSE(f(x), z) + w_rec MSE(g(f(x)), x) + w_cyc MSE(f(g(z)), z)
         + w_spectral mean((W^T W - I)^2) + w_bias tie(b, c) + w_comp mean((V W - I)^2)
         + w_sup MSE(g(z), x)  [optional; 0 in the protocol]
         + w_jcp JCP

``tie(b, c)`` is MSE(b, -c) when b and c have the same length, else mean(b^2) + mean(c^2).
For an :class:`MLPDeceptron` the three W/V terms (spectral, bias tie, composition) are
not defined and are 0; JCP is their nonlinear analogue.

JCP estimates E_x ||J_g(f(x)) J_f(x) - I||_F^2 without forming a Jacobian: for a probe
xi with E[xi xi^T] = I (Gaussian or Rademacher), v = J_f(x) xi and u = J_g(f(x)) v are
two JVPs and E_xi ||u - xi||^2 = ||J_g J_f - I||_F^2 exactly. Its gradient flows
through VJPs of those JVPs. RJCP, the diagnostic, is the same estimator.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._deceptron import AbstractDeceptron, Deceptron

PROBES = ("gaussian", "rademacher")
TERMS = ("fit", "rec", "cyc", "spectral", "bias", "comp", "sup", "jcp")


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (the protocol's values by default; JCP is scheduled)."""

    fit: float = 1.0
    rec: float = 0.1
    cyc: float = 0.05
    spectral: float = 1e-6
    bias: float = 1e-4
    comp: float = 1e-3
    sup: float = 0.0


def _mse(a: Array, b: Array) -> Array:
    return jnp.mean((a - b) ** 2)


def spectral_penalty(W: Float[Array, "m n"]) -> Array:
    """mean((W^T W - I)^2)."""
    return jnp.mean((W.T @ W - jnp.eye(W.shape[1], dtype=W.dtype)) ** 2)


def bias_tie_penalty(b: Float[Array, " m"], c: Float[Array, " n"]) -> Array:
    """MSE(b, -c) when the dimensions agree, else mean(b^2) + mean(c^2)."""
    if b.shape == c.shape:
        return _mse(b, -c)
    return jnp.mean(b**2) + jnp.mean(c**2)


def composition_penalty(V: Float[Array, "n m"], W: Float[Array, "m n"]) -> Array:
    """mean((V W - I)^2)."""
    return jnp.mean((V @ W - jnp.eye(W.shape[1], dtype=W.dtype)) ** 2)


def composition_error(model: Deceptron) -> Array:
    """||V W - I||_F of an affine Deceptron."""
    W = model.W
    return jnp.linalg.norm(model.inverse_matrix @ W - jnp.eye(W.shape[1], dtype=W.dtype))


def draw_probes(key: PRNGKeyArray, shape: tuple[int, ...], kind: str = "gaussian",
                dtype=None) -> Array:
    """Probe vectors with E[xi xi^T] = I: standard Gaussian or Rademacher (+-1)."""
    dtype = dtype or jnp.result_type(float)
    return as_probes(jax.random.normal(key, shape, dtype), kind)


def as_probes(normal: Array, kind: str = "gaussian") -> Array:
    """Turn standard normal draws into probes: themselves, or their signs (Rademacher)."""
    if kind == "gaussian":
        return normal
    if kind == "rademacher":
        return jnp.where(normal >= 0, 1.0, -1.0).astype(normal.dtype)
    raise ValueError(f"probe kind must be one of {PROBES}, got {kind!r}")


def jcp_samples(model: AbstractDeceptron, x: Float[Array, " n"],
                xi: Float[Array, "P n"]) -> Float[Array, " P"]:
    """||J_g(f(x)) J_f(x) xi - xi||^2 for each probe xi (two JVPs; one sample x)."""

    def one(p):
        y, v = jax.jvp(model.f, (x,), (p,))
        _, u = jax.jvp(model.g, (y,), (v,))
        return jnp.sum((u - p) ** 2)

    return jax.vmap(one)(xi)


def jcp_from_probes(model: AbstractDeceptron, x: Float[Array, "B n"],
                    xi: Float[Array, "B P n"]) -> Array:
    """The JCP estimator with given probes: mean over the batch and the P probes per sample."""
    return jnp.mean(jax.vmap(lambda xx, pp: jcp_samples(model, xx, pp))(x, xi))


def jcp_estimate(
    model: AbstractDeceptron,
    x: Float[Array, "B n"],
    key: PRNGKeyArray,
    probes: int = 2,
    kind: str = "gaussian",
) -> Array:
    """The JCP estimator: batch mean, over ``probes`` probes each, of ||J_g J_f xi - xi||^2.

    An unbiased estimate of ``jcp_exact(model, x)``.
    """
    B, n = x.shape
    return jcp_from_probes(model, x, draw_probes(key, (B, probes, n), kind, x.dtype))


def jcp_exact(model: AbstractDeceptron, x: Float[Array, "B n"]) -> Array:
    """Batch mean of ||J_g(f(x)) J_f(x) - I||_F^2, with Jacobians from ``jax.jacfwd``."""

    def one(xx):
        Jf = jax.jacfwd(model.f)(xx)
        Jg = jax.jacfwd(model.g)(model.f(xx))
        return jnp.sum((Jg @ Jf - jnp.eye(xx.shape[0], dtype=Jf.dtype)) ** 2)

    return jnp.mean(jax.vmap(one)(x))


def loss_terms(
    model: AbstractDeceptron,
    x: Float[Array, "B n"],
    z: Float[Array, "B m"],
    xi: Float[Array, "B P n"] | None = None,
    *,
    with_jcp: bool | Array = True,
) -> dict[str, Array]:
    """Every unweighted loss term on a batch (see the module docstring).

    ``xi`` are the JCP probes, P per sample (:func:`draw_probes`); without them JCP is 0.
    ``with_jcp`` may be a traced boolean: the JCP estimate is then computed only when it
    is true (``lax.cond``), and is 0 otherwise.
    """
    f, g = jax.vmap(model.f), jax.vmap(model.g)
    fx = f(x)
    gz = g(z)
    zero = jnp.zeros((), fx.dtype)
    terms = {
        "fit": _mse(fx, z),
        "rec": _mse(g(fx), x),
        "cyc": _mse(f(gz), z),
        "spectral": zero,
        "bias": zero,
        "comp": zero,
        "sup": _mse(gz, x),
        "jcp": zero,
    }
    if isinstance(model, Deceptron):
        terms["spectral"] = spectral_penalty(model.W)
        terms["bias"] = bias_tie_penalty(model.b, model.c)
        terms["comp"] = composition_penalty(model.inverse_matrix, model.W)
    if xi is not None:
        est = lambda: jcp_from_probes(model, x, xi).astype(fx.dtype)
        if isinstance(with_jcp, bool):
            terms["jcp"] = est() if with_jcp else zero
        else:
            terms["jcp"] = jax.lax.cond(with_jcp, est, lambda: zero)
    return terms


def total_loss(terms: dict[str, Array], weights: LossWeights, w_jcp: float | Array) -> Array:
    """The weighted sum of the terms (``w_jcp`` from the schedule)."""
    return (
        weights.fit * terms["fit"] + weights.rec * terms["rec"] + weights.cyc * terms["cyc"]
        + weights.spectral * terms["spectral"] + weights.bias * terms["bias"]
        + weights.comp * terms["comp"] + weights.sup * terms["sup"] + w_jcp * terms["jcp"]
    )
