"""The quadrants of arXiv 2510.13680 (and the Kronecker-basis MLP) as jit/vmap-able problems.

Each :class:`Quadrant` draws its data and start from a seed inside JAX (so one compiled
run serves every seed and learning rate), gives the step's batch and the separate
curvature batch, and scores parameters by their *relative excess loss* (loss minus the
optimum, over its value at the start; for the MLP, whose optimum is unknown, the loss
over the initial loss). Data structures follow the paper's descriptions [reading, from
the abstract and the spec]:

* ``blockcov`` (full batch, identity basis): linear regression, ``x ~ N(0, Sigma)`` with
  ``Sigma`` block-diagonal, each block ``(1 - rho_k) I + rho_k 11^T`` (unit diagonal, so
  ``diag(G)`` is nearly constant and GN^-p is nearly gradient descent; ``rho_k`` up to
  0.999 makes the within-block contrasts slow);
* ``logistic`` (full batch, eigenbasis): logistic regression reparameterised as
  ``w = M theta`` with ``M = Q diag(s) Q^T`` ill-conditioned, labels from a logistic teacher;
  the GN eigenbasis recomputed every step (``logistic``) or fixed at the start
  (``logistic-fixed``, the GN matrix then drifts away from diagonal in it);
* ``quadratic`` (full batch, eigenbasis): linear regression with a dense rotated
  covariance ``Q diag(lambda) Q^T``, ``lambda`` spanning three decades;
* ``stochastic`` (mini-batch, identity basis): Gaussian linear regression ``x ~ N(0,
  diag(lambda))``, ``lambda_i = 1/i``, label noise, fresh batches each step (online);
* ``mlp`` (mini-batch, Kronecker basis): a 64-32-10 tanh MLP with cross-entropy on
  scikit-learn's digits (a synthetic teacher-MLP task if scikit-learn is absent).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

Fns = tuple[Callable, Callable, Callable, Callable]


@dataclasses.dataclass(frozen=True, eq=False)
class Quadrant:
    """One problem: ``setup(key) -> (params0, data)``; ``batches(data, key) -> (model_fn,
    loss_fn, curvature_model_fn, curvature_loss_fn)``; ``excess(params, data)``: the loss
    above the optimum (unnormalised); ``basis``: the basis its arms run in."""

    name: str
    title: str
    basis: str
    full_batch: bool
    setup: Callable
    batches: Callable
    excess: Callable
    target: float  # relative excess counted as "reached"
    steps: int
    quick_steps: int
    floor: float = 1e-30  # relative excesses below it are at round-off (logged at the floor)
    eval_every: int = 1  # the excess is recorded every this many steps
    refresh_every: int = 1  # how often the arms recompute the basis (a huge value: fixed)


def _half_mse(out, y):
    return 0.5 * jnp.mean((out - y) ** 2)


def _linear_fns(x, y) -> Fns:
    model_fn = lambda p: x @ p["w"]
    loss_fn = lambda out: _half_mse(out, y)
    return model_fn, loss_fn, model_fn, loss_fn


# ---------------------------------------------------------------- full-batch regression
def block_covariance(block: int = 4, rhos=(0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999)):
    """Block-diagonal ``Sigma``: unit diagonal, within-block correlation ``rho_k``."""
    blocks = [(1 - r) * np.eye(block) + r * np.ones((block, block)) for r in rhos]
    d = block * len(rhos)
    sigma = np.zeros((d, d))
    for k, b in enumerate(blocks):
        sigma[k * block:(k + 1) * block, k * block:(k + 1) * block] = b
    return sigma


def _regression(name, title, basis, sigma_of, n: int, d: int, steps, quick_steps) -> Quadrant:
    """Noiseless full-batch linear regression (optimum 0) on ``x ~ N(0, sigma_of(key))``."""

    def setup(key):
        k1, k2, k3 = jax.random.split(key, 3)
        root = sigma_of(k3)
        x = jax.random.normal(k1, (n, d)) @ root.T
        w_star = jax.random.normal(k2, (d,))
        return {"w": jnp.zeros(d)}, {"x": x, "y": x @ w_star}

    def excess(params, data):
        return _half_mse(data["x"] @ params["w"], data["y"])

    return Quadrant(name, title, basis, True, setup,
                    lambda data, key: _linear_fns(data["x"], data["y"]), excess, 1e-4,
                    steps, quick_steps)


def blockcov() -> Quadrant:
    root = jnp.asarray(np.linalg.cholesky(block_covariance() + 1e-12 * np.eye(32)))
    return _regression("blockcov", "full batch, identity basis: linear regression, block-wise "
                       "covariance", "identity", lambda key: root, 256, 32, 600, 200)


def _rotated_root(key, d, evals):
    q, _ = jnp.linalg.qr(jax.random.normal(key, (d, d)))
    return q * jnp.sqrt(evals)


def quadratic() -> Quadrant:
    d = 32
    evals = jnp.geomspace(1e-3, 1.0, d)
    return _regression("quadratic", "full batch, eigenbasis: quadratic (rotated covariance)",
                       "eigen", lambda key: _rotated_root(key, d, evals), 256, d, 300, 100)


# ---------------------------------------------------------------- logistic regression
def logistic(n: int = 256, d: int = 16, fixed_basis: bool = False) -> Quadrant:
    scales = jnp.geomspace(1.0, 1e-2, d)

    def nll(w, x, y):
        z = x @ w
        return jnp.mean(jnp.logaddexp(0.0, z) - y * z)

    def setup(key):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        x = jax.random.normal(k1, (n, d))
        w_star = 2.0 * jax.random.normal(k2, (d,)) / math.sqrt(d) * 2
        y = jax.random.bernoulli(k3, jax.nn.sigmoid(x @ w_star)).astype(x.dtype)
        q, _ = jnp.linalg.qr(jax.random.normal(k4, (d, d)))
        m = (q * scales) @ q.T

        def newton(_, w):  # the optimum in w-space (well conditioned), for the excess
            g, h = jax.grad(nll)(w, x, y), jax.hessian(nll)(w, x, y)
            return w - jnp.linalg.solve(h + 1e-12 * jnp.eye(d), g)

        w_opt = jax.lax.fori_loop(0, 40, newton, jnp.zeros(d))
        return {"w": jnp.zeros(d)}, {"x": x, "y": y, "m": m, "best": nll(w_opt, x, y)}

    def batches(data, key):
        model_fn = lambda p: data["x"] @ (data["m"] @ p["w"])
        loss_fn = lambda z: jnp.mean(jnp.logaddexp(0.0, z) - data["y"] * z)
        return model_fn, loss_fn, model_fn, loss_fn

    def excess(params, data):
        return nll(data["m"] @ params["w"], data["x"], data["y"]) - data["best"]

    name, when = ("logistic-fixed", "fixed at the start") if fixed_basis else ("logistic",
                                                                               "every step")
    return Quadrant(name, f"full batch, eigenbasis ({when}): reparameterised logistic "
                    "regression", "eigen", True, setup, batches, excess, 1e-4, 600, 200,
                    floor=1e-13, refresh_every=10**9 if fixed_basis else 1)


# ---------------------------------------------------------------- stochastic regression
def stochastic(d: int = 20, batch: int = 4, noise: float = 0.5) -> Quadrant:
    lam = 1.0 / jnp.arange(1, d + 1)

    def setup(key):
        return {"w": jnp.zeros(d)}, {"w_star": jax.random.normal(key, (d,)), "lam": lam}

    def draw(data, key):
        k1, k2 = jax.random.split(key)
        x = jax.random.normal(k1, (batch, d)) * jnp.sqrt(data["lam"])
        return x, x @ data["w_star"] + noise * jax.random.normal(k2, (batch,))

    def batches(data, key):
        k1, k2 = jax.random.split(key)
        return (*_linear_fns(*draw(data, k1))[:2], *_linear_fns(*draw(data, k2))[:2])

    def excess(params, data):  # population excess risk
        return 0.5 * jnp.sum(data["lam"] * (params["w"] - data["w_star"]) ** 2)

    return Quadrant("stochastic", "mini-batch, identity basis: Gaussian linear regression",
                    "identity", False, setup, batches, excess, 1e-2, 3000, 600)


def adam_slope(state, data) -> jax.Array:
    """The slope of ``log P_adam`` against ``log lambda`` (``P_adam = 1/sqrt(nu_hat)``, Adam's
    diagonal at the end): GN^-1/2 has slope -1/2, GN^-1 -1, gradient descent 0. NaN for
    non-Adam arms."""
    inner = state[0].inner
    if not isinstance(inner, optax.ScaleByAdamState):
        return jnp.full((), jnp.nan)
    nu = inner.nu["w"] / (1 - 0.999 ** inner.count)
    lx, ly = jnp.log(data["lam"]), -0.5 * jnp.log(nu)
    lx = lx - lx.mean()
    return jnp.sum(lx * (ly - ly.mean())) / jnp.sum(lx * lx)


# ---------------------------------------------------------------- MLP, Kronecker basis
def digits() -> tuple[np.ndarray, np.ndarray, str]:
    """scikit-learn's digits (1797 x 64, scaled to [0, 1]), or a synthetic stand-in."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(1797, 64))
        w1, w2 = rng.normal(size=(64, 32)) / 8, rng.normal(size=(32, 10))
        return x, np.argmax(np.tanh(x @ w1) @ w2, axis=1), "synthetic teacher MLP"
    data = load_digits()
    return data.data / 16.0, data.target, "scikit-learn digits"


def mlp(batch: int = 128, sizes=(64, 32, 10)) -> tuple[Quadrant, str]:
    x_np, y_np, source = digits()
    x_all, y_all = jnp.asarray(x_np), jnp.asarray(y_np)
    n = x_all.shape[0]

    def apply(p, x):
        return jnp.tanh(x @ p[0]["w"] + p[0]["b"]) @ p[1]["w"] + p[1]["b"]

    def ce(logits, labels):
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

    def setup(key):
        keys = jax.random.split(key, len(sizes) - 1)
        params = [{"w": jax.random.normal(k, (a, b)) / math.sqrt(a), "b": jnp.zeros(b)}
                  for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)]
        return params, {"x": x_all, "y": y_all}

    def batches(data, key):
        idx = jax.random.permutation(key, n)[: 2 * batch]
        fns = []
        for part in (idx[:batch], idx[batch:]):
            xb, yb = data["x"][part], data["y"][part]
            fns += [lambda p, xb=xb: apply(p, xb), lambda out, yb=yb: ce(out, yb)]
        return tuple(fns)

    def excess(params, data):
        return ce(apply(params, data["x"]), data["y"])

    q = Quadrant("mlp", f"mini-batch, Kronecker basis: MLP {'-'.join(map(str, sizes))} on "
                 f"{source}", "kronecker", False, setup, batches, excess, 0.05, 1000, 200,
                 eval_every=10)
    return q, source
