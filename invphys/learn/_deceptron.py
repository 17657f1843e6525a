"""Deceptrons: a learned forward surrogate ``f`` paired with a learned local inverse ``g``.

Both maps act on ONE sample: ``f(x)`` takes a raw x (shape ``(n,)``) to a normalised
output z (shape ``(m,)``, the training split's z-scores), ``g(z)`` takes z back to x.
``jax.vmap`` them for a batch.

* :class:`Deceptron` is the paper's one-layer pair, f(x) = s(W x + b), g(z) = s~(V z + c),
  s the identity or LeakyReLU and s~ its exact inverse.
* :class:`MLPDeceptron` is an MLP pair for forward maps an affine surrogate cannot fit.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._configs import ACTIVATIONS, TrainConfig

MLP_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "softplus": jax.nn.softplus,
}


class AbstractDeceptron(eqx.Module):
    """A forward surrogate ``f: x -> z`` and a local inverse ``g: z -> x``, on one sample.

    z is the normalised output space the model was trained in (see
    :class:`invphys.Normaliser`). Subclasses define :meth:`f`, :meth:`g`, ``x_size``
    and ``y_size``; everything else (losses, JCP, training, checkpoints) uses only these.
    """

    @abc.abstractmethod
    def f(self, x: Float[Array, " n"]) -> Float[Array, " m"]:
        """The forward surrogate on one raw x."""

    @abc.abstractmethod
    def g(self, z: Float[Array, " m"]) -> Float[Array, " n"]:
        """The learned inverse on one normalised output z."""

    @property
    @abc.abstractmethod
    def x_size(self) -> int:
        """Length n of x."""

    @property
    @abc.abstractmethod
    def y_size(self) -> int:
        """Length m of y (and z)."""

    def structure_residuals(self) -> dict[str, tuple[Array, ...]]:
        """Residuals of the structural penalties, by loss term: each term is the sum of
        ``mean(r**2)`` over its residuals. None for a model without W and V."""
        return {}

    def affine(self) -> tuple[Array, Array, bool] | None:
        """``(W, V, s is linear)`` for a model with a forward and an inverse matrix, else
        None (the card's ||V W - I||_F and cond(W) need them)."""
        return None

    def info(self) -> dict[str, object]:
        """The card's description of the architecture (class, sizes, settings)."""
        return {"class": type(self).__name__, "x_size": self.x_size, "y_size": self.y_size}

    def __call__(self, x: Float[Array, " n"]) -> Float[Array, " m"]:
        return self.f(x)


def _leaky(u: Array, slope: float) -> Array:
    return jnp.where(u >= 0, u, slope * u)


def _leaky_inverse(v: Array, slope: float) -> Array:
    return jnp.where(v >= 0, v, v / slope)


def ridge_forward(x: ArrayLike, z: ArrayLike, lam: float) -> np.ndarray:
    """Ridge fit of z ~ W x (no intercept): ``W = Z^T X (X^T X + lam I)^-1``.

    Computed in float64 NumPy (a symmetric solve, not an explicit inverse).
    """
    X = np.asarray(x, np.float64)
    Z = np.asarray(z, np.float64)
    A = X.T @ X + lam * np.eye(X.shape[1])
    # W = Z^T X A^-1  <=>  A W^T = X^T Z  (A symmetric)
    return np.linalg.solve(A, X.T @ Z).T


def ridge_inverse(W: ArrayLike, lam: float) -> np.ndarray:
    """Ridge pseudo-inverse of W: ``V = (W^T W + lam I)^-1 W^T`` (float64 NumPy)."""
    W = np.asarray(W, np.float64)
    return np.linalg.solve(W.T @ W + lam * np.eye(W.shape[1]), W.T)


class Deceptron(AbstractDeceptron):
    """The paper's affine Deceptron: f(x) = s(W x + b), g(z) = s~(V z + c).

    Arguments:
        W: ``(m, n)`` forward matrix; b: ``(m,)`` forward bias.
        V: ``(n, m)`` inverse matrix, or ``None`` to tie ``V = W^T`` (the ablation).
        c: ``(n,)`` inverse bias.
        activation: ``"identity"`` (the paper's main experiments) or ``"leaky_relu"``;
            s~ is the exact inverse of s.
        slope: the LeakyReLU negative slope (0.1).

    Use :meth:`ridge` for the paper's initialisation from data.
    """

    W: Float[Array, "m n"]
    b: Float[Array, " m"]
    V: Float[Array, "n m"] | None
    c: Float[Array, " n"]
    activation: str = eqx.field(static=True)
    slope: float = eqx.field(static=True)

    def __init__(self, W, b, V, c, activation: str = "identity", slope: float = 0.1):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if not slope > 0:
            raise ValueError(f"slope must be > 0 (s must be invertible), got {slope}")
        self.W = jnp.asarray(W)
        m, n = self.W.shape
        self.b = jnp.asarray(b)
        self.V = None if V is None else jnp.asarray(V)
        self.c = jnp.asarray(c)
        if self.b.shape != (m,) or self.c.shape != (n,) or (
            self.V is not None and self.V.shape != (n, m)
        ):
            raise ValueError(
                f"inconsistent shapes: W {self.W.shape}, b {self.b.shape}, "
                f"V {None if self.V is None else self.V.shape}, c {self.c.shape}"
            )
        self.activation = activation
        self.slope = float(slope)

    @classmethod
    def ridge(
        cls,
        x: Float[ArrayLike, "N n"],
        z: Float[ArrayLike, "N m"],
        lam: float = 1e-4,
        *,
        activation: str = "identity",
        slope: float = 0.1,
        tie_v: bool = False,
        dtype=None,
    ) -> Deceptron:
        """The paper's initialisation: W = Z^T X (X^T X + lam I)^-1,
        V = (W^T W + lam I)^-1 W^T (or V tied to W^T), b = c = 0."""
        W = ridge_forward(x, z, lam)
        V = None if tie_v else ridge_inverse(W, lam)
        dtype = dtype or jnp.result_type(float)
        m, n = W.shape
        return cls(
            jnp.asarray(W, dtype), jnp.zeros((m,), dtype),
            None if V is None else jnp.asarray(V, dtype), jnp.zeros((n,), dtype),
            activation=activation, slope=slope,
        )

    @classmethod
    def zeros(cls, x_size: int, y_size: int, *, activation: str = "identity",
              slope: float = 0.1, tie_v: bool = False, dtype=None) -> Deceptron:
        """An all-zero Deceptron of the given sizes (a skeleton to load weights into)."""
        dtype = dtype or jnp.result_type(float)
        n, m = x_size, y_size
        V = None if tie_v else jnp.zeros((n, m), dtype)
        return cls(jnp.zeros((m, n), dtype), jnp.zeros((m,), dtype), V,
                   jnp.zeros((n,), dtype), activation=activation, slope=slope)

    @property
    def x_size(self) -> int:
        return self.W.shape[1]

    @property
    def y_size(self) -> int:
        return self.W.shape[0]

    @property
    def tie_v(self) -> bool:
        return self.V is None

    @property
    def inverse_matrix(self) -> Float[Array, "n m"]:
        """V, or W^T when tied."""
        return self.W.T if self.V is None else self.V

    def _s(self, u):
        return u if self.activation == "identity" else _leaky(u, self.slope)

    def _s_inv(self, v):
        return v if self.activation == "identity" else _leaky_inverse(v, self.slope)

    def f(self, x):
        return self._s(self.W @ x + self.b)

    def g(self, z):
        return self._s_inv(self.inverse_matrix @ z + self.c)

    def structure_residuals(self) -> dict[str, tuple[Array, ...]]:
        """spectral: W^T W - I; bias: b + c (soft tie b = -c; b and c themselves when
        their sizes differ); comp: V W - I."""
        W, b, c = self.W, self.b, self.c
        eye = jnp.eye(W.shape[1], dtype=W.dtype)
        return {
            "spectral": (W.T @ W - eye,),
            "bias": (b - (-c),) if b.shape == c.shape else (b, c),
            "comp": (self.inverse_matrix @ W - eye,),
        }

    def affine(self) -> tuple[Array, Array, bool] | None:
        return self.W, self.inverse_matrix, self.activation == "identity"

    def info(self) -> dict[str, object]:
        return {**super().info(), "activation": self.activation, "slope": self.slope,
                "tie_v": self.tie_v}


class MLPDeceptron(AbstractDeceptron):
    """An MLP Deceptron: f and g are independent MLPs (``depth`` hidden layers of ``width``).

    x enters f, and leaves g, through a fixed (not trained) per-component affine
    scaling fitted on the training x (``x_mean``, ``x_scale``), so the networks see
    O(1) inputs and targets whatever the units of x; f and g still act on raw x.
    z is already normalised.

    The W/V-specific losses of the paper (spectral, soft bias tie, composition VW - I)
    have no single W or V here and are skipped; the Jacobian Composition Penalty is the
    nonlinear analogue of the composition term and applies unchanged.
    """

    f_net: eqx.nn.MLP
    g_net: eqx.nn.MLP
    x_mean: Float[Array, " n"]
    x_scale: Float[Array, " n"]
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)

    def __init__(
        self,
        x_size: int,
        y_size: int,
        width: int = 256,
        depth: int = 3,
        activation: str = "silu",
        *,
        key: PRNGKeyArray,
        x_mean: ArrayLike | None = None,
        x_scale: ArrayLike | None = None,
        dtype=None,
    ):
        if activation not in MLP_ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {tuple(MLP_ACTIVATIONS)}, got {activation!r}"
            )
        dtype = dtype or jnp.result_type(float)
        kf, kg = jax.random.split(key)
        act = MLP_ACTIVATIONS[activation]
        self.f_net = eqx.nn.MLP(x_size, y_size, width, depth, activation=act, key=kf,
                                dtype=dtype)
        self.g_net = eqx.nn.MLP(y_size, x_size, width, depth, activation=act, key=kg,
                                dtype=dtype)
        self.x_mean = (jnp.zeros((x_size,), dtype) if x_mean is None
                       else jnp.asarray(x_mean, dtype))
        self.x_scale = (jnp.ones((x_size,), dtype) if x_scale is None
                        else jnp.asarray(x_scale, dtype))
        if self.x_mean.shape != (x_size,) or self.x_scale.shape != (x_size,):
            raise ValueError(f"x_mean and x_scale must have shape ({x_size},)")
        self.width = int(width)
        self.depth = int(depth)
        self.activation = activation

    @staticmethod
    def x_stats(x: Float[ArrayLike, "N n"]) -> tuple[np.ndarray, np.ndarray]:
        """Per-component mean and std of training x (std floored to 1 where ~constant)."""
        X = np.asarray(x, np.float64)
        mean, std = X.mean(axis=0), X.std(axis=0)
        tiny = 1e-12 * max(float(std.max(initial=0.0)), 1.0)
        return mean, np.where(std > tiny, std, 1.0)

    @property
    def x_size(self) -> int:
        return self.x_mean.shape[0]

    @property
    def y_size(self) -> int:
        return self.f_net.out_size

    def info(self) -> dict[str, object]:
        return {**super().info(), "width": self.width, "depth": self.depth,
                "activation": self.activation}

    def f(self, x):
        mean, scale = jax.lax.stop_gradient((self.x_mean, self.x_scale))
        return self.f_net((x - mean) / scale)

    def g(self, z):
        mean, scale = jax.lax.stop_gradient((self.x_mean, self.x_scale))
        return self.g_net(z) * scale + mean


def _dtype(cfg: TrainConfig):
    return jnp.float64 if cfg.dtype == "float64" else jnp.float32


def init_model(cfg: TrainConfig, x_train: Array, z_train: Array) -> AbstractDeceptron:
    """The protocol's initial model: ridge for the affine Deceptron, seeded init for the MLP
    (key: the first half of ``split(key(seed))``)."""
    n, m = x_train.shape[1], z_train.shape[1]
    if cfg.model == "linear":
        return Deceptron.ridge(x_train, z_train, cfg.ridge_lambda, activation=cfg.activation,
                               slope=cfg.leaky_slope, tie_v=cfg.tie_v, dtype=_dtype(cfg))
    mean, scale = MLPDeceptron.x_stats(x_train)
    return MLPDeceptron(n, m, cfg.width, cfg.depth, cfg.mlp_activation,
                        key=jax.random.split(jax.random.key(cfg.seed))[0],
                        x_mean=mean, x_scale=scale, dtype=_dtype(cfg))


def skeleton_model(cfg: TrainConfig, x_size: int, y_size: int) -> AbstractDeceptron:
    """A model of the right structure, shapes and dtypes (no data; for loading weights).

    Wrap in ``eqx.filter_eval_shape`` to get the structure without allocating."""
    if cfg.model == "linear":
        return Deceptron.zeros(x_size, y_size, activation=cfg.activation,
                               slope=cfg.leaky_slope, tie_v=cfg.tie_v, dtype=_dtype(cfg))
    return MLPDeceptron(x_size, y_size, cfg.width, cfg.depth, cfg.mlp_activation,
                        key=jax.random.key(0), dtype=_dtype(cfg))
