"""DeceptronNet v0: a few-step learned corrector for the Deblur-2D problem.

From the protocol ("DeceptronNet v0"): start at ``x_0 = clamp(upsample(y), 0, 1)``
(:func:`invphys.physics.deblur2d.start`, the start every method shares); then for
``t = 0 .. steps - 1``

    r_t     = A_nom(x_t) - y                                  (32 x 32)
    dx_t    = UNet([up(y), up(r_t), x_t])                     (3 channels -> 1, 64 x 64)
    x_{t+1} = clamp(x_t - sigmoid(g_t) * dx_t, 0, 1)

with the nominal operator A_nom (sigma = 1.3; the network never sees the true
kernel), nearest-neighbour upsampling ``up``, one UNet shared by all steps and a
learned gain ``g_t`` per step (initialised to 0: step size 1/2). The output is in
[0, 1] by construction.

The UNet is small: ``depth`` average-pool downsamplings, two 3x3 conv + SiLU layers per
level, ``channels`` feature maps at every level (32 by default), nearest upsampling
and skip concatenation on the way up, and a 1x1 output conv initialised to zero (so an
untrained network returns its start, and training begins from a stable point).

The nominal operator is static configuration (not a trainable leaf): optimisers and
``eqx.filter`` over arrays see only the UNet weights and the gains.

One sample at a time: ``net(y)`` takes ``(m, m)`` or flat ``(m * m,)`` and returns
``(n, n)`` or flat ``(n * n,)``; vmap for batches. :func:`deceptronnet_loss` is the
training objective, a plain function of (model, batch).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..physics.deblur2d import Deblur2D, start, upsample

#: The protocol's configuration and a tiny one for quick tests (kwargs of DeceptronNet).
V0_CONFIG = {"channels": 32, "steps": 6, "depth": 2}
TINY_CONFIG = {"channels": 4, "steps": 2, "depth": 1}


def _pool(x: Float[Array, "c h w"]) -> Float[Array, "c h/2 w/2"]:
    c, h, w = x.shape
    return x.reshape(c, h // 2, 2, w // 2, 2).mean(axis=(2, 4))


def _up(x: Float[Array, "c h w"]) -> Float[Array, "c 2*h 2*w"]:
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class _Block(eqx.Module):
    """Two 3x3 convolutions (zero padding), each followed by SiLU."""

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d

    def __init__(self, c_in: int, c_out: int, *, key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        self.conv1 = eqx.nn.Conv2d(c_in, c_out, 3, padding=1, key=k1)
        self.conv2 = eqx.nn.Conv2d(c_out, c_out, 3, padding=1, key=k2)

    def __call__(self, x):
        return jax.nn.silu(self.conv2(jax.nn.silu(self.conv1(x))))


class UNet(eqx.Module):
    """A small UNet: (c_in, H, W) -> (c_out, H, W); H and W divisible by 2**depth."""

    down: tuple[_Block, ...]
    bottom: _Block
    up: tuple[_Block, ...]
    out: eqx.nn.Conv2d
    depth: int = eqx.field(static=True)

    def __init__(self, c_in: int = 3, c_out: int = 1, channels: int = 32, depth: int = 2,
                 *, key: PRNGKeyArray):
        keys = jax.random.split(key, 2 * depth + 2)
        c = channels
        self.down = tuple(_Block(c_in if i == 0 else c, c, key=keys[i]) for i in range(depth))
        self.bottom = _Block(c_in if depth == 0 else c, c, key=keys[depth])
        self.up = tuple(_Block(2 * c, c, key=keys[depth + 1 + i]) for i in range(depth))
        out = eqx.nn.Conv2d(c, c_out, 1, key=keys[-1])
        out = eqx.tree_at(lambda m: (m.weight, m.bias), out,
                          (jnp.zeros_like(out.weight), jnp.zeros_like(out.bias)))
        self.out = out
        self.depth = depth

    def __call__(self, x: Float[Array, "c h w"]) -> Float[Array, "c_out h w"]:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = _pool(x)
        x = self.bottom(x)
        for block, skip in zip(self.up, reversed(skips), strict=True):
            x = block(jnp.concatenate([_up(x), skip], axis=0))
        return self.out(x)


class DeceptronNet(eqx.Module):
    """DeceptronNet v0: ``steps`` unrolled UNet corrections against the nominal operator.

    Arguments:
        key: PRNG key for the UNet weights.
        channels, steps, depth: UNet width (every level), unrolled steps, UNet depth
            (protocol: 32, 6, 2 = :data:`V0_CONFIG`; :data:`TINY_CONFIG` for tests).
        operator: the nominal forward A_nom (a :class:`Deblur2D`; default sigma 1.3,
            64 x 64 -> 32 x 32). Kept as static configuration; ``sigma`` must be a
            Python number here.
    """

    unet: UNet
    gains: Float[Array, " steps"]
    operator: Deblur2D = eqx.field(static=True)
    channels: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)

    def __init__(self, key: PRNGKeyArray, *, channels: int = 32, steps: int = 6,
                 depth: int = 2, operator: Deblur2D | None = None):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        op = Deblur2D(sigma=1.3) if operator is None else operator
        op = op.with_sigma(float(op.sigma))
        if op.n % (2**depth):
            raise ValueError(f"n = {op.n} is not divisible by 2**depth = {2**depth}")
        self.operator = op
        self.unet = UNet(3, 1, channels, depth, key=key)
        self.gains = jnp.zeros((steps,), jnp.result_type(float))
        self.channels = channels
        self.depth = depth

    @property
    def n_steps(self) -> int:
        return self.gains.shape[0]

    def steps(self, y: Float[Array, "..."]) -> Float[Array, "T ..."]:
        """All iterates ``x_0 .. x_steps`` stacked (``x_0`` is the start), shape
        ``(T, n, n)`` or ``(T, n * n)`` following ``y``, ``T = steps + 1``."""
        op = self.operator
        flat = y.ndim == 1
        Y = y.reshape(op.m, op.m) if flat else y
        if Y.shape != (op.m, op.m):
            raise ValueError(f"y has shape {y.shape}, expected ({op.m}, {op.m}) "
                             f"or ({op.m * op.m},)")
        up_y = upsample(Y, op.pool)
        x0 = start(Y, op.pool)
        unet = self.unet

        def step(x, gain):
            r = op(x) - Y
            inp = jnp.stack([up_y, upsample(r, op.pool), x])
            dx = unet(inp)[0]
            x = jnp.clip(x - jax.nn.sigmoid(gain) * dx, 0.0, 1.0)
            return x, x

        # unrolled: XLA:CPU runs convolutions inside a while loop ~20x slower
        _, xs = jax.lax.scan(step, x0, self.gains, unroll=True)
        xs = jnp.concatenate([x0[None], xs])
        return xs.reshape(xs.shape[0], -1) if flat else xs

    def __call__(self, y: Float[Array, "..."]) -> Float[Array, "..."]:
        """The reconstruction ``x_hat`` (the last iterate) for one observation ``y``."""
        return self.steps(y)[-1]


def deceptronnet_outputs(model: DeceptronNet, y: Float[Array, "batch ..."],
                         sigma: Float[Array, " batch"] | None = None) -> dict[str, Array]:
    """What the loss reads from the network on a batch: the reconstructions ``x_hat`` and
    their images ``y_hat`` under each sample's true operator (``sigma``: the batch's
    true blur stds) or, without ``sigma``, the nominal one. The loss is quadratic in
    these, so they are what a Gauss-Newton step linearises."""
    x_hat = jax.vmap(model)(y)
    op = model.operator
    if sigma is None:
        y_hat = jax.vmap(op)(x_hat)
    else:
        y_hat = jax.vmap(lambda xi, si: op.with_sigma(si)(xi))(x_hat, sigma)
    return {"x_hat": x_hat, "y_hat": y_hat}


def deceptronnet_loss_from_outputs(outputs: dict[str, Array], x: Float[Array, "batch ..."],
                                   y: Float[Array, "batch ..."], *,
                                   data_weight: float = 0.1) -> Float[Array, ""]:
    """``MSE(x_hat, x) + data_weight * MSE(y_hat, y)`` from :func:`deceptronnet_outputs`."""
    x_hat, y_hat = outputs["x_hat"], outputs["y_hat"]
    mse = jnp.mean((x_hat - x.reshape(x_hat.shape)) ** 2)
    return mse + data_weight * jnp.mean((y_hat - y) ** 2)


def deceptronnet_loss(model: DeceptronNet, x: Float[Array, "batch ..."],
                      y: Float[Array, "batch ..."], sigma: Float[Array, " batch"] | None = None,
                      *, data_weight: float = 0.1) -> Float[Array, ""]:
    """Training loss on a batch: ``MSE(x_hat, x) + data_weight * MSE(A(x_hat), y)``.

    ``x``: true fields ``(batch, n, n)`` or ``(batch, n * n)``; ``y``: noisy observations
    ``(batch, m, m)`` or ``(batch, m * m)``. Both MSEs are means over all pixels and the
    batch. The data term uses each sample's true operator when ``sigma`` (the batch's
    true blur stds) is given and the nominal operator otherwise. The data term is small
    by construction: the sigmoid's slope (<= gain / 4 = 0.3) and the blur shrink x-errors
    in y, and its floor is the noise variance (~0.03^2 * 0.5); with A_nom it is also
    floored by the kernel mismatch, hence the small default weight.
    """
    return deceptronnet_loss_from_outputs(deceptronnet_outputs(model, y, sigma), x, y,
                                          data_weight=data_weight)
