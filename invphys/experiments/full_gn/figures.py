"""Figures of the full-gn paper: loss vs iteration, learning-rate sweeps, the
critical-batch-size curve, and the surrogates' validation MSE per epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..plots import plt


def draw(res: dict[str, Any], folder: Path) -> list[str]:
    files = []
    mlp = res.get("mlp", {})
    for name, r in mlp.get("problems", {}).items():
        fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 4))
        for m, e in r["methods"].items():
            c = np.asarray(e["curve"], float)
            a0.semilogy(np.arange(len(c)), c, label=f"{m} (lr {e['lr']})" if e["tuned"] else m)
            if e["tuned"]:
                lrs = [s["lr"] for s in e["sweep"]]
                its = [s[f"iters@{r['primary']:g}"] for s in e["sweep"]]
                a1.semilogx(lrs, [np.nan if i is None else i for i in its], "o-", label=m)
            else:
                it = e["targets"][f"{r['primary']:g}"]["iters"]
                if it is not None:
                    a1.axhline(it, ls="--", lw=1, label=m, color=a0.lines[-1].get_color())
        for t in r["targets"]:
            a0.axhline(t, color="k", lw=0.5, ls=":")
        a0.set(xlabel="outer iteration", ylabel=f"train {r['loss']}",
               title=f"{name}, batch {r['batch']}")
        a1.set(xlabel="learning rate", ylabel=f"iterations to {r['primary']:g}",
               title="learning-rate sweep (missing: not reached)")
        a0.legend(fontsize=7)
        a1.legend(fontsize=7)
        fig.tight_layout()
        f = f"{name}_loss.png"
        fig.savefig(folder / f, dpi=110)
        plt.close(fig)
        files.append(f)
    if mlp.get("batch_curve"):
        fig, ax = plt.subplots(figsize=(5.5, 4))
        bc = mlp["batch_curve"]
        batches = [int(b) for b in bc]
        for m in next(iter(bc.values())):
            its = [bc[str(b)][m] for b in batches]
            ax.loglog(batches, [np.nan if i is None else i for i in its], "o-", label=m)
        ax.set(xlabel="batch size", ylabel=f"iterations to {mlp['batch_curve_target']:g}",
               title="digits MLP: critical batch size")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "batch_curve.png", dpi=110)
        plt.close(fig)
        files.append("batch_curve.png")
    sur = res.get("surrogate", {})
    if sur:
        fig, axes = plt.subplots(1, len(sur), figsize=(5.5 * len(sur), 4), squeeze=False)
        for ax, (name, r) in zip(axes[0], sur.items(), strict=True):
            for opt_name, run in r["runs"].items():
                if "val_mse" in run:
                    v = run["val_mse"]
                    ax.semilogy(np.arange(1, len(v) + 1), v, "o-", ms=3,
                                label=f"{opt_name} (batch {run['batch']})")
            for t in r["targets"]:
                ax.axhline(t, color="k", lw=0.5, ls=":")
            ax.set(xlabel="epoch", ylabel="val MSE", title=name)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "surrogate_val_mse.png", dpi=110)
        plt.close(fig)
        files.append("surrogate_val_mse.png")
    return files
