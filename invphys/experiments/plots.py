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
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if problem.spec is not None and problem.spec.problem == "oscillator":
        from ..physics.oscillator import PARAMS

        width = 0.8 / k
        for i in range(k):
            ax0.bar(np.arange(5) + i * width, x[i], width, color=colors[i % len(colors)])
        ax0.set_xticks(np.arange(5) + 0.4 - width / 2, PARAMS)
        ax0.set_title("unknown theta")
        t = np.linspace(0, problem.spec["physics"]["t_final"], y_clean.shape[1])
        ax1.set_xlabel("t")
    else:
        grid = np.linspace(0, 1, x.shape[1])
        for i in range(k):
            ax0.plot(grid, x[i], color=colors[i % len(colors)])
        ax0.set_title("unknown x (initial state)")
        ax0.set_xlabel("position")
        t = np.linspace(0, 1, y_clean.shape[1])
        ax1.set_xlabel("position")
    for i in range(k):
        c = colors[i % len(colors)]
        ax1.plot(t, y_clean[i], color=c, lw=1.5)
        ax1.plot(t, y_noisy[i], ".", color=c, ms=3)
    ax1.set_title("observation: clean (line) and noisy (dots)")
    fig.suptitle(f"{problem.name}: {k} sample(s)")
    fig.tight_layout()
    return fig
