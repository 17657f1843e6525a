"""Deblur-2D: recover a smooth field from a blurred, saturated, downsampled, noisy image.

The DeceptronNet v0 task (spec: "DeceptronNet v0" in the Deceptron protocol). With
``B_sigma`` a Gaussian blur of std ``sigma`` pixels and ``P`` average pooling by ``pool``,

    A_sigma(x) = P( sigmoid( gain * (clamp(B_sigma x, 0, 1) - 0.5) ) )

maps a field ``x`` in [0, 1]^(n x n) (default 64 x 64) to an image of
(n / pool) x (n / pool) (default 32 x 32). Every sample has its own blur,
``sigma ~ U(sigma_range)`` (default U(0.7, 2.0)): that is the *true* forward A_true.
The *nominal* forward A_nom is the same map with ``sigma = sigma_nominal`` (1.3); a
learned corrector (and a solver not told the kernel) only knows A_nom. Observations
carry signal-dependent noise of std ``scale * sqrt(y)`` (:class:`SqrtNoise`).

Shapes. :class:`Deblur2D` accepts a field either as an ``(n, n)`` image or as its
row-major flattening ``(n * n,)`` and answers in the same convention (``(m, m)`` or
``(m * m,)``, ``m = n / pool``). The :class:`~invphys.Problem` interface works with 1-D
vectors, so :func:`build` hands it the flat convention: the problem's x has
``x_size = n * n`` (4096) and its y has ``m * m`` (1024) entries; the forward reshapes
to 2-D inside.

Boundary condition. The blur uses half-sample symmetric (reflecting, Neumann-type)
extension: pixel ``-1`` mirrors pixel ``0``, pixel ``n`` mirrors ``n - 1``. The 1-D
blur is then a *symmetric* ``n x n`` matrix ``K`` whose rows and columns all sum to one
(as long as the kernel radius is at most ``n``), and the 2-D blur is ``K X K^T``. So
the blur maps constant fields to themselves, preserves the mean of every field, keeps
[0, 1] fields in [0, 1] (the clamp is only a guard), and is its own adjoint. The
kernel is the Gaussian sampled at integer offsets ``-radius..radius`` and normalised to
sum one; ``radius`` is static (a compile-time shape), by default
``ceil(truncate * max(sigma_range[1], sigma_nominal))`` = 8.

Derivatives. Everything is plain jax (the blur matrix ``K = sum_d k_d P_d`` from the
kernel and static reflection patterns, two small matmuls, a reshape-mean, a
sigmoid), so JVP, VJP, jit and vmap all work, in x and in sigma. ``sigma`` is a
pytree leaf of :class:`Deblur2D` (a Python float or a jax scalar), so a batch of true
operators is ``jax.vmap(lambda x, s: op.with_sigma(s)(x))(xs, sigmas)``.

Data. :class:`Deblur2DSampler` is the problem's prior: ``sampler(key, count)`` gives the
x's (what :meth:`Problem.sample` uses) and ``sampler.pairs(key, count)`` gives the same
x's with their per-sample ``sigma``. Note that :meth:`Problem.observe` (and so
``make_dataset``) simulates with the problem's forward, A_nom, for every sample; the
protocol's data come from :func:`draw` (x, sigma, clean and noisy y under A_true).
The protocol's common start is :func:`start` (``clamp(upsample(y), 0, 1)``), which
depends on y and so is not :meth:`Problem.start` (that one is the box midpoint).
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._configs import NetTrainConfig
from .._errors import SpecError
from .._problem import AbstractNoise, Problem
from .._spec import Key, Spec, config_schema, nonnegative, positive
from ._registry import register


def _even(v):
    return None if v >= 4 and v % 2 == 0 else "must be an even integer >= 4"


def _sigma_range(v):
    if not isinstance(v, tuple) or len(v) != 2:
        return "must be a list [sigma_min, sigma_max]"
    if not 0 < v[0] <= v[1]:
        return "must satisfy 0 < sigma_min <= sigma_max"
    return None


SCHEMA = {
    "physics": {
        "n": Key(int, default=64, check=_even, doc="the field is n x n pixels"),
        "pool": Key(int, default=2, check=positive,
                    doc="average-pooling factor (n must be divisible by it)"),
        "gain": Key(float, default=1.2, doc="sigmoid gain: sigmoid(gain * (u - 0.5))"),
        "sigma_range": Key("floats", default=(0.7, 2.0), check=_sigma_range,
                           doc="per-sample true blur std ~ U(sigma_min, sigma_max), pixels"),
        "sigma_nominal": Key(float, default=1.3, check=positive,
                             doc="the nominal operator's blur std (pixels)"),
        "truncate": Key(float, default=4.0, check=positive,
                        doc="kernel radius = ceil(truncate * largest sigma) unless radius"),
        "radius": Key(int, default=None, check=positive,
                      doc="kernel radius in pixels (static; overrides truncate)"),
    },
    "prior": {
        "length_scale": Key(float, default=3.0, check=positive,
                            doc="smoothness: std (pixels) of the Gaussian filter applied "
                                "to white noise before min-max normalisation to [0, 1]"),
    },
    # Replaces the common [noise] section: the noise is signal-dependent.
    "noise": {
        "scale": Key(float, default=0.03, check=nonnegative,
                     doc="signal-dependent noise: std = scale * sqrt(y)"),
        "std": Key(float, default=0.0, check=nonnegative,
                   doc="extra additive Gaussian std (0 in the protocol)"),
    },
    # Replaces the common [train] section (the Deceptron's): DeceptronNet v0 training,
    # the fields of invphys.learn.NetTrainConfig; defaults = the protocol.
    "train": config_schema(NetTrainConfig),
}


# --------------------------------------------------------------------------- operators
def _reflect_indices(n: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the 1-D blur matrix: (i, reflect(i + d)) per offset d."""
    if radius > n:
        raise ValueError(f"kernel radius {radius} exceeds the image size {n}")
    i = np.repeat(np.arange(n)[:, None], 2 * radius + 1, axis=1)
    j = i + np.arange(-radius, radius + 1)[None, :]
    j = np.where(j < 0, -j - 1, j)
    j = np.where(j >= n, 2 * n - 1 - j, j)
    return i, j


def gaussian_kernel(sigma, radius: int, dtype=None) -> Float[Array, " k"]:
    """The Gaussian of std ``sigma`` at offsets ``-radius..radius`` (``k = 2 radius + 1``
    taps), normalised to sum one."""
    dtype = dtype or jnp.result_type(float)
    d = jnp.arange(-radius, radius + 1, dtype=dtype)
    s = jnp.asarray(sigma, dtype)
    k = jnp.exp(-0.5 * (d / s) ** 2)
    return k / jnp.sum(k)


@functools.cache
def _reflect_basis(n: int, radius: int) -> np.ndarray:
    """``P[d, i, j] = 1`` where ``j = reflect(i + d - radius)``: the blur is ``k . P``."""
    i, j = _reflect_indices(n, radius)
    P = np.zeros((2 * radius + 1, n, n))
    np.add.at(P, (np.arange(2 * radius + 1)[None, :], i, j), 1.0)
    P.setflags(write=False)
    return P


def blur_matrix(sigma, n: int, radius: int, dtype=None) -> Float[Array, "n n"]:
    """The symmetric ``n x n`` 1-D Gaussian blur with half-sample reflecting boundaries."""
    k = gaussian_kernel(sigma, radius, dtype)
    return jnp.tensordot(k, jnp.asarray(_reflect_basis(n, radius), k.dtype), axes=1)


def pool2d(x: Float[Array, "n n"], p: int) -> Float[Array, "m m"]:
    """Average pooling by ``p`` in both directions."""
    n = x.shape[-1]
    return x.reshape(n // p, p, n // p, p).mean(axis=(1, 3))


def upsample(y: Float[Array, "..."], factor: int = 2) -> Float[Array, "..."]:
    """Nearest-neighbour upsampling by ``factor`` (pixel replication).

    Takes an ``(m, m)`` image or its flattening ``(m * m,)`` and answers in the same
    convention. It is ``factor**2`` times the adjoint of :func:`pool2d`.
    """
    flat = y.ndim == 1
    if flat:
        m = math.isqrt(y.shape[0])
        y = y.reshape(m, m)
    u = jnp.repeat(jnp.repeat(y, factor, axis=-2), factor, axis=-1)
    return u.reshape(-1) if flat else u


def start(y: Float[Array, "..."], factor: int = 2) -> Float[Array, "..."]:
    """The protocol's common start for every method: ``clamp(upsample(y), 0, 1)``."""
    return jnp.clip(upsample(y, factor), 0.0, 1.0)


def _clamp01(u):
    # derivative 1 on the closed interval [0, 1], 0 outside (the clamp is a guard:
    # the blur keeps [0, 1] fields in [0, 1])
    return jnp.where((u >= 0.0) & (u <= 1.0), u, jnp.clip(u, 0.0, 1.0))


class Deblur2D(eqx.Module):
    """The forward map A_sigma: field x (n x n) -> image y ((n/pool) x (n/pool)).

    ``sigma`` is a leaf (Python float or jax scalar) so it can be traced and vmapped;
    the rest is static. Inputs may be ``(n, n)`` or flat ``(n * n,)``; the output
    follows the input's convention. Also exposes the linear part
    ``linear = pool o blur`` and its exact adjoint ``linear_T``.
    """

    sigma: float | Float[Array, ""]
    n: int = eqx.field(static=True, default=64)
    pool: int = eqx.field(static=True, default=2)
    gain: float = eqx.field(static=True, default=1.2)
    radius: int = eqx.field(static=True, default=8)

    def __check_init__(self):
        if self.n % self.pool:
            raise ValueError(f"n = {self.n} is not divisible by pool = {self.pool}")
        if self.radius > self.n:
            raise ValueError(f"kernel radius {self.radius} exceeds n = {self.n}")

    @property
    def m(self) -> int:
        """Output side length n / pool."""
        return self.n // self.pool

    def with_sigma(self, sigma) -> Deblur2D:
        """The same operator with another blur std (e.g. a sample's true sigma)."""
        return Deblur2D(sigma=sigma, n=self.n, pool=self.pool, gain=self.gain,
                        radius=self.radius)

    def matrix(self, dtype=None) -> Float[Array, "n n"]:
        """The 1-D blur matrix K (symmetric; the 2-D blur is ``K X K^T``)."""
        return blur_matrix(self.sigma, self.n, self.radius, dtype)

    # -- shape handling
    def _as_image(self, x, side):
        if x.shape == (side, side):
            return x, False
        if x.shape == (side * side,):
            return x.reshape(side, side), True
        raise ValueError(f"expected shape ({side}, {side}) or ({side * side},), got {x.shape}")

    # -- linear pieces
    def blur(self, x: Float[Array, "..."]) -> Float[Array, "..."]:
        """``K X K^T``: the Gaussian blur alone (self-adjoint)."""
        X, flat = self._as_image(x, self.n)
        K = self.matrix(X.dtype)
        out = K @ X @ K.T
        return out.reshape(-1) if flat else out

    def linear(self, x: Float[Array, "..."]) -> Float[Array, "..."]:
        """``pool(blur(x))``: the linear part (used for adjoint checks and linearised models)."""
        X, flat = self._as_image(x, self.n)
        out = pool2d(self.blur(X), self.pool)
        return out.reshape(-1) if flat else out

    def linear_T(self, w: Float[Array, "..."]) -> Float[Array, "..."]:
        """The exact adjoint of :meth:`linear`: ``K^T (upsample(w) / pool^2) K``."""
        W, flat = self._as_image(w, self.m)
        K = self.matrix(W.dtype)
        out = K.T @ (upsample(W, self.pool) / self.pool**2) @ K
        return out.reshape(-1) if flat else out

    # -- the forward map
    def __call__(self, x: Float[Array, "..."]) -> Float[Array, "..."]:
        X, flat = self._as_image(x, self.n)
        u = _clamp01(self.blur(X))
        out = pool2d(jax.nn.sigmoid(self.gain * (u - 0.5)), self.pool)
        return out.reshape(-1) if flat else out


def true_forward(op: Deblur2D, x: Float[Array, "..."], sigma) -> Float[Array, "..."]:
    """A_true for one sample: ``op`` with the sample's ``sigma``. vmap over (x, sigma)."""
    return op.with_sigma(sigma)(x)


def true_problem(problem: Problem, sigma) -> Problem:
    """The problem with its forward replaced by the sample's true operator (sigma)."""
    return problem.with_forward(problem.fn.with_sigma(sigma), name=f"{problem.name}[true]")


# --------------------------------------------------------------------------- noise
class SqrtNoise(AbstractNoise):
    """Signal-dependent noise: ``y + sqrt(scale^2 max(y, 0) + additive^2) * N(0, 1)``.

    The protocol's noise is ``scale = 0.03``, ``additive = 0`` (std ``0.03 sqrt(y)``).
    """

    scale: float = eqx.field(static=True, default=0.03)
    additive: float = eqx.field(static=True, default=0.0)

    def std(self, y):
        y = jnp.asarray(y)
        return jnp.sqrt(self.scale**2 * jnp.maximum(y, 0.0) + self.additive**2)

    def __call__(self, key, y):
        y = jnp.asarray(y)
        return y + self.std(y) * jax.random.normal(key, y.shape, y.dtype)


# --------------------------------------------------------------------------- prior
class Deblur2DSampler(eqx.Module):
    """Smooth random fields in [0, 1]^(n x n) and per-sample blur stds.

    Field generator: white Gaussian noise on a ``2n x 2n`` periodic grid, filtered in
    Fourier space by a Gaussian of std ``length_scale`` pixels, cropped to its top-left
    ``n x n`` corner (so the field is not periodic: the wrap-around is ``n`` pixels
    away, far beyond the correlation length), then min-max normalised per sample to
    exactly span [0, 1]. ``sigma ~ U(sigma_min, sigma_max)`` independently.

    ``sampler(key, count)`` returns the flat x's, shape ``(count, n * n)`` (the
    :class:`Problem` sampler interface); ``pairs(key, count)`` returns the same x's and
    their sigmas ``(count,)``; ``fields`` returns x as ``(count, n, n)``; ``one(key)``
    is a single draw.
    """

    n: int = eqx.field(static=True, default=64)
    length_scale: float = eqx.field(static=True, default=3.0)
    sigma_min: float = eqx.field(static=True, default=0.7)
    sigma_max: float = eqx.field(static=True, default=2.0)

    def one(self, key: PRNGKeyArray) -> tuple[Array, Array]:
        """One draw: a field ``(n, n)`` and its sigma (a scalar)."""
        k_x, k_s = jax.random.split(key)
        N = 2 * self.n
        dtype = jnp.result_type(float)
        w = jax.random.normal(k_x, (N, N), dtype)
        f = jnp.fft.fftfreq(N).astype(dtype)
        g = jnp.exp(-2.0 * (jnp.pi * self.length_scale * f) ** 2)  # FT of the Gaussian
        field = jnp.fft.ifft2(jnp.fft.fft2(w) * (g[:, None] * g[None, :])).real
        field = field[: self.n, : self.n]
        lo, hi = field.min(), field.max()
        field = jnp.clip((field - lo) / (hi - lo), 0.0, 1.0)
        sigma = jax.random.uniform(k_s, (), dtype, self.sigma_min, self.sigma_max)
        return field, sigma

    @eqx.filter_jit
    def pairs(self, key: PRNGKeyArray, count: int) -> tuple[Array, Array]:
        """``(x, sigma)``: x of shape ``(count, n * n)``, sigma of shape ``(count,)``.

        Sample i depends only on ``(key, i)``: a smaller ``count`` gives a prefix of a
        larger one. Runs in batches of 256 (memory stays flat for large counts).
        """
        keys = jax.random.split(key, count)
        x, sigma = jax.lax.map(self.one, keys, batch_size=max(1, min(count, _BATCH)))
        return x.reshape(count, -1), sigma

    def fields(self, key: PRNGKeyArray, count: int) -> Float[Array, "count n n"]:
        """The x's of :meth:`pairs` as ``(count, n, n)`` images."""
        return self.pairs(key, count)[0].reshape(count, self.n, self.n)

    def __call__(self, key: PRNGKeyArray, count: int) -> Float[Array, "count nn"]:
        return self.pairs(key, count)[0]


_BATCH = 256


def draw(problem: Problem, key: PRNGKeyArray, count: int):
    """Protocol data: ``(x, sigma, y_clean, y_noisy)`` with y from each sample's A_true.

    x is flat ``(count, n * n)``, y flat ``(count, m * m)``; both stages are jitted
    (``count`` static) and run in batches of 256. Seeded and prefix-stable: the same key
    gives the same data, a smaller ``count`` a prefix of it; ``x`` equals
    ``problem.sample(k_x, count)`` with ``k_x`` the first half of ``jax.random.split(key)``.
    """
    k_x, k_noise = jax.random.split(key)
    x, sigma = problem.sampler.pairs(k_x, count)
    y, y_noisy = observe_true(problem.fn, problem.noise, k_noise, x, sigma)
    return x, sigma, y, y_noisy


@eqx.filter_jit
def observe_true(op: Deblur2D, noise: AbstractNoise | None, key: PRNGKeyArray,
                 x: Float[Array, "count nn"], sigma: Float[Array, " count"]):
    """Clean and noisy observations of a batch under each sample's true operator.

    Sample i's noise uses ``jax.random.split(key, count)[i]`` (prefix-stable).
    """
    count = x.shape[0]

    def one(args):
        xi, si, ki = args
        yi = true_forward(op, xi, si)
        return yi, (yi if noise is None else noise(ki, yi))

    return jax.lax.map(one, (x, sigma, jax.random.split(key, count)),
                       batch_size=max(1, min(count, _BATCH)))


# --------------------------------------------------------------------------- build
def kernel_radius(physics) -> int:
    """The static kernel radius a [physics] section asks for."""
    if physics["radius"] is not None:
        return int(physics["radius"])
    largest = max(physics["sigma_range"][1], physics["sigma_nominal"])
    return int(math.ceil(physics["truncate"] * largest))


def nominal_operator(spec: Spec) -> Deblur2D:
    """A_nom: the spec's operator with ``sigma = sigma_nominal``."""
    ph = spec["physics"]
    return Deblur2D(sigma=ph["sigma_nominal"], n=ph["n"], pool=ph["pool"], gain=ph["gain"],
                    radius=kernel_radius(ph))


def build(spec: Spec) -> Problem:
    """The deblur problem. Its forward is **A_nom** (sigma = sigma_nominal) on flat x.

    Use :func:`true_problem` / :func:`true_forward` for a sample's true operator and
    :func:`draw` for protocol data (y under A_true).
    """
    ph, pr, b, nz = spec["physics"], spec["prior"], spec["bounds"], spec["noise"]
    if ph["n"] % ph["pool"]:
        raise SpecError(f"{spec.source}: key 'physics.n' ({ph['n']}) must be divisible "
                        f"by 'physics.pool' ({ph['pool']})")
    if kernel_radius(ph) > ph["n"]:
        raise SpecError(f"{spec.source}: kernel radius {kernel_radius(ph)} exceeds "
                        f"'physics.n' ({ph['n']}); lower 'physics.truncate' or 'radius'")
    op = nominal_operator(spec)
    lo, hi = ph["sigma_range"]
    sampler = Deblur2DSampler(n=ph["n"], length_scale=pr["length_scale"],
                              sigma_min=lo, sigma_max=hi)
    lower = 0.0 if b["lower"] is None else b["lower"]
    upper = 1.0 if b["upper"] is None else b["upper"]
    return Problem(
        op, lower, upper, x_size=ph["n"] ** 2, pinned=b["pin"], pin_value=b["pin_value"],
        sampler=sampler, noise=SqrtNoise(scale=nz["scale"], additive=nz["std"]),
        x0=spec["solve"]["x0"], name=spec.name, spec=spec,
    )


register("deblur2d", SCHEMA, build)
