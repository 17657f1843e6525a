"""The PINN ansatz: one small Equinox network per subdomain, the windowed sum, hard
constraints; bounded physical parameters; forward-mode derivatives for PDE operators.

Parameters are a :class:`Theta`: ``nets (J, P)`` (subdomain ``j``'s network, raveled)
and ``phys (n_q,)`` (unconstrained coordinates of the unknown physical parameters; see
:class:`Bounded`). Keeping every subdomain's parameters as one row of a matrix makes
the Gauss-Newton blocks plain slices, and evaluates all networks with one ``vmap``.

The global solution at ``x`` is ``ansatz(x, s * sum_j w_j(x) N_j((x - c_j) / h_j), q)``
with ``w_j`` the partition of unity of the :class:`~.Decomposition`, ``s`` an output
scale and ``ansatz`` a hard constraint (identity by default), as in FBPINNs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from ._decomposition import Decomposition, cosine_window

__all__ = ["Bounded", "Field", "Theta", "derivative", "gradient", "laplacian"]


class Theta(NamedTuple):
    """The trainable parameters: ``nets (J, P)`` and ``phys (n_q,)`` (unconstrained)."""

    nets: Float[Array, "J P"]
    phys: Float[Array, " q"]


class Bounded(eqx.Module):
    """Unknown physical parameters in a box: ``q = lower + (upper - lower) sigmoid(raw)``
    per entry with both bounds finite, ``q = raw`` where both are infinite (the trainable
    leaf is ``raw``, unconstrained, so Gauss-Newton steps never leave the box)."""

    lower: Float[Array, " q"]
    upper: Float[Array, " q"]

    def __init__(self, lower, upper):
        self.lower = jnp.asarray(lower, float)
        self.upper = jnp.asarray(upper, float)

    def __check_init__(self):
        lo, hi = np.asarray(self.lower), np.asarray(self.upper)
        if lo.shape != hi.shape or lo.ndim != 1:
            raise ValueError("lower and upper must be vectors of the same length")
        if np.any(np.isfinite(lo) != np.isfinite(hi)) or np.any(lo >= hi):
            raise ValueError("each parameter needs lower < upper, both finite or both infinite")

    def __call__(self, raw: Float[Array, " q"]) -> Float[Array, " q"]:
        fin = jnp.isfinite(self.lower)
        lo, span = jnp.where(fin, self.lower, 0.0), jnp.where(fin, self.upper - self.lower, 1.0)
        return jnp.where(fin, lo + span * jax.nn.sigmoid(raw), raw)

    def inverse(self, q: Float[Array, " q"]) -> Float[Array, " q"]:
        """The ``raw`` that gives ``q`` (``q`` strictly inside the box)."""
        fin = jnp.isfinite(self.lower)
        lo, span = jnp.where(fin, self.lower, 0.0), jnp.where(fin, self.upper - self.lower, 1.0)
        s = jnp.clip((q - lo) / span, 1e-12, 1 - 1e-12)
        return jnp.where(fin, jnp.log(s) - jnp.log1p(-s), q)


def _identity_ansatz(x, u, q):
    return u


class Field(eqx.Module):
    """The windowed sum of per-subdomain networks (see the module docstring).

    ``template``: one subdomain's network (an ``eqx.nn.MLP`` with scalar output, say);
    every subdomain's network has its structure. ``ansatz(x, u, q) -> u`` imposes hard
    constraints (``q`` the physical parameters); ``scale`` multiplies the sum.
    """

    decomposition: Decomposition
    template: eqx.Module
    ansatz: Callable = eqx.field(static=True, default=_identity_ansatz)
    scale: float = eqx.field(static=True, default=1.0)

    @classmethod
    def mlp(cls, decomposition: Decomposition, width: int, depth: int = 1, *,
            activation: Callable = jnp.tanh, key: PRNGKeyArray,
            ansatz: Callable = _identity_ansatz, scale: float = 1.0) -> Field:
        """Networks ``[d, width] * depth + [1]`` with ``activation`` (FBPINN's FCN)."""
        net = eqx.nn.MLP(decomposition.dim, "scalar", width, depth, activation=activation,
                         key=key, dtype=decomposition.centers.dtype)
        return cls(decomposition, net, ansatz, scale)

    @property
    def size(self) -> int:
        """``P``: the parameters of one subdomain's network."""
        return ravel_pytree(eqx.filter(self.template, eqx.is_inexact_array))[0].size

    def init(self, key: PRNGKeyArray) -> Float[Array, "J P"]:
        """Fresh networks for every subdomain (the template's initialiser), raveled."""
        def one(k):
            net = type(self.template)(**_mlp_kwargs(self.template), key=k)
            return ravel_pytree(eqx.filter(net, eqx.is_inexact_array))[0]

        return jax.vmap(one)(jax.random.split(key, self.decomposition.count))

    def net(self, w: Float[Array, " P"], z: Float[Array, " d"]) -> Float[Array, ""]:
        """One subdomain's network with raveled parameters ``w`` at local point ``z``."""
        params, static = eqx.partition(self.template, eqx.is_inexact_array)
        unravel = ravel_pytree(params)[1]
        return jnp.reshape(eqx.combine(unravel(w), static)(z), ())

    # slots and mask as Decomposition.cover returns them (numpy) or traced (the residual)
    def at_slots(self, nets_s: Float[Array, "K P"], slots: Int[Array | np.ndarray, " K"],
                 mask: Bool[Array | np.ndarray, " K"], x: Float[Array | np.ndarray, " d"],
                 q: Float[Array, " q"]) -> Float[Array, ""]:
        """``u(x)`` from the subdomains ``slots`` (those whose support holds ``x``, padding
        masked out) with their parameters ``nets_s``: the local form the residual uses."""
        dec = self.decomposition
        z = (x - dec.centers[slots]) / dec.half_widths[slots]
        phi = jnp.where(mask, cosine_window(z), 0.0)
        w = phi / jnp.sum(phi)
        outs = jax.vmap(self.net)(nets_s, z)
        return self.ansatz(x, self.scale * jnp.sum(w * outs), q)

    def __call__(self, nets: Float[Array, "J P"], x: Float[Array, " d"],
                 q: Float[Array, " q"]) -> Float[Array, ""]:
        """``u(x)`` evaluating every subdomain (for plots and errors, not for training)."""
        dec = self.decomposition
        z = dec.local(x)
        outs = jax.vmap(self.net)(nets, z)
        return self.ansatz(x, self.scale * jnp.sum(dec.windows(x) * outs), q)


def _mlp_kwargs(net) -> dict:
    """The constructor arguments of an ``eqx.nn.MLP`` (to draw fresh ones like it)."""
    if not isinstance(net, eqx.nn.MLP):
        raise TypeError("Field.init draws fresh eqx.nn.MLP networks; pass nets yourself "
                        f"for a {type(net).__name__}")
    dtype = net.layers[0].weight.dtype
    return dict(in_size=net.in_size, out_size=net.out_size, width_size=net.width_size,
                depth=net.depth, activation=net.activation,
                final_activation=net.final_activation, use_bias=net.use_bias,
                use_final_bias=net.use_final_bias, dtype=dtype)


# ------------------------------------------------------- forward-mode derivatives
def _unit(x, axis):
    return jnp.zeros_like(x).at[axis].set(1.0)


def derivative(u: Callable, axis: int = 0, order: int = 1) -> Callable:
    """``x -> d^order u / dx_axis^order`` by nested forward-mode JVPs (``u``: ``(d,) -> ()``)."""
    f = u
    for _ in range(order):
        f = (lambda g: lambda x: jax.jvp(g, (x,), (_unit(x, axis),))[1])(f)
    return f


def gradient(u: Callable, x: Float[Array, " d"]) -> Float[Array, " d"]:
    """``grad u(x)``, one JVP per axis (forward mode: cheap for small ``d``)."""
    return jnp.stack([derivative(u, a)(x) for a in range(x.shape[0])])


def laplacian(u: Callable, x: Float[Array, " d"]) -> Float[Array, ""]:
    """``sum_a d^2u/dx_a^2``, forward over forward mode."""
    return sum(derivative(u, a, 2)(x) for a in range(x.shape[0]))
