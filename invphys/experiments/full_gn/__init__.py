"""``invphys reproduce --paper full-gn``: full and layer-wise Gauss-Newton (Abreu, Vyas,
Kakade, Morwani, arXiv 2510.09378) against tuned first-order optimizers, on small
MLPs and a small transformer (:mod:`.mlp`, :mod:`.transformer`) and on our own
surrogate inverses (:mod:`.surrogate`).

Parts (``--problems``): ``digits``, ``regression``, ``transformer`` (the main comparison
per problem; ``transformer`` runs in the full run or when asked for, not in ``--quick``),
``batch`` (the critical-batch-size curve on digits), ``memory`` (one step at ~1e5
parameters), ``oscillator`` and ``heat1d`` (Deceptron training).
"""

from __future__ import annotations

import time
from typing import Any

import jax

from .. import _gn_bench as gb
from ..papers import Context, Paper
from ..report import Report
from . import mlp, surrogate
from .figures import draw

PARTS = ("digits", "regression", "transformer", "batch", "memory", "oscillator", "heat1d")
QUICK_PARTS = tuple(p for p in PARTS if p != "transformer")  # quick stays short


def _readme(res: dict[str, Any], tables: dict[str, list[list[str]]], quick: bool) -> str:
    from ..report import markdown

    lines = ["Full vs layer-wise Gauss-Newton (GN) against AdamW, Muon and Sophia tuned over "
             "one learning-rate grid (best rate per target; every rate in the sweep tables). "
             "Muon twice: `muon` on the hidden layers' weights as its authors document it "
             "(AdamW on the input and output layers, biases and gains), `muon-all-2d` on "
             "every 2-D weight (optax's default); the best first-order method is the best "
             "of all. "
             "Iterations are outer iterations; wall-clock is a rerun of exactly those "
             "iterations, compilation apart. kfac-jax is left out: 0.0.8 fails inside its "
             "graph tracer on jax 0.10 (`get_bind_params`)."
             + (" Quick mode: a 3-point grid, short budgets." if quick else ""), ""]
    for name, r in res.get("mlp", {}).get("problems", {}).items():
        v = r["verdict"]
        steps = r.get("steps", {})
        lines.append(f"**{name}** (batch {r['batch']}, {r['params']} parameters, "
                     f"budgets {steps.get('first_order')} first-order / {steps.get('gn')} "
                     f"GN iterations, primary target {r['primary']:g}): best first-order "
                     f"{v.get('best_first_order')}; iterations first-order / full GN = "
                     f"{_f(v.get('iter_ratio_fo_over_gn'))} (target >= 3: "
                     f"{_yes(v.get('gn_3x_fewer_iterations'))}); layer-wise / full = "
                     f"{_f(v.get('layerwise_over_full_iters'))} (target <= 1.3: "
                     f"{_yes(v.get('layerwise_within_1p3x'))}); wall-clock full GN / "
                     f"first-order = {_f(v.get('wall_ratio_gn_over_fo'))}.")
        lines += ["", markdown(tables[f"{name}_to_target"])]
    notes = {"memory_1e5_params": " (XLA's accounting of one compiled step: arguments, "
             "outputs and temporaries; gn-full and gn-layerwise are matrix-free; the "
             "gn-dense rows, a GN step with the Jacobian materialised or the GN matrix "
             "formed, are compiled only, never allocated)"}
    for key in ("batch_curve_iters", "memory_1e5_params"):
        if key in tables:
            lines += [f"{key.replace('_', ' ')}{notes.get(key, '')}:", "",
                      markdown(tables[key])]
    for key in (k for k in tables if k.startswith("surrogate_")):
        lines += [f"{key.replace('_', ' ')} (epochs and training wall-clock to the val-MSE "
                  "targets; GN optimizers at a larger batch, float64):", "",
                  markdown(tables[key])]
    return "\n".join(lines)


def _f(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _yes(v) -> str:
    return {True: "met", False: "missed", None: "n/a"}[v]


def run(ctx: Context) -> Report:
    t0 = time.perf_counter()
    parts = ctx.parts or PAPER.default_parts(ctx.quick)
    log = print if ctx.progress else (lambda _: None)
    s = mlp.Settings.make(ctx.quick)
    res: dict[str, Any] = {"quick": ctx.quick, "settings": {
        "grid": list(s.grid), "fo_steps": s.fo_steps, "gn_steps": s.gn_steps,
        "cg_steps": s.cg_steps, "batches": list(s.batches)}}
    with gb.single_threaded_blas():
        res["mlp"] = mlp.run_mlp(s, parts, log)
        res["surrogate"] = surrogate.run_surrogates(ctx.quick, parts, log)
    tables = {**mlp.tables(res["mlp"]), **surrogate.tables(res["surrogate"])}
    public = _strip_curves(res)
    return Report(tables=tables, public=public, figures=res, readme=_readme(res, tables,
                  ctx.quick), draw=lambda folder: draw(res, folder),
                  images=("digits-mlp_loss.png", "teacher-regression_loss.png",
                          "reversal-transformer_loss.png", "batch_curve.png",
                          "surrogate_val_mse.png"),
                  device=jax.devices()[0].device_kind, wall_s=time.perf_counter() - t0,
                  quick=ctx.quick)


def _strip_curves(res: dict[str, Any]) -> dict[str, Any]:
    """results.json without the per-iteration curves (those go to figures.json)."""
    import copy

    out = copy.deepcopy(res)
    for r in out.get("mlp", {}).get("problems", {}).values():
        for m in r["methods"].values():
            m.pop("curve", None)
    return out


PAPER = Paper("full-gn", "full vs layer-wise Gauss-Newton against tuned first-order "
              "optimizers (MLPs, a transformer, Deceptron training)", run, parts=PARTS,
              needs_models=False, quick_parts=QUICK_PARTS)
