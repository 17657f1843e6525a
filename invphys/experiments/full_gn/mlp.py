"""Full vs layer-wise Gauss-Newton against tuned first-order optimizers on small MLPs.

Problems: a tanh MLP (64-64-64-10, cross-entropy) on scikit-learn's bundled digits
(1437 training images, features standardised), a teacher-student regression (a
random tanh 8-32-1 teacher, a 8-64-64-1 student, 1024 noise-free samples, half MSE),
and a small decoder-only transformer on sequence reversal (:func:`reversal`, only in
the full run or when asked for: part ``transformer``).
Each optimizer runs from the same initial weights on the same mini-batch sequence;
AdamW, Muon (two scopes) and Sophia (optax, documented defaults) are swept over one shared
learning-rate grid, full and layer-wise GN (:mod:`invphys.optim`, LM damping, 50 CG
steps, line search) have no learning rate. Reported per target of a fixed ladder:
outer iterations to the training loss target and the wall-clock of exactly those
iterations (compiled apart, rerun without recording), plus the critical-batch-size
curve (iterations to the primary target against the batch size) and XLA's memory
accounting of one step at about 1e5 parameters.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray, PyTree

from ... import optim
from .. import _gn_bench as gb
from . import transformer as tr


@dataclasses.dataclass(frozen=True)
class Settings:
    """The run's size (``quick`` shrinks grids and budgets, never the problems)."""

    quick: bool = False
    grid: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
    fo_steps: int = 3000
    gn_steps: int = 200
    batches: tuple[int, ...] = (32, 128, 512, 0)  # 0: the full batch
    main_batch: int = 0
    cg_steps: int = 50
    memory_sizes: tuple[int, ...] = (64, 300, 256, 10)

    @classmethod
    def make(cls, quick: bool) -> Settings:
        if not quick:
            return cls()
        return cls(quick=True, grid=(3e-3, 3e-2, 3e-1), fo_steps=400, gn_steps=60,
                   batches=(128, 0))


@dataclasses.dataclass(frozen=True)
class Problem:
    name: str
    x: Any
    y: Any
    sizes: tuple[int, ...]
    loss: Callable
    targets: tuple[float, ...]  # a ladder; the middle one is the primary target
    loss_name: str
    # the model: ``apply(params, x)`` and ``init(key)`` (None: the MLP of ``sizes``)
    apply: Callable = gb.mlp_apply
    init: Callable | None = None
    # caps on the (first-order, GN) outer-iteration budgets, for a problem whose steps
    # cost too much for the Settings' budgets (None: the Settings' own)
    max_steps: tuple[int, int] | None = None

    def params0(self, key: PRNGKeyArray) -> PyTree[Array]:
        return gb.init_mlp(key, self.sizes) if self.init is None else self.init(key)

    def steps(self, s: Settings) -> tuple[int, int]:
        fo, gn = s.fo_steps, s.gn_steps
        if self.max_steps is not None:
            fo, gn = min(fo, self.max_steps[0]), min(gn, self.max_steps[1])
        return fo, gn

    @property
    def primary(self) -> float:
        return self.targets[len(self.targets) // 2]


def digits() -> Problem:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data - d.data.mean(0)) / (d.data.std(0) + 1e-8)
    idx = np.random.default_rng(0).permutation(len(x))[:1437]
    return Problem("digits-mlp", jnp.asarray(x[idx]), jnp.asarray(d.target[idx]),
                   (64, 64, 64, 10), gb.cross_entropy, (0.1, 0.01, 0.001), "cross-entropy")


def regression() -> Problem:
    kx, kt = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (1024, 8))
    y = gb.mlp_apply(gb.init_mlp(kt, (8, 32, 1)), x)
    y = (y - y.mean()) / y.std()
    return Problem("teacher-regression", x, y, (8, 64, 64, 1), gb.half_mse,
                   (1e-2, 1e-3, 1e-4), "half MSE")


def reversal() -> Problem:
    """A 2-layer pre-LN decoder (d_model 64, 4 heads, MLP width 128: 69k parameters) on
    sequence reversal of 64 fixed sequences of 6 tokens over 8 symbols (vocabulary 9:
    the symbols and a separator), next-token cross-entropy on the 6 determined positions
    (:mod:`.transformer`).

    The target ladder (1e-2, 1e-3, 1e-4) was set before the measured run from a pilot in
    which AdamW at lr 3e-3 (not tuned further) brought a 102k-parameter variant of this
    model on 128 sequences from 2.56 to 7e-4 in 100 iterations: the primary target 1e-3 is
    reached by AdamW well inside its budget, and the strictest asks for a memorised
    training set. The budgets are capped at 1500 first-order and 50 GN iterations: a
    layer-wise GN step runs one 50-step CG per block (20 blocks), each product a pass
    through the whole model, and the full run's 200 such steps do not fit a 2-core CPU.
    """
    d_model, heads, layers, length, symbols = 64, 4, 2, 6, 8
    x, y = tr.reversal_data(64, length, symbols, seed=0)
    init = lambda key: tr.init_transformer(key, symbols + 1, d_model, heads, layers,
                                           2 * length, mlp_ratio=2)
    return Problem("reversal-transformer", jnp.asarray(x), jnp.asarray(y), (),
                   tr.masked_cross_entropy, (1e-2, 1e-3, 1e-4), "cross-entropy",
                   apply=tr.apply_fn(heads), init=init, max_steps=(1500, 50))


def _methods(s: Settings) -> list[gb.Method]:
    return gb.first_order_methods() + gb.gn_methods(cg_max_steps=s.cg_steps)


def compare(problem: Problem, batch: int, s: Settings, log, *, timed: bool = True) -> dict:
    """Every method on ``problem`` at ``batch`` (0: full): the learning-rate sweeps, the
    best rate per target, iterations and wall-clock to each target."""
    n = problem.x.shape[0]
    bench = gb.Bench(problem.apply, problem.loss, problem.x, problem.y, batch or n)
    p0 = problem.params0(jax.random.key(0))
    strictest = min(problem.targets)
    fo_steps, gn_steps = problem.steps(s)
    out: dict[str, Any] = {"batch": batch or n, "params": gb.num_params(p0), "methods": {},
                           "steps": {"first_order": fo_steps, "gn": gn_steps}}
    log(f"[full-gn] {problem.name}, batch {batch or n}, {gb.num_params(p0)} parameters")
    for m in _methods(s):
        steps = fo_steps if m.tuned else gn_steps
        res = gb.sweep(bench, m, p0, s.grid, steps=steps, target=strictest, log=log)
        entry: dict[str, Any] = {"tuned": m.tuned, "sweep": [
            {"lr": r["lr"], "final": r["final"],
             **{f"iters@{t:g}": gb.iters_to_target(r["curve"], t) for t in problem.targets}}
            for r in res["runs"]], "targets": {}}
        for t in problem.targets:
            ranked = [(gb.iters_to_target(r["curve"], t), r) for r in res["runs"]]
            hit = [(i, r) for i, r in ranked if i is not None]
            best_it, best = min(hit, key=lambda z: z[0]) if hit else (None, res["best"])
            entry["targets"][f"{t:g}"] = {"iters": best_it, "lr": best["lr"]}
            if t == problem.primary:
                entry["curve"] = best["curve"]
                entry["lr"] = best["lr"]
                if timed and best_it:
                    tm = bench.timed(m, p0, best["lr"] or 0.0, best_it)
                    entry["targets"][f"{t:g}"].update(wall_s=tm["run_s"],
                                                      compile_s=tm["compile_s"],
                                                      per_iter_ms=tm["per_iter_ms"])
                    log(f"  {m.name:<13} to {t:g}: {best_it} iterations, "
                        f"{tm['run_s']:.3g} s (+{tm['compile_s']:.2g} s compile)")
        out["methods"][m.name] = entry
    return out


def verdict(res: dict, target: float) -> dict[str, Any]:
    """The issue's measured targets at ``target``: full GN >= 3x fewer iterations than the
    best first-order method, layer-wise within 1.3x of full GN; wall-clock ratios."""
    key = f"{target:g}"
    tg = {name: m["targets"][key] for name, m in res["methods"].items()}
    fo = {n: t for n, t in tg.items() if res["methods"][n]["tuned"] and t["iters"]}
    best_fo = min(fo, key=lambda n: fo[n]["iters"]) if fo else None
    full, lw = tg.get("gn-full", {}), tg.get("gn-layerwise", {})
    v: dict[str, Any] = {"target": target, "best_first_order": best_fo}
    if best_fo and full.get("iters"):
        v["iter_ratio_fo_over_gn"] = fo[best_fo]["iters"] / full["iters"]
        v["gn_3x_fewer_iterations"] = v["iter_ratio_fo_over_gn"] >= 3.0
        if fo[best_fo].get("wall_s") and full.get("wall_s"):
            v["wall_ratio_gn_over_fo"] = full["wall_s"] / fo[best_fo]["wall_s"]
    if full.get("iters") and lw.get("iters"):
        v["layerwise_over_full_iters"] = lw["iters"] / full["iters"]
        v["layerwise_within_1p3x"] = v["layerwise_over_full_iters"] <= 1.3
    return v


def memory(s: Settings, log) -> list[dict[str, Any]]:
    """XLA's accounting of one compiled step at ~1e5 parameters (digits, batch 256): the
    optimizers (matrix-free GN among them), then a GN step with the Jacobian materialised
    and one with the GN matrix formed (:func:`._gn_bench.dense_gn_step`), for reference."""
    pr = digits()
    bench = gb.Bench(gb.mlp_apply, pr.loss, pr.x, pr.y, 256)
    p0 = gb.init_mlp(jax.random.key(0), s.memory_sizes)
    methods = [m for m in _methods(s) if m.name != "sophia"] + [
        gb.Method("sgn-diagonal", lambda lr: optim.sgn_lm(1.0, metric="diagonal"), False)]
    rows = []
    for m in methods:
        b = bench.step_memory(m, p0)
        rows.append({"method": m.name, "params": gb.num_params(p0), **b})
        log(f"[full-gn] memory {m.name}: {b.get('peak', 0) / 2**20:.1f} MiB")
    # the references the matrix-free modes avoid: the Jacobian (outputs x P) materialised,
    # and the GN matrix (P x P) formed; compiled only (accounted, never allocated)
    x, y = pr.x[:256], pr.y[:256]
    for name, form_g in (("gn-dense-jacobian", False), ("gn-dense-matrix", True)):
        b = gb.peak_bytes(gb.dense_gn_step(gb.mlp_apply, pr.loss, form_g=form_g), p0, x, y)
        rows.append({"method": name, "params": gb.num_params(p0), **b})
        log(f"[full-gn] memory {name}: {b.get('peak', 0) / 2**20:.1f} MiB (compiled only)")
    return rows


def run_mlp(s: Settings, parts, log) -> dict[str, Any]:
    """The MLP study: main comparison per problem, the batch curve (digits), memory."""
    out: dict[str, Any] = {"problems": {}, "batch_curve": {}, "memory": []}
    problems = {"digits": digits, "regression": regression, "transformer": reversal}
    for key, make in problems.items():
        if key not in parts:
            continue
        pr = make()
        res = compare(pr, s.main_batch, s, log)
        res.update(targets=list(pr.targets), primary=pr.primary, loss=pr.loss_name,
                   verdict=verdict(res, pr.primary))
        out["problems"][pr.name] = res
    if "batch" in parts:
        pr = digits()
        for b in s.batches:
            if b == s.main_batch and pr.name in out["problems"]:
                res = out["problems"][pr.name]
            else:
                res = compare(pr, b, s, log, timed=False)
            out["batch_curve"][str(res["batch"])] = {
                n: m["targets"][f"{pr.primary:g}"]["iters"] for n, m in res["methods"].items()}
        out["batch_curve_target"] = pr.primary
    if "memory" in parts:
        out["memory"] = memory(s, log)
    return out


def tables(res: dict[str, Any]) -> dict[str, list[list[str]]]:
    t: dict[str, list[list[str]]] = {}
    for name, r in res["problems"].items():
        rows = [["method", "lr (best)"] + [f"iters to {x:g}" for x in r["targets"]]
                + [f"wall s to {r['primary']:g}", "ms / iter", "compile s"]]
        for m, e in r["methods"].items():
            p = e["targets"][f"{r['primary']:g}"]
            rows.append([m, gb.fmt(e.get("lr"))]
                        + [gb.fmt(e["targets"][f"{x:g}"]["iters"]) for x in r["targets"]]
                        + [gb.fmt(p.get("wall_s")), gb.fmt(p.get("per_iter_ms")),
                           gb.fmt(p.get("compile_s"), 2)])
        t[f"{name}_to_target"] = rows
        sweep = [["method", "lr"] + [f"iters to {x:g}" for x in r["targets"]] + ["last loss"]]
        for m, e in r["methods"].items():
            for row in e["sweep"]:
                sweep.append([m, gb.fmt(row["lr"])]
                             + [gb.fmt(row[f"iters@{x:g}"]) for x in r["targets"]]
                             + [gb.fmt(row["final"])])
        t[f"{name}_lr_sweep"] = sweep
    if res["batch_curve"]:
        batches = list(res["batch_curve"])
        methods = list(next(iter(res["batch_curve"].values())))
        rows = [["method"] + [f"batch {b}" for b in batches]]
        rows += [[m] + [gb.fmt(res["batch_curve"][b][m]) for b in batches] for m in methods]
        t["batch_curve_iters"] = rows
    if res["memory"]:
        rows = [["method", "parameters", "peak MiB", "temp MiB"]]
        rows += [[r["method"], str(r["params"]), gb.fmt(r.get("peak", math.nan) / 2**20),
                  gb.fmt(r.get("temp", math.nan) / 2**20)] for r in res["memory"]]
        t["memory_1e5_params"] = rows
    return t
