"""Datasets for training surrogates and for evaluation: seeded splits and a normaliser.

The paper works in a normalised output space: every output dimension is z-scored with
the training split's mean and std, and every residual, RMSE and tolerance lives there.
:class:`Normaliser` does that safely (no division by ~0) and records which outputs
carry signal above the noise, so later layers can leave noise-only outputs (Heat's
pinned endpoints) out of a residual. :func:`normalised_problem` and
:func:`normalise_obs` put a problem and its observations in that space.
"""

from __future__ import annotations

import hashlib
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from ._problem import Problem


class Normaliser(eqx.Module):
    """Per-dimension affine map z = (y - mean) / scale, fitted on a training split.

    ``signal`` marks outputs whose variance exceeds the noise variance by more than
    sampling error (5 standard errors of a variance estimate). ``scale`` is the sample
    std, floored so a constant output never divides by ~0.
    """

    mean: Float[Array, " m"]
    scale: Float[Array, " m"]
    signal: Bool[Array, " m"]

    @classmethod
    def fit(cls, y_train: Float[Array, "count m"], noise_std: float | None = None):
        """Fit on a training split of (noisy) outputs; ``noise_std`` sets ``signal``."""
        y = jnp.asarray(y_train)
        count = y.shape[0]
        mean = jnp.mean(y, axis=0)
        std = jnp.std(y, axis=0)
        tiny = 1e-12 * jnp.maximum(jnp.max(std), 1.0)
        if noise_std:
            # var(y) = var(signal) + sigma^2; a variance estimate has relative
            # standard error sqrt(2 / count): test the excess at 5 standard errors.
            threshold = noise_std**2 * (1.0 + 5.0 * math.sqrt(2.0 / count))
            signal = std**2 > threshold
        else:
            signal = std > tiny
        scale = jnp.where(std > tiny, std, 1.0)
        return cls(mean=mean, scale=scale, signal=signal)

    def transform(self, y: Float[Array, "... m"]) -> Float[Array, "... m"]:
        return (y - self.mean) / self.scale

    def inverse(self, z: Float[Array, "... m"]) -> Float[Array, "... m"]:
        return z * self.scale + self.mean


class Dataset(eqx.Module):
    """Seeded train/val/test splits of (x, noisy y), with clean test outputs and a normaliser.

    ``y_*`` are raw (physical) outputs; use ``normaliser.transform`` for the paper's space.
    """

    x_train: Float[Array, "n_train n"]
    y_train: Float[Array, "n_train m"]
    x_val: Float[Array, "n_val n"]
    y_val: Float[Array, "n_val m"]
    x_test: Float[Array, "n_test n"]
    y_test: Float[Array, "n_test m"]
    y_test_clean: Float[Array, "n_test m"]
    normaliser: Normaliser

    def digest(self) -> str:
        """SHA-256 of the training arrays: identifies the data a model was trained on."""
        h = hashlib.sha256()
        for a in (self.x_train, self.y_train):
            arr = np.ascontiguousarray(np.asarray(a))
            h.update(str(arr.shape).encode() + str(arr.dtype).encode())
            h.update(arr.tobytes())
        return h.hexdigest()


def make_dataset(
    problem: Problem,
    key: PRNGKeyArray | int | None = None,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    chunk: int = 1000,
    progress: bool = False,
) -> Dataset:
    """Draw x from the prior, simulate, add noise, split, and fit the normaliser.

    Sizes and seed default to the problem's spec ``[data]`` section. Simulation runs
    in jitted, vmapped chunks of ``chunk`` samples; the same key gives the same data.
    """
    data = problem.spec["data"] if problem.spec is not None else {}
    n_train = n_train or data.get("n_train", 5000)
    n_val = n_val or data.get("n_val", 500)
    n_test = n_test or data.get("n_test", 500)
    if key is None:
        key = data.get("seed", 0)
    if isinstance(key, int):
        key = jax.random.key(key)
    total = n_train + n_val + n_test
    k_x, k_noise = jax.random.split(key)
    xs = problem.sample(k_x, total)
    simulate = eqx.filter_jit(problem.observe)
    noise_keys = jax.random.split(k_noise, math.ceil(total / chunk))
    starts = range(0, total, chunk)
    if progress:
        from tqdm.auto import tqdm  # only when asked: tqdm.auto probes for notebooks

        starts = tqdm(starts, desc=f"simulating {problem.name}", unit="chunk")
    clean, noisy = [], []
    for i, s in enumerate(starts):
        c, n = simulate(noise_keys[i], xs[s : s + chunk])
        clean.append(c)
        noisy.append(n)
    y_clean = jnp.concatenate(clean)
    y = jnp.concatenate(noisy)
    a, b = n_train, n_train + n_val
    noise_std = getattr(problem.noise, "sigma", None)
    return Dataset(
        x_train=xs[:a], y_train=y[:a],
        x_val=xs[a:b], y_val=y[a:b],
        x_test=xs[b:], y_test=y[b:], y_test_clean=y_clean[b:],
        normaliser=Normaliser.fit(y[:a], noise_std),
    )


# ------------------------------------------------------------ the normalised output space
def normalised_problem(problem: Problem, normaliser: Normaliser,
                       signal_only: bool = False) -> Problem:
    """``problem`` with forward x -> normaliser.transform(F(x)) (optionally signal dims only).

    Every residual, RMSE and tolerance of the Deceptron protocol lives in this z-space;
    ``signal_only`` drops outputs that carry noise only (Heat's pinned endpoints), which
    otherwise set a residual floor.
    """
    fn = problem.fn
    if signal_only:
        keep = np.flatnonzero(np.asarray(normaliser.signal))
        return problem.with_forward(
            lambda x: normaliser.transform(fn(x))[keep], name=f"{problem.name}[z,signal]"
        )
    return problem.with_forward(lambda x: normaliser.transform(fn(x)), name=f"{problem.name}[z]")


def normalise_obs(y, normaliser: Normaliser, signal_only: bool = False):
    """Observations ``y`` in the normalised space of :func:`normalised_problem`."""
    z = normaliser.transform(jnp.asarray(y))
    if signal_only:
        z = z[..., np.flatnonzero(np.asarray(normaliser.signal))]
    return z


def spec_normaliser(problem: Problem) -> Normaliser:
    """The normaliser of the spec's training split (simulated from the spec's seed)."""
    return make_dataset(problem, n_val=1, n_test=1).normaliser


# ----------------------------------------------- the whitened space and its signal basis
def whitened_normaliser(normaliser: Normaliser, sigma: float) -> tuple[Normaliser, np.ndarray]:
    """(white, keep): ``normaliser`` with every scale set to the noise std ``sigma``, and
    the indices of the outputs it marks as carrying signal.

    In ``white.transform(y)[..., keep]`` the noise has unit variance, so an RMSE of 1 is
    the noise level (a target of ~1.1 is the discrepancy principle), and the noise-only
    outputs (Heat's pinned endpoints) are left out.
    """
    keep = np.flatnonzero(np.asarray(normaliser.signal))
    white = Normaliser(mean=normaliser.mean, scale=jnp.full_like(normaliser.scale, sigma),
                       signal=normaliser.signal)
    return white, keep


def signal_basis(w_train) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, orthonormal basis U (m x k), eigenvalues) of the directions in which whitened
    training outputs (noise covariance I) carry signal.

    The largest eigenvalue of the sample covariance of pure unit noise sits at the
    Marchenko-Pastur edge (1 + sqrt(m / N))^2 with Tracy-Widom fluctuations of scale
    (sqrt N + sqrt m)(1 / sqrt N + 1 / sqrt m)^(1/3) / N (Johnstone 2001); directions
    more than 4 such scales above the edge carry signal. Projecting a whitened
    residual onto them before it enters an inverse map g drops the part of the noise
    that g would amplify into x directions the forward map erases (a learned
    truncated-SVD filter). At least one direction is always kept.
    """
    w = np.asarray(w_train, np.float64)
    count, m = w.shape
    mean = w.mean(axis=0)
    lam, U = np.linalg.eigh(np.cov(w, rowvar=False))
    lam, U = lam[::-1], U[:, ::-1]
    tw = (np.sqrt(count) + np.sqrt(m)) * (1 / np.sqrt(count) + 1 / np.sqrt(m)) ** (1 / 3) / count
    k = max(int(np.sum(lam > (1.0 + np.sqrt(m / count)) ** 2 + 4.0 * tw)), 1)
    return mean, U[:, :k], lam
