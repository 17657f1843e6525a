"""Figures. matplotlib with the Agg backend (no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_observations(problem, x, y_clean, y_noisy, max_curves: int = 4):
    """x (left) and its clean and noisy observation (right), a few samples."""
    x, y_clean, y_noisy = (np.atleast_2d(np.asarray(a)) for a in (x, y_clean, y_noisy))
    k = min(len(x), max_curves)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if problem.spec is not None and problem.spec.problem == "oscillator":
        from ..physics.oscillator import PARAMS

        width = 0.8 / k
        for i in range(k):
            ax0.bar(np.arange(5) + i * width, x[i], width, color=colors[i % len(colors)])
        ax0.set_xticks(np.arange(5) + 0.4 - width / 2, PARAMS)
        ax0.set_title("unknown theta")
        ax0.set_xlabel("parameter")
        ax0.set_ylabel("value (model units)")
        t = np.linspace(0, problem.spec["physics"]["t_final"], y_clean.shape[1])
        ax1.set_xlabel("time t (model units)")
        ax1.set_ylabel("displacement x(t) (model units)")
    else:
        grid = np.linspace(0, 1, x.shape[1])
        for i in range(k):
            ax0.plot(grid, x[i], color=colors[i % len(colors)])
        ax0.set_title("unknown x (initial state)")
        ax0.set_xlabel("position s (rod length 1)")
        ax0.set_ylabel("initial temperature u0(s)")
        t = np.linspace(0, 1, y_clean.shape[1])
        ax1.set_xlabel("position s (rod length 1)")
        ax1.set_ylabel("observed temperature u(s, T)")
    for i in range(k):
        c = colors[i % len(colors)]
        ax1.plot(t, y_clean[i], color=c, lw=1.5)
        ax1.plot(t, y_noisy[i], ".", color=c, ms=3)
    ax1.set_title("observation: clean (line) and noisy (dots)")
    fig.suptitle(f"{problem.name}: {k} sample(s)")
    return fig


def plot_convergence(histories: dict, eps: float | None = None, title: str = "", ax=None):
    """Normalised RMSE vs iteration: median and interquartile band per method
    (thin lines for every run when there are few)."""
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, h) in enumerate(histories.items()):
        h = np.atleast_2d(np.asarray(h, float))
        # a finished run keeps its last value (NaN marks iterations not run)
        filled = h.copy()
        for row in filled:
            last = np.where(np.isfinite(row))[0]
            if last.size:
                row[last[-1] + 1:] = row[last[-1]]
        c = colors[i % len(colors)]
        it = np.arange(h.shape[1])
        if len(h) <= 5:
            for row in h:
                ax.plot(it, row, color=c, lw=1, alpha=0.8)
            ax.plot([], [], color=c, label=name)
        else:
            q1, med, q3 = np.nanpercentile(filled, [25, 50, 75], axis=0)
            ax.plot(it, med, color=c, label=f"{name} (median, IQR)")
            ax.fill_between(it, q1, q3, color=c, alpha=0.2)
    if eps is not None:
        ax.axhline(eps, color="k", ls="--", lw=0.8, label=f"eps = {eps}")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("residual RMSE (normalised output units)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best", framealpha=0.8)
    return ax.figure if own else ax
