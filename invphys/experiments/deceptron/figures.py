"""The Deceptron reproduction's figures (PNG), drawn from the run's results."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..._io import save_figure
from ..plots import plot_convergence, plt
from .tables import LABEL, PAPER_SWEEP, _methods


def figures(results: dict, out: Path) -> list[str]:
    """Draw the run's figures into ``out`` (the writer's staging folder) and copy there
    the files each extra section computed into its work folder (``sec["files"]``: name in
    the run folder -> path), so they are published with the run, atomically."""
    names = []
    for sec in results.get("extra", {}).values():
        for name, src in sec.get("files", {}).items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out / name)
            names.append(name)
    probs = [p for p in ("heat1d", "oscillator") if p in results]
    if probs:
        names += _paper_figures(results, probs, out)
    if "heat1d" in results:
        b = results["heat1d"]["beyond"]
        xt = np.asarray(b["_x_true"][0])
        grid = np.linspace(0, 1, xt.size)
        fig, ax = plt.subplots(figsize=(6, 3.6), layout="constrained")
        ax.plot(grid, xt, "k", lw=2, label="true u0")
        for m in ("pg", "dipg", "gn"):
            ax.plot(grid, np.asarray(b[m]["_x"][0]), label=LABEL[m])
        ax.set_title("Heat-1D recovery vs the true simulator (discrepancy stop)")
        ax.set_xlabel("position s (rod length 1)")
        ax.set_ylabel("initial temperature u0(s)")
        ax.legend(fontsize=8, loc="best", framealpha=0.8)
        save_figure(out / "heat_recovery.png", fig)
        names.append("heat_recovery.png")
        plt.close(fig)

    if "ablation" in results:
        names.append(_ablation_figure(results["ablation"], out))
    if "sweep" in results:
        names.append(_sweep_figure(results["sweep"], out))

    logs = {p: results["models"][p].get("_paper_log", []) for p in probs}
    if any(logs.values()):
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
        for prob, log in logs.items():
            if not log:
                continue
            ep = [h["epoch"] for h in log]
            axes[0].semilogy(ep, [h["rjcp"] for h in log], label=prob)
            axes[1].semilogy(ep, [h["val_mse"] for h in log], label=prob)
        axes[0].set_title("RJCP vs epoch (paper affine Deceptron)")
        axes[1].set_title("validation MSE vs epoch")
        axes[1].axhline(0.07, color="k", ls="--", lw=0.8, label="JCP trigger 0.07")
        axes[0].set_ylabel("RJCP (relative JCP, dimensionless)")
        axes[1].set_ylabel("validation MSE (normalised units)")
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.legend(fontsize=8)
        save_figure(out / "training_curves.png", fig)
        names.append("training_curves.png")
        plt.close(fig)
    return names


def _ablation_figure(ablation: dict, out: Path) -> str:
    """RJCP vs epoch per variant (log scale) and D-IPG iterations to eps per variant."""
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for label, r in ablation.items():
        log = r["_log"]
        if log:
            ax0.semilogy([h["epoch"] for h in log], [h["rjcp"] for h in log], label=label)
    ax0.set_xlabel("epoch")
    ax0.set_ylabel("RJCP (1 probe per epoch)")
    ax0.set_title("Heat: RJCP during training")
    ax0.legend(fontsize=8)
    labels = list(ablation)
    ax1.boxplot([ablation[k]["dipg"]["_iters"] for k in labels], tick_labels=labels)
    ax1.set_ylabel("D-IPG iterations to eps = 0.30")
    ax1.set_title("Heat, paper mode: D-IPG per variant")
    ax1.tick_params(axis="x", labelsize=8, labelrotation=25)
    for t in ax1.get_xticklabels():
        t.set_horizontalalignment("right")
    save_figure(out / "ablation.png", fig)
    plt.close(fig)
    return "ablation.png"


def _sweep_figure(sweep: dict, out: Path) -> str:
    """Mean iterations to eps vs FD steps (ours: lines; the paper's: crosses)."""
    fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
    ts = [int(t) for t in sweep]
    for m, c in (("pg", "C0"), ("dipg", "C1"), ("gn", "C2")):
        ax.plot(ts, [sweep[str(t)][m]["iterations_mean"] for t in ts], "o-", color=c,
                label=LABEL[m])
    ref = [t for t in ts if t in PAPER_SWEEP]
    ax.plot(ref, [PAPER_SWEEP[t][0] for t in ref], "x", color="C0", ms=9, label="paper x-GD")
    ax.plot(ref, [PAPER_SWEEP[t][1] for t in ref], "x", color="C1", ms=9, label="paper D-IPG")
    ax.set_yscale("log")
    ax.set_xlabel("explicit FD steps T")
    ax.set_ylabel("mean iterations to eps = 0.30")
    ax.set_title("Heat difficulty sweep (paper mode)")
    ax.legend(fontsize=8)
    save_figure(out / "heat_sweep.png", fig)
    plt.close(fig)
    return "heat_sweep.png"


def _paper_figures(results: dict, probs: list[str], out: Path) -> list[str]:
    """The paper-mode figures (one panel per problem)."""
    names = []
    fig, axes = plt.subplots(1, len(probs), figsize=(6 * len(probs), 4.6), layout="constrained")
    for ax, prob in zip(np.atleast_1d(axes), probs, strict=True):
        b = results[prob]["paper"]
        plot_convergence({LABEL[m]: b[m]["_history_rmse"] for m in _methods(b)},
                         eps=0.30, title=f"{prob}: paper mode (surrogate objective)", ax=ax)
    # one legend below the panels: per-panel legends covered the IQR bands
    first = np.atleast_1d(axes)[0]
    handles, labels = first.get_legend_handles_labels()
    for ax in np.atleast_1d(axes):
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5),
               fontsize=8)
    save_figure(out / "rmse_vs_iteration.png", fig)
    names.append("rmse_vs_iteration.png")
    plt.close(fig)

    fig, axes = plt.subplots(1, len(probs), figsize=(6 * len(probs), 3.6), layout="constrained")
    for ax, prob in zip(np.atleast_1d(axes), probs, strict=True):
        b = results[prob]["paper"]
        ms = _methods(b)
        top = max(max(b[m]["_iters"]) for m in ms)
        bins = np.linspace(0, top + 1, 21)
        # side by side per bin: overlaid bars hid D-IPG's under GN's
        ax.hist([np.asarray(b[m]["_iters"], float) for m in ms], bins=bins,
                label=[LABEL[m] for m in ms], color=[f"C{i}" for i in range(len(ms))])
        ax.set_xlabel("iterations to eps = 0.30 (failures: full length)")
        ax.set_ylabel("test problems (count)")
        ax.set_title(prob)
        ax.legend(fontsize=8, loc="best", framealpha=0.8)
    save_figure(out / "hist_iterations.png", fig)
    names.append("hist_iterations.png")
    plt.close(fig)

    for key, fname, ylabel, log in (("_final_rmse", "box_final_rmse.png", "final RMSE", True),
                                    ("_accepted_fraction", "box_accepted.png",
                                     "accepted-step fraction", False)):
        fig, axes = plt.subplots(1, len(probs), figsize=(6 * len(probs), 3.6),
                                 layout="constrained")
        for ax, prob in zip(np.atleast_1d(axes), probs, strict=True):
            b = results[prob]["paper"]
            ms = _methods(b)
            ax.boxplot([b[m][key] for m in ms], tick_labels=[LABEL[m] for m in ms])
            ax.set_ylabel(ylabel)
            ax.set_title(f"{prob}: paper mode")
            if log:
                ax.set_yscale("log")
            ax.tick_params(axis="x", labelsize=8)
        save_figure(out / fname, fig)
        names.append(fname)
        plt.close(fig)
    return names
