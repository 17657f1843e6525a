"""The Deblur-2D study's outputs: ``deblur_table.{md,csv}`` and the recovery figure."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from ..._io import atomic_path, save_figure
from .protocol import PAPER, TestSet

COLUMNS = ("set", "method", "kernel", "dtype", "n", "x_rmse", "x_rmse_std", "residual_rmse",
           "residual_ratio", "reached_fraction", "iterations_mean", "ms_per_image",
           "compile_s")


def write_tables(out: Path, results: dict[str, Any]) -> None:
    """``deblur_table.csv`` (every number) and ``deblur_table.md`` (with the paper's)."""
    rows = [{"set": s, "method": m, **r} for s, block in results["sets"].items()
            for m, r in block.items()]
    with atomic_path(out / "deblur_table.csv", ".csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    lines = [
        "# DeceptronNet v0 on Deblur-2D (fairness protocol)",
        "",
        f"Model: {results['model']['how']} ({results['model']['config']}); "
        f"test images: {results['n_test']} (baselines: the first {results['n_baseline']}).",
        "Stop (the paper's rows: x-GD, LM): RMSE(A(x) - y) <= 0.3 x start residual or 80 "
        "iterations (A: the kernel the method is given); that target lies below the noise "
        "level, so an LM that meets it fits noise. `LM (stop at noise)` stops at 1.05 x the "
        "noise level; the Tikhonov-/TV-LM rows run to convergence with alpha chosen per "
        "image by the discrepancy principle (or, labelled oracle, by the best x-RMSE). "
        "Residuals below are under the TRUE kernel.",
        "",
        "| set | method | kernel | dtype | x-RMSE | residual | residual / start | met 0.3 | "
        "iterations | ms / image | compile s | paper x-RMSE (it.) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        paper = PAPER.get(r["method"]) if r["set"] == "test" else None
        p = f"{paper['x_rmse']} ({paper['iterations_mean']})" if paper else ""
        lines.append(
            f"| {r['set']} | {r['method']} | {r['kernel']} | {r['dtype']} | {r['x_rmse']:.4f} | "
            f"{r['residual_rmse']:.4f} | {r['residual_ratio']:.3f} | "
            f"{r['reached_fraction']:.2f} | {r['iterations_mean']:.1f} | "
            f"{r['ms_per_image']:.2f} | {r['compile_s']:.1f} | {p} |")
    t = results["target"]
    lines += ["", f"Target: DeceptronNet x-RMSE <= {t['x_rmse']} on the test set: "
              f"{'met' if t['met'] else 'MISSED'} ({t['measured']:.4f})."]
    with atomic_path(out / "deblur_table.md", ".md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def recovery_figure(out: Path, ts: TestSet, recon: dict[str, np.ndarray], count: int = 4,
                    n: int = 64) -> None:
    """Truth, observation and every reconstruction in ``recon`` (the protocol's x-GD and
    LM first, DeceptronNet last) for the first ``count`` images, all on one colour
    scale [0, 1] (one shared colour bar), each reconstruction with its x-RMSE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = [k for k in ("x-GD", "LM") if k in recon]
    order = first + [k for k in recon if k not in first and k != "DeceptronNet"] + \
        [k for k in ("DeceptronNet",) if k in recon]
    cols = [("truth", ts.x), ("observation y", ts.y)] + [(k, recon[k]) for k in order]
    size = 2.2 if len(cols) <= 6 else 1.7
    count = min(count, ts.x.shape[0])
    fig, axes = plt.subplots(count, len(cols), squeeze=False, layout="constrained",
                             figsize=(size * len(cols) + 0.8, size * count + 0.3))
    image = None
    for i in range(count):
        for j, (title, imgs) in enumerate(cols):
            img = np.asarray(imgs[i])
            side = int(round(np.sqrt(img.size)))
            ax = axes[i, j]
            image = ax.imshow(img.reshape(side, side), cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title.replace(" (", "\n("), fontsize=7 if size < 2 else 9)
            if j >= 2:
                e = np.sqrt(np.mean((img - ts.x[i]) ** 2))
                ax.set_xlabel(f"x-RMSE {e:.3f}", fontsize=8)
        axes[i, 0].set_ylabel(f"sigma {ts.sigma[i]:.2f}", fontsize=8)
    if image is not None:  # one shared scale: every panel is drawn on [0, 1]
        fig.colorbar(image, ax=axes, shrink=0.8, label="intensity (0 = black, 1 = white)")
    save_figure(out / "deblur_recovery.png", fig)
    plt.close(fig)
