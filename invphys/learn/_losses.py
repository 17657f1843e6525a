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
import functools
import operator

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._configs import PROBES
from ._deceptron import AbstractDeceptron, Deceptron

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


def jcp_residuals(model: AbstractDeceptron, x: Float[Array, "B n"],
                  xi: Float[Array, "B P n"]) -> Float[Array, "B P n"]:
    """J_g(f(x)) J_f(x) xi - xi for each sample and probe (two JVPs each): the residuals
    whose mean squared norm is the JCP estimate."""

    def one(xx, p):
        y, v = jax.jvp(model.f, (xx,), (p,))
        _, u = jax.jvp(model.g, (y,), (v,))
        return u - p

    return jax.vmap(lambda xx, pp: jax.vmap(lambda p: one(xx, p))(pp))(x, xi)


def deceptron_outputs(
    model: AbstractDeceptron,
    x: Float[Array, "B n"],
    z: Float[Array, "B m"],
    xi: Float[Array, "B P n"] | None = None,
    *,
    with_jcp: bool | Array = True,
) -> dict[str, object]:
    """Everything the loss reads from the model on a batch: ``f(x)``, ``g(f(x))``,
    ``g(z)``, ``f(g(z))``, the structural residuals and the JCP residuals. The loss is a
    weighted sum of mean squares of these (:func:`terms_from_outputs`), so it is convex
    in them: the model-to-outputs map is what a Gauss-Newton optimizer linearises.

    ``with_jcp`` may be a traced boolean: the JCP residuals are then computed only when
    it is true (``lax.cond``), and are 0 otherwise.
    """
    f, g = jax.vmap(model.f), jax.vmap(model.g)
    fx = f(x)
    gz = g(z)
    out: dict[str, object] = {"fx": fx, "gfx": g(fx), "gz": gz, "fgz": f(gz),
                              "structure": model.structure_residuals(), "jcp": None}
    if xi is not None:
        est = lambda: jcp_residuals(model, x, xi).astype(fx.dtype)  # noqa: E731
        zero = lambda: jnp.zeros(xi.shape, fx.dtype)  # noqa: E731
        if isinstance(with_jcp, bool):
            out["jcp"] = est() if with_jcp else zero()
        else:
            out["jcp"] = jax.lax.cond(with_jcp, est, zero)
    return out


def terms_from_outputs(out: dict[str, object], x: Float[Array, "B n"],
                       z: Float[Array, "B m"]) -> dict[str, Array]:
    """Every unweighted loss term from :func:`deceptron_outputs` (see the module docstring)."""
    fx = out["fx"]
    zero = jnp.zeros((), fx.dtype)
    terms = {
        "fit": _mse(fx, z),
        "rec": _mse(out["gfx"], x),
        "cyc": _mse(out["fgz"], z),
        "spectral": zero,
        "bias": zero,
        "comp": zero,
        "sup": _mse(out["gz"], x),
        "jcp": zero,
    }
    for name, residuals in out["structure"].items():
        terms[name] = functools.reduce(operator.add, [jnp.mean(r**2) for r in residuals])
    if out["jcp"] is not None:
        terms["jcp"] = jnp.mean(jnp.sum(out["jcp"] ** 2, axis=-1))
    return terms


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
    """
    return terms_from_outputs(deceptron_outputs(model, x, z, xi, with_jcp=with_jcp), x, z)


def total_loss(terms: dict[str, Array], weights: LossWeights, w_jcp: float | Array) -> Array:
    """The weighted sum of the terms (``w_jcp`` from the schedule)."""
    return (
        weights.fit * terms["fit"] + weights.rec * terms["rec"] + weights.cyc * terms["cyc"]
        + weights.spectral * terms["spectral"] + weights.bias * terms["bias"]
        + weights.comp * terms["comp"] + weights.sup * terms["sup"] + w_jcp * terms["jcp"]
    )
