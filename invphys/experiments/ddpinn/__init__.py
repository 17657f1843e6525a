"""Paper ``ddpinn``: domain decomposition + Gauss-Newton for PINNs (Heinlein, Kapoor,
arXiv 2510.27018), with the FBPINN library's oscillator and energy natural gradient's
Poisson 2D as anchors (see ../shared/spec/gauss-newton-family.md, paper 3).

Parts (``--problems``): ``oscillator`` (single network / FBPINN x Adam / GN), ``poisson``
(GN dense and block vs Adam, float64), ``inverse`` (PINN + GN vs the diffrax simulator
+ LM on the ``oscillator`` problem's data), ``heat-inverse`` (the ``heat1d`` problem's
initial condition: a space-time PINN + GN vs the simulator + LM on the same data,
errors on the whole u0 and on its identifiable low modes), ``scaling`` (seconds per
GN direction vs the number of subdomains, block-banded vs dense). Numbers come from
:mod:`.studies`; this module writes the tables, figures and README section.

The oscillator's subdomains are 2.1 times the centre spacing wide, the FBPINN
library's configuration of this benchmark (15 centres on [0, 1], ``subdomain_ws`` 0.15,
i.e. ``get_subdomain_ws(xs, 2.1)``: a point near a centre lies in three subdomains, so
:class:`invphys.pinn.BandedSolve` works on super-blocks of two subdomains). Poisson,
the inverse problem and the scaling study use 1.9 (each point in at most two
subdomains per axis: a block-tridiagonal GN matrix in 1D, the paper's structure).

The GN step of the forward studies is energy natural gradient's (``studies.ENG``): the
grid line search over ``2^-k`` and a damping that only safeguards (shrinks on every
accepted step), with the pseudo-inverse of ``J`` by SVD where the solve is dense
(Cholesky of ``J^T J`` cannot resolve the damping a PINN needs near its solution: the
Gram's condition number is the square of ``J``'s). The plain LM rule stalls Poisson
near 1e-4: at the line search's best step the model's ratio sits near 1/2, so LM
never lowers its damping below ~1e-7 |G| there.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from .._gn_bench import single_threaded_blas
from ..papers import Context, Paper
from ..report import Report, markdown
from . import studies

PARTS = ("oscillator", "poisson", "inverse", "heat-inverse", "scaling")
OVERLAP = 2.1  # the oscillator's (the FBPINN library's subdomain_ws 0.15 / spacing 1/14)


def _f(v, digits=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if np.isfinite(v) else "-"
    return str(v)


def _run_rows(runs, target):
    rows = [["method", "parameters", "iterations", "final rel. L2",
             f"iters to {target:g}", f"s to {target:g}", "run s", "compile s"]]
    for name, r in runs.items():
        rows.append([name, str(r["parameters"]), str(r["iterations"]),
                     _f(r["final_error"]), _f(r["iters_to_target"]),
                     _f(r["seconds_to_target"]), _f(r["run_s"]), _f(r["compile_s"])])
    return rows


def _draw(public):
    def draw(folder):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        files = []
        for part in ("oscillator", "poisson"):
            if part not in public:
                continue
            fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
            for name, r in public[part]["runs"].items():
                c = r["curve"]
                a0.plot(c["iteration"], c["metric"], label=name)
                a1.plot(c["time_s"], c["metric"], label=name)
            for ax, xl in ((a0, "iteration"), (a1, "wall-clock s (compile excluded)")):
                ax.set_yscale("log")
                ax.set_xscale("symlog")
                ax.set_xlabel(xl)
                ax.set_ylabel("relative L2 error")
            a0.legend(fontsize=7)
            fig.suptitle(f"{part}: error vs iterations and wall-clock")
            fig.savefig(folder / f"{part}_convergence.png", dpi=110)
            plt.close(fig)
            files.append(f"{part}_convergence.png")
        if "scaling" in public:
            fig, ax = plt.subplots(figsize=(5, 3.6), layout="constrained")
            rows = public["scaling"]["rows"]
            for name in ("banded", "dense"):
                pts = [(r["subdomains"], r[name]) for r in rows if r[name] is not None]
                ax.loglog(*zip(*pts, strict=True), "o-", label=name)
            ax.set_xlabel("subdomains")
            ax.set_ylabel("CPU s per GN direction (best of repeats)")
            ax.legend()
            fig.savefig(folder / "scaling.png", dpi=110)
            plt.close(fig)
            files.append("scaling.png")
        return files

    return draw


def run(ctx: Context) -> Report:
    """Run the chosen parts and assemble the report, with the OpenBLAS behind the dense
    (SVD, Cholesky) solves single-threaded (:func:`.._gn_bench.single_threaded_blas`:
    its thread pool and XLA's fight over a small machine's cores)."""
    with single_threaded_blas():
        return _run(ctx)


def _run(ctx: Context) -> Report:
    t0 = time.perf_counter()
    log = print if ctx.progress else (lambda _s: None)
    parts = ctx.parts or PARTS
    public, tables, readme, targets = {"parts": list(parts)}, {}, [], []
    if "oscillator" in parts:
        log("  oscillator (omega_0 = 80)")
        osc = public["oscillator"] = studies.oscillator(ctx.quick, OVERLAP, log)
        tables["oscillator"] = _run_rows(osc["runs"], 1e-4)
        gn = osc["runs"]["FBPINN + GN"]
        met = gn["iters_to_target"] is not None and gn["iters_to_target"] <= 300
        extra = osc["runs"].get("FBPINN + GN, 400 points")
        extra = "" if extra is None else (
            f" (400 collocation points: {_f(extra['final_error'])} after "
            f"{extra['iterations']}, first <= 1e-4 at {_f(extra['iters_to_target'])})")
        targets.append(["FBPINN oscillator: rel. L2 <= 1e-4 in <= 300 GN iterations",
                        f"{_f(gn['final_error'])} after {gn['iterations']}; first <= 1e-4 "
                        f"at {_f(gn['iters_to_target'])}{extra}", "met" if met else "missed"])
    if "poisson" in parts:
        log("  Poisson 2D")
        poi = public["poisson"] = studies.poisson(ctx.quick, log)
        tables["poisson"] = _run_rows(poi["runs"], 1e-6)
        for name, r in poi["runs"].items():
            if "GN" in name:
                met = r["iters_to_target"] is not None and r["iters_to_target"] <= 100
                targets.append([f"Poisson 2D {name}: rel. L2 <= 1e-6 in <= 100 iterations",
                                f"{_f(r['final_error'])} after {r['iterations']}",
                                "met" if met else "missed"])
    if "inverse" in parts:
        log("  inverse oscillator")
        inv = public["inverse"] = studies.inverse(ctx.quick, log)
        rows = [["parameter", "median rel. err PINN + GN", "median rel. err simulator + LM"]]
        for i, n in enumerate(inv["names"]):
            rows.append([n, _f(inv["median_by_param_pinn"][i]),
                         _f(inv["median_by_param_lm"][i])])
        rows.append(["all", _f(inv["median_rel_err_pinn"]), _f(inv["median_rel_err_lm"])])
        rows.append(["wall s (run; compile apart)", _f(inv["pinn_run_s"]), _f(inv["lm_run_s"])])
        tables["inverse"] = rows
        targets.append(["inverse: PINN median rel. error within 2x of simulator + LM",
                        f"ratio {_f(inv['ratio_err'])}; wall-clock ratio "
                        f"{_f(inv['ratio_time'])}", "met" if inv["ratio_err"] <= 2 else
                        "missed"])
    if "heat-inverse" in parts:
        log("  inverse Heat-1D initial condition")
        hi = public["heat-inverse"] = studies.heat_inverse(ctx.quick, log)
        k = hi["modes_identifiable"]
        rows = [["median over instances", "PINN + GN", "simulator + LM"],
                [f"rel. error, identifiable part (modes 1..{k})",
                 _f(hi["median_rel_err_ident_pinn"]), _f(hi["median_rel_err_ident_lm"])],
                ["rel. error, whole u0", _f(hi["median_rel_err_full_pinn"]),
                 _f(hi["median_rel_err_full_lm"])],
                [f"for scale: whole-u0 rel. error of the exact modes 1..{k} (rest 0)",
                 _f(hi["median_projection_full"]), _f(hi["median_projection_full"])],
                [f"chi^2 of the fit (m = {hi['n_obs']})", _f(hi["median_chi2_pinn"]),
                 _f(hi["median_chi2_lm"])],
                ["PDE residual RMS on a fine 127 x 41 grid / at collocation (max)",
                 f"{_f(float(max(hi['pde_rms_off'])))} / {_f(float(max(hi['pde_rms_col'])))}",
                 "-"],
                [f"wall s, {hi['instances']} instances (run; compile apart)",
                 _f(hi["pinn_run_s"]), _f(hi["lm_run_s"])],
                ["compile s", _f(hi["pinn_compile_s"]), _f(hi["lm_compile_s"])]]
        tables["heat-inverse"] = rows
        note = (" (quick: 10 GN iterations, unconverged)" if ctx.quick else
                " -- the PINN is much worse" if hi["ratio_err_ident"] > 2 else "")
        targets.append([
            "heat-inverse: PINN median rel. error / simulator's (no numeric target)",
            f"identifiable part (modes 1..{k}): {_f(hi['ratio_err_ident'])} "
            f"({_f(hi['median_rel_err_ident_pinn'])} vs {_f(hi['median_rel_err_ident_lm'])})"
            f"{note}; whole u0: "
            f"{_f(hi['ratio_err_full'])} (LM unregularised: its modes above {k} fit the "
            f"noise up to the box); wall-clock ratio {_f(hi['ratio_time'])}",
            "reported"])
    if "scaling" in parts:
        log("  cost per GN iteration vs subdomains")
        sc = public["scaling"] = studies.scaling(ctx.quick, log)
        tables["scaling"] = [["subdomains", "parameters", "banded CPU s", "dense CPU s",
                              "banded wall s", "dense wall s"]] + [
            [str(r["subdomains"]), str(r["parameters"]), _f(r["banded"]), _f(r["dense"]),
             _f(r["banded_wall"]), _f(r["dense_wall"])] for r in sc["rows"]]
        ex = sc["exponent"]
        targets.append(["scaling: block exponent <= 1.3, dense ~ 3 (fitted to CPU s)",
                        f"block {_f(ex.get('banded'))}, dense {_f(ex.get('dense'))} (wall: "
                        f"{_f(ex.get('banded_wall'))}, {_f(ex.get('dense_wall'))})",
                        "met" if ex.get("banded", 9) <= 1.3 else "missed"])
    tables["targets"] = [["target", "measured", "status"]] + targets
    mode = ("--quick (a smoke run; the targets are for the full run): oscillator Adam "
            "1000 steps (not the library's 20k), GN 40 iterations; Poisson on a 14 x 14 "
            "grid, GN 40 iterations, no dense FBPINN; 2 inverse instances; heat-inverse: 2 "
            "instances, 10 GN iterations on 62 x 8 collocation points (unconverged: a "
            "smoke run); scaling to 32 subdomains" if ctx.quick else "full")
    mode += (f"; oscillator subdomains {OVERLAP} x the centre spacing wide (the FBPINN "
             "library's), 1.9 elsewhere")
    readme.append(f"Mode: {mode}. Float64 throughout.\n")
    for name, rows in tables.items():
        readme.append(f"**{name}**\n\n{markdown(rows)}")
    figures = {k: public[k] for k in ("oscillator", "poisson", "scaling") if k in public}
    return Report(tables=tables, public=public, figures=figures, readme="\n".join(readme),
                  draw=_draw(public),
                  images=tuple(f for p, f in (("oscillator", "oscillator_convergence.png"),
                                              ("poisson", "poisson_convergence.png"),
                                              ("scaling", "scaling.png")) if p in parts),
                  device=jax.devices()[0].device_kind, wall_s=time.perf_counter() - t0,
                  quick=ctx.quick)


PAPER = Paper("ddpinn", "domain decomposition + Gauss-Newton for PINNs (FBPINN, ENG anchors)",
              run, parts=PARTS, needs_models=False)
