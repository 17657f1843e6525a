"""Classical regularised baselines for Deblur-2D (beyond the paper).

Tikhonov (a gradient penalty) and smoothed total variation, each solved by the shared
solver layer's Levenberg-Marquardt (Newton-CG) on an *augmented residual*

    F_alpha(x) - [y; 0] = [A(x) - y; sqrt(alpha) R(x)]

so that 1/2 |F_alpha(x) - [y; 0]|^2 = 1/2 |A(x) - y|^2 + alpha/2 |R(x)|^2, with

* Tikhonov: ``R(x) = grad x`` (forward differences, both directions, Neumann
  boundary: the last difference in each direction is 0), so |R|^2 = |grad x|^2;
* TV: ``R(x)_i = (|grad x|_i^2 + eps^2)^(1/4)``, so |R|^2 = sum_i sqrt(|grad x|_i^2 +
  eps^2) = TV_eps(x) + eps n^2 (Gauss-Newton on this residual is the IRLS / lagged-
  diffusivity linearisation of smoothed TV).

The weight alpha comes from a small log grid (every alpha solved in one vmapped batch):
the *discrepancy principle* picks, per image, the alpha whose final data residual
RMSE(A(x_alpha) - y) is closest to ``tau`` x the noise level; the *oracle* picks the
alpha with the best x-RMSE (it uses the truth: reported separately, labelled oracle).
The noise level is the known noise model evaluated at the observation,
``delta = scale sqrt(mean(max(y, 0)))`` (the noise is ``scale sqrt(y)``), which is
within 1% of the true ``sqrt(mean(noise variance))`` on the test set.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

TV_EPS = 1e-2
TAU = 1.05
#: The alpha grid of both regularisers (log-spaced; their scales differ: the TV term is
#: ~|grad x| per pixel, the Tikhonov term ~|grad x|^2).
ALPHAS = {"Tikhonov": tuple(float(a) for a in 10.0 ** np.arange(-2.5, -0.49, 0.5)),
          "TV": tuple(float(a) for a in 10.0 ** np.arange(-3.5, -1.49, 0.5))}


def grad2d(x: Float[Array, " nn"], n: int) -> tuple[Array, Array]:
    """Forward differences of a flat ``n x n`` field (Neumann: 0 on the last row/column)."""
    X = x.reshape(n, n)
    dx = jnp.concatenate([X[1:, :] - X[:-1, :], jnp.zeros((1, n), X.dtype)], axis=0)
    dy = jnp.concatenate([X[:, 1:] - X[:, :-1], jnp.zeros((n, 1), X.dtype)], axis=1)
    return dx, dy


def tikhonov_term(x: Float[Array, " nn"], n: int) -> Float[Array, " 2*nn"]:
    """R(x) = grad x, flat: |R(x)|^2 = |grad x|^2."""
    dx, dy = grad2d(x, n)
    return jnp.concatenate([dx.reshape(-1), dy.reshape(-1)])


def tv_term(x: Float[Array, " nn"], n: int, eps: float = TV_EPS) -> Float[Array, " nn"]:
    """R(x)_i = (|grad x|_i^2 + eps^2)^(1/4): |R(x)|^2 = TV_eps(x) + eps n^2."""
    dx, dy = grad2d(x, n)
    return ((dx**2 + dy**2 + eps**2) ** 0.25).reshape(-1)


def tv(x: Float[Array, " nn"], n: int, eps: float = TV_EPS) -> Float[Array, ""]:
    """Smoothed isotropic total variation sum_i (sqrt(|grad x|_i^2 + eps^2) - eps)
    (0 for a constant field; -> the TV as eps -> 0)."""
    dx, dy = grad2d(x, n)
    return jnp.sum(jnp.sqrt(dx**2 + dy**2 + eps**2) - eps)


TERMS = {"Tikhonov": tikhonov_term, "TV": tv_term}


def augmented(forward, term, alpha, n: int):
    """``x -> [forward(x); sqrt(alpha) term(x, n)]``: the regularised residual's map (its
    target is ``[y; 0]``, :func:`augmented_target`)."""
    def fn(x):
        return jnp.concatenate([forward(x), jnp.sqrt(alpha) * term(x, n)])

    return fn


def augmented_target(y: Float[Array, " mm"], term_size: int) -> Float[Array, " k"]:
    """``[y; 0]``."""
    return jnp.concatenate([y, jnp.zeros((term_size,), y.dtype)])


def noise_level(y, scale: float, additive: float = 0.0) -> np.ndarray:
    """Per image ``sqrt(mean(scale^2 max(y, 0) + additive^2))``: the RMS of the noise
    model's std (:class:`~invphys.physics.deblur2d.SqrtNoise`) evaluated at the (noisy)
    observation, for a batch ``(N, m)``."""
    y = np.asarray(y, np.float64)
    return np.sqrt(np.mean(scale**2 * np.maximum(y, 0.0) + additive**2, axis=-1))


def discrepancy_choice(residuals: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per image (rows), the column (alpha) whose residual is closest to ``target``
    (one per image). ``residuals``: ``(N, n_alpha)``."""
    residuals = np.asarray(residuals, np.float64)
    target = np.asarray(target, np.float64).reshape(-1, 1)
    return np.argmin(np.abs(residuals - target), axis=1)


def oracle_choice(x_rmse: np.ndarray) -> np.ndarray:
    """Per image (rows), the column (alpha) with the smallest x-RMSE (uses the truth)."""
    return np.argmin(np.asarray(x_rmse), axis=1)
