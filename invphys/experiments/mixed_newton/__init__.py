"""Paper ``mixed-newton``: Newton in mixed precision and GN_k (Carrino, Piccolomini,
Riccietti, Mary, arXiv 2511.17660), with Kelley's mixed-precision Newton as reference.

Three parts:

* ``precision``: L2-regularised logistic regression on Australian and Mushroom (KEEL,
  :mod:`.data`), :func:`invphys.optim.newton` for each combination of gradient /
  curvature / solve precision (float64, float32, float16, bfloat16; iterative
  refinement; quasi and inexact variants): loss and gradient norm per iteration, the
  accuracy floor reached against the a priori estimate, iterations and wall-clock;
* ``adam``: optax Adam tuned on a learning-rate grid, on the same problems;
* ``gn-k``: a tanh MLP (least squares) on Australian: GN (k = 0), GN_k and Newton
  with the number of output Hessians ``Hess f_i`` each one evaluated.

The a priori estimate (full text of the paper not available: [reading]) is the
classical one (Kelley 2022; Tisseur 2001): the gradient's precision sets the floor,
``|grad f(x_inf)| <~ u_g |||J|^T (|l'| + |l''| |f|)||`` (see
:func:`invphys.optim.gradient_error_bound`), and the curvature's and solve's set the
rate: a solve with backward error ``u_s`` contracts the error by about
``kappa(H) u_s`` per step instead of quadratically.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from ...optim import gn_k, newton, unit_roundoff
from ..papers import Context, Paper
from ..report import Report, markdown
from .data import LOADERS
from .study import (
    BF16,
    F16,
    F32,
    F64,
    SHORT,
    adam_sweep,
    estimates,
    first_below,
    floor_of,
    logistic,
    mlp_least_squares,
    precision_configs,
    run,
)

PARTS = ("precision", "adam", "gn-k")
TARGET_G = 1e-6  # the fixed gradient-norm target of the tables


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _precision(problem, quick, log):
    iters = 15 if quick else 30
    cfgs = precision_configs(quick)
    out = []
    for cfg in cfgs:
        r = run(problem, lambda _lr, c=cfg: c.make(), iters)
        log(f"    {cfg.label:<26} |g| {r['grad'][-1]:.3g}  ({r['run_s']:.2f} s)")
        out.append((cfg, r))
    ref = out[0][1]
    est = estimates(problem, ref["params"], (F64, F32, F16, BF16))
    f_star = min(float(np.min(r["loss"])) for c, r in out if c.grad == F64)
    rows = [["config (grad/curv/solve)", f"iters to |g|<={TARGET_G:g}", "iters to floor",
             "final f - f*", "floor |g| measured", "a priori bound", "measured/bound",
             "kappa u_solve", "matrices", "HVPs", "compile s", "run s"]]
    public = []
    for cfg, r in out:
        bound = max(est["bounds"][SHORT[cfg.grad]], est["bounds"]["f64"])
        floor = floor_of(r["grad"])
        st = r["state"]
        rec = {"config": cfg.label, "grad": SHORT[cfg.grad], "hess": SHORT[cfg.hess],
               "solve": SHORT[cfg.solve], "variant": cfg.variant, "refine": cfg.refine,
               "iters_to_target": first_below(r["grad"], TARGET_G),
               "iters_to_floor": first_below(r["grad"], 10 * bound),
               "final_gap": float(r["loss"][-1] - f_star), "floor": floor, "bound": bound,
               "ratio": floor / bound, "kappa_u_solve": est["kappa"] * unit_roundoff(cfg.solve),
               "matrices": int(st.matrix_evals), "hvps": int(st.hvps),
               "compile_s": r["compile_s"], "run_s": r["run_s"],
               "loss": r["loss"].tolist(), "grad_norm": r["grad"].tolist()}
        public.append(rec)
        rows.append([cfg.label, _fmt(rec["iters_to_target"]), _fmt(rec["iters_to_floor"]),
                     _fmt(rec["final_gap"], 2), _fmt(floor, 2), _fmt(bound, 2),
                     _fmt(rec["ratio"], 2), _fmt(rec["kappa_u_solve"], 2),
                     str(rec["matrices"]), str(rec["hvps"]), _fmt(r["compile_s"], 2),
                     _fmt(r["run_s"], 2)])
    return rows, {"runs": public, "f_star": f_star, **est}


def _adam(problem, newton_rec, f_star, quick, log):
    grid = [1e-2, 1e-1, 1.0] if quick else [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0]
    iters = 300 if quick else 3000
    sw = adam_sweep(problem, grid, iters, log)
    b = sw["best"]
    rec = {"grid": grid, "iters": iters, "best_lr": b["lr"],
           "final_gap": float(b["loss"][-1] - f_star), "final_grad": float(b["grad"][-1]),
           "iters_to_target": first_below(b["grad"], TARGET_G), "run_s": b["run_s"],
           "loss": b["loss"].tolist(), "grad_norm": b["grad"].tolist()}
    row = [problem.name, f"{b['lr']:g}", str(iters), _fmt(rec["final_gap"], 2),
           _fmt(rec["final_grad"], 2), _fmt(rec["iters_to_target"]), _fmt(b["run_s"], 2),
           _fmt(newton_rec["iters_to_target"]), _fmt(newton_rec["final_gap"], 2),
           _fmt(newton_rec["run_s"], 2)]
    return row, rec


def _gn_k(problem, quick, log):
    iters = 20 if quick else 100
    m = problem.outputs
    ks = [0, max(1, m // 100), m // 10] + ([] if quick else [m // 4, m // 2])
    kw = dict(damping=1e-3, adaptive_damping=True)
    methods = [(("GN" if k == 0 else "GN_k"), k, lambda _lr, k=k: gn_k(k, **kw)) for k in ks]
    methods.append(("Newton", m, lambda _lr: newton(**kw)))
    runs = []
    for name, k, make in methods:
        r = run(problem, make, iters)
        log(f"    {name:<7} k={k:<4} loss {r['loss'][-1]:.6g} |g| {r['grad'][-1]:.3g}")
        runs.append((name, k, r))
    target = 1.001 * min(float(r["loss"][-1]) for _, _, r in runs)
    rows = [["method", "k", "iters to loss <= target", "final loss", "final |g|",
             "Hess f_i evaluated", "per iteration", "matrices", "run s"]]
    public = {"target": target, "outputs": m, "iters": iters, "runs": []}
    for name, k, r in runs:
        st = r["state"]
        it = first_below(r["loss"], target)
        rec = {"method": name, "k": k, "iters_to_target": it, "final_loss": float(r["loss"][-1]),
               "final_grad": float(r["grad"][-1]), "second_order": int(st.second_order),
               "matrices": int(st.matrix_evals), "run_s": r["run_s"],
               "loss": r["loss"].tolist(), "grad_norm": r["grad"].tolist()}
        public["runs"].append(rec)
        rows.append([name, str(k), _fmt(it), _fmt(rec["final_loss"], 6),
                     _fmt(rec["final_grad"], 2), str(rec["second_order"]), str(k),
                     str(rec["matrices"]), _fmt(r["run_s"], 2)])
    return rows, public


def _draw(public):
    def draw(folder: Path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = []
        probs = public.get("precision", {})
        if probs:
            fig, axes = plt.subplots(len(probs), 2, figsize=(11, 3.8 * len(probs)),
                                     squeeze=False)
            for row, (pname, res) in zip(axes, probs.items(), strict=True):
                for i, rec in enumerate(res["runs"]):
                    gap = np.maximum(np.asarray(rec["loss"]) - res["f_star"], 1e-17)
                    style = dict(label=rec["config"], color=plt.cm.tab20(i % 20))
                    row[0].semilogy(gap, **style)
                    row[1].semilogy(rec["grad_norm"], **style)
                adam = public.get("adam", {}).get(pname)
                if adam:
                    n = len(res["runs"][0]["loss"])
                    lab = f"adam lr {adam['best_lr']:g}"
                    row[0].semilogy(np.maximum(np.asarray(adam["loss"][:n]) - res["f_star"],
                                               1e-17), "k--", label=lab)
                    row[1].semilogy(adam["grad_norm"][:n], "k--", label=lab)
                row[0].set_title(f"{pname}: f - f*")
                row[1].set_title(f"{pname}: |grad f| (float64)")
                for ax in row:
                    ax.set_xlabel("iteration")
            axes[0, 1].legend(fontsize=6, ncol=2)
            fig.tight_layout()
            fig.savefig(folder / "precision_curves.png", dpi=110)
            plt.close(fig)
            names.append("precision_curves.png")
        gk = public.get("gn_k")
        if gk:
            fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 3.8))
            for rec in gk["runs"]:
                lab = f"{rec['method']} k={rec['k']}"
                a0.semilogy(rec["loss"], label=lab)
                cum = rec["k"] * np.arange(len(rec["loss"]))
                a1.semilogy(np.maximum(cum, 1), rec["loss"], label=lab)
            a0.set_xlabel("iteration")
            a1.set_xlabel("output Hessians Hess f_i evaluated (cumulative)")
            a1.set_xscale("log")
            for ax in (a0, a1):
                ax.set_ylabel("loss")
            a0.legend(fontsize=7)
            fig.tight_layout()
            fig.savefig(folder / "gn_k.png", dpi=110)
            plt.close(fig)
            names.append("gn_k.png")
        return names

    return draw


def run_paper(ctx: Context) -> Report:
    """Run the chosen parts (see the module docstring) and assemble the report."""
    t0 = time.perf_counter()
    log = print if ctx.progress else (lambda _s: None)
    parts = ctx.parts or PARTS
    datasets = {n: f() for n, f in LOADERS.items()}
    tables, public, readme = {}, {"parts": list(parts)}, []
    tables["data"] = [["data set", "rows", "features", "source"]] + [
        [d.name, str(d.shape[0]), str(d.shape[1]), d.source] for d in datasets.values()]
    if "precision" in parts or "adam" in parts:
        public["precision"], adam_rows, public["adam"] = {}, [], {}
        for ds in datasets.values():
            problem = logistic(ds)
            log(f"  {problem.name} ({problem.num_params} parameters)")
            rows, res = _precision(problem, ctx.quick, log)
            public["precision"][problem.name] = res
            if "precision" in parts:
                tables[f"precision_{ds.name}"] = rows
            if "adam" in parts:
                row, rec = _adam(problem, res["runs"][0], res["f_star"], ctx.quick, log)
                adam_rows.append(row)
                public["adam"][problem.name] = rec
        if adam_rows:
            tables["adam_vs_newton"] = [[
                "problem", "Adam best lr", "Adam iters", "Adam f - f*", "Adam |g|",
                f"Adam iters to |g|<={TARGET_G:g}", "Adam run s",
                f"Newton f64 iters to |g|<={TARGET_G:g}", "Newton f - f*", "Newton run s"]
            ] + adam_rows
    if "gn-k" in parts:
        problem = mlp_least_squares(datasets["australian"], width=8 if ctx.quick else 16)
        log(f"  {problem.name} ({problem.num_params} parameters, {problem.outputs} outputs)")
        tables["gn_k"], public["gn_k"] = _gn_k(problem, ctx.quick, log)
    for name, rows in tables.items():
        readme.append(f"**{name.replace('_', ' ')}**\n\n{markdown(rows)}")
    readme.append(NOTES)
    return Report(tables=tables, public=public, figures={}, readme="\n".join(readme),
                  note="float16/bfloat16 on CPU are emulated by XLA: wall-clock as measured.",
                  images=("precision_curves.png", "gn_k.png"), draw=_draw(public),
                  device=jax.devices()[0].device_kind, wall_s=time.perf_counter() - t0,
                  quick=ctx.quick)


NOTES = """Config = precision of gradient / curvature (Hessian or GN_k matrix) / linear solve;
+IRn = n steps of iterative refinement with the residual in float64; quasi = Hessian and
factors reused for 5 steps; inexact = CG to the forcing tolerance 0.1. The a priori
bound is u_g * || |J|^T (|l'| + |l''| |f|) || at the float64 solution
(`invphys.optim.gradient_error_bound`, the classical estimate of Kelley 2022 / Tisseur
2001, not the paper's, whose full text was not available); "iters to floor" counts
steps to 10x that bound. float16/bfloat16 LU is emulated (float32 LU, factors rounded);
half-precision arithmetic on CPU is emulated by XLA, so its wall-clock is not that of
half-precision hardware. Run times include one float64 loss and gradient per step
(the curves). GN_k keeps the k largest |dloss/df_i| terms; "Hess f_i evaluated" counts
them (k per matrix); in this implementation their wall-clock is that of one masked
Hessian of the whole batch, so the saving shows in the count, not in run s.
"""

PAPER = Paper("mixed-newton", "mixed-precision Newton and GN_k (arXiv 2511.17660)",
              run_paper, parts=PARTS, needs_models=False)
