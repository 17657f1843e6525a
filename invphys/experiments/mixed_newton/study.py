"""The runs of the mixed-precision Newton paper: problems, precision combinations, Adam.

A run is one compiled ``lax.scan`` of ``iters`` full-batch steps of an optimizer of the
extra-args contract, recording the float64 loss and gradient norm after each step (the
curves). Its wall-clock is measured with :func:`invphys.experiments.timing.time_call`,
compilation apart; it includes that float64 monitoring evaluation (the same for every
method). float16/bfloat16 arithmetic on CPU is emulated by XLA (float32 with rounding):
their wall-clock is measured as is and says nothing about half-precision hardware.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from ...optim import curvature_matrix, extra_args, gradient_error_bound, newton
from .._gn_bench import init_mlp, mlp_apply
from ..timing import time_call
from .data import Dataset

F64, F32, F16, BF16 = jnp.float64, jnp.float32, jnp.float16, jnp.bfloat16
SHORT = {F64: "f64", F32: "f32", F16: "f16", BF16: "bf16"}


@dataclasses.dataclass(frozen=True)
class Problem:
    """A full-batch objective ``loss_fn(model_fn(params))``; both compute in the dtype
    of their inputs (the data are cast to it), as :func:`invphys.optim.newton` asks."""

    name: str
    model_fn: Callable
    loss_fn: Callable
    params0: Any
    outputs: int
    note: str

    def value(self, params):
        return self.loss_fn(self.model_fn(params))

    @property
    def num_params(self) -> int:
        return int(jax.flatten_util.ravel_pytree(self.params0)[0].shape[0])


def logistic(ds: Dataset, lam: float = 1e-3) -> Problem:
    """L2-regularised logistic regression: mean log-loss + lam/2 |w|^2 (the penalty as a
    second output, so that the GN matrix holds it exactly)."""
    x, y = jnp.asarray(ds.x), jnp.asarray(ds.y)

    def model_fn(p):
        dt = p["w"].dtype
        return {"logit": x.astype(dt) @ p["w"] + p["b"],
                "reg": jnp.asarray(math.sqrt(lam), dt) * p["w"]}

    def loss_fn(o):
        z = o["logit"]
        data = jnp.mean(jax.nn.softplus(z) - y.astype(z.dtype) * z)
        return data + 0.5 * jnp.sum(o["reg"] ** 2)

    p0 = {"w": jnp.zeros(x.shape[1], F64), "b": jnp.zeros((), F64)}
    return Problem(f"{ds.name}-logreg", model_fn, loss_fn, p0, x.shape[0] + x.shape[1],
                   f"{ds.source}; {x.shape[0]} x {x.shape[1]}, lambda = {lam:g}")


def mlp_least_squares(ds: Dataset, width: int = 16, seed: int = 0) -> Problem:
    """A tanh MLP ``d-width-1`` fitted to the 0/1 labels by least squares (no penalty):
    nonconvex, with the second-order term that GN drops."""
    x, y = jnp.asarray(ds.x), jnp.asarray(ds.y)
    p0 = init_mlp(jax.random.key(seed), [x.shape[1], width, 1], F64)

    def model_fn(p):
        return mlp_apply(p, x.astype(p[0]["w"].dtype))[:, 0]

    def loss_fn(out):
        return 0.5 * jnp.mean((out - y.astype(out.dtype)) ** 2)

    return Problem(f"{ds.name}-mlp", model_fn, loss_fn, p0, x.shape[0],
                   f"{ds.source}; tanh MLP {x.shape[1]}-{width}-1, least squares")


# --------------------------------------------------------------------- configurations
@dataclasses.dataclass(frozen=True)
class Config:
    """A Newton configuration: precisions of gradient, curvature and solve, the variant."""

    grad: Any = F64
    hess: Any = F64
    solve: Any = F64
    variant: str = "exact"
    refine: int = 0
    extra: tuple = ()

    @property
    def label(self) -> str:
        s = f"{SHORT[self.grad]}/{SHORT[self.hess]}/{SHORT[self.solve]}"
        s += f"+IR{self.refine}" if self.refine else ""
        return s if self.variant == "exact" else f"{self.variant} {s}"

    def make(self) -> optax.GradientTransformationExtraArgs:
        return newton(variant=self.variant, grad_dtype=None if self.grad == F64 else
                      self.grad, hess_dtype=self.hess, solve_dtype=self.solve,
                      refine_steps=self.refine, **dict(self.extra))


def precision_configs(quick: bool) -> list[Config]:
    """The precision combinations (gradient / curvature / solve) of the study."""
    cfgs = [Config(), Config(hess=F32, solve=F32), Config(solve=F16),
            Config(hess=F16, solve=F16), Config(solve=F16, refine=2),
            Config(hess=BF16, solve=BF16), Config(F32, F32, F32), Config(F16, F16, F16),
            Config(BF16, BF16, BF16),
            Config(hess=F32, solve=F32, variant="quasi", extra=(("reuse", 5),)),
            Config(solve=F32, variant="inexact", extra=(("forcing", 0.1),))]
    if not quick:
        cfgs += [Config(hess=F16, solve=F16, refine=2), Config(hess=BF16, solve=BF16, refine=2),
                 Config(variant="inexact", extra=(("forcing", 0.01),))]
    return cfgs


# ------------------------------------------------------------------------------ runs
def _norm(tree) -> jax.Array:
    return jnp.linalg.norm(jax.flatten_util.ravel_pytree(tree)[0])


def run(problem: Problem, opt_of: Callable, iters: int, *, lr: float = 0.0,
        repeats: int = 1) -> dict[str, Any]:
    """``iters`` steps of ``opt_of(lr)``: the loss and float64 gradient-norm curves
    (length ``iters + 1``), the final parameters and state, and the wall-clock."""
    value_fn = problem.value

    def go(p0, lr):
        opt = opt_of(lr)
        s0 = opt.init(p0)

        def body(c, _):
            p, s = c
            _, g, kw = extra_args(problem.model_fn, problem.loss_fn, p)
            u, s = opt.update(g, s, p, **kw)
            p = optax.apply_updates(p, u)
            v2, g2 = jax.value_and_grad(value_fn)(p)
            return (p, s), (v2, _norm(g2))

        (p, s), (ls, gs) = jax.lax.scan(body, (p0, s0), None, length=iters)
        v0, g0 = jax.value_and_grad(value_fn)(p0)
        return p, s, jnp.concatenate([v0[None], ls]), jnp.concatenate([_norm(g0)[None], gs])

    t = time_call(go, problem.params0, jnp.asarray(lr, F64), repeats=repeats, aot=True)
    p, s, ls, gs = t.output
    return {"params": p, "state": s, "loss": np.asarray(ls, float),
            "grad": np.asarray(gs, float), "compile_s": t.compile_s, "run_s": t.run_s}


def first_below(curve, level: float) -> int | None:
    hits = np.flatnonzero(np.asarray(curve) <= level)
    return int(hits[0]) if hits.size else None


def floor_of(curve, tail: int = 5) -> float:
    """The accuracy reached: the median of the last ``tail`` values (robust to the
    jitter of a curve that sits at its floor)."""
    return float(np.median(np.asarray(curve)[-tail:]))


def estimates(problem: Problem, x_star, dtypes) -> dict[str, Any]:
    """A priori quantities at the float64 solution: the gradient-error bound of each
    precision (:func:`invphys.optim.gradient_error_bound`) and the Hessian's condition
    number (the solve's contraction factor is about ``kappa * u_solve``)."""
    h = np.asarray(curvature_matrix(problem.model_fn, problem.loss_fn, x_star).matrix)
    ev = np.linalg.eigvalsh(h)
    bounds = {SHORT[d]: float(gradient_error_bound(problem.model_fn, problem.loss_fn,
                                                         x_star, d)) for d in dtypes}
    return {"bounds": bounds, "kappa": float(abs(ev).max() / abs(ev).min()),
            "lambda_min": float(ev.min())}


def adam_sweep(problem: Problem, grid, iters: int, log) -> dict[str, Any]:
    """optax Adam over the learning-rate ``grid`` (one compiled loop, the rate traced);
    the best rate is the one with the lowest final loss."""
    opt_of = lambda lr: optax.with_extra_args_support(optax.adam(lr))
    runs = []
    for lr in grid:
        r = run(problem, opt_of, iters, lr=lr)
        log(f"    adam lr {lr:g}: loss {r['loss'][-1]:.6g} |g| {r['grad'][-1]:.3g}")
        runs.append({"lr": lr, **r})
    best = min(runs, key=lambda r: r["loss"][-1] if np.isfinite(r["loss"][-1]) else math.inf)
    return {"runs": runs, "best": best}
