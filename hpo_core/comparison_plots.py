"""Plots of a `hpo_core.comparison.Comparison`: regret bands per task, mean rank over time."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import numpy as np
from scipy import stats

from hpo_core.comparison import Comparison


def _pyplot() -> ModuleType:  # matplotlib is imported only when plotting
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _style(comparison: Comparison) -> dict[str, tuple[object, str]]:
    plt = _pyplot()
    colors = [*plt.get_cmap("tab10").colors, *plt.get_cmap("Dark2").colors]
    tools = dict(zip(comparison.overall["method"], comparison.overall["tool"], strict=True))
    return {m: (colors[i % len(colors)], "-" if tools[m] == "tunesmith" else "--")
            for i, m in enumerate(comparison.methods)}


def plot_regret(comparison: Comparison, path: Path, title: str = "") -> Path:
    """One panel per task: mean normalized regret over time with its 95% band, per method."""
    plt = _pyplot()
    tasks = comparison.tasks
    cols = min(len(tasks), 3)
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    style = _style(comparison)
    grid = comparison.grid
    for ax, task in zip(axes.flat, tasks, strict=False):
        for method in comparison.methods:
            curves = comparison.curves.get((task, method))
            if curves is None:
                continue
            mean = curves.mean(axis=0)
            color, line = style[method]
            ax.plot(grid, np.maximum(mean, 1e-4), line, color=color, label=method, lw=1.4)
            if len(curves) > 1:
                half = stats.t.ppf(0.975, len(curves) - 1) * curves.std(axis=0, ddof=1) \
                    / math.sqrt(len(curves))
                # within regret's [0, 1] (a t-band of few seeds reaches past it)
                ax.fill_between(grid, np.maximum(mean - half, 1e-4),
                                np.clip(mean + half, 1e-4, 1.0), color=color, alpha=0.12,
                                step=None)
        ax.set_yscale("log")
        ax.set_title(f"task {task}", fontsize=9)
        ax.set_xlabel("simulated time (s)", fontsize=8)
        ax.set_ylabel("normalized regret", fontsize=8)
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, ncol=2)
    fig.suptitle(title or "mean normalized regret, 95% band over seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_ranks(comparison: Comparison, path: Path, title: str = "") -> Path:
    """Mean rank of each method over time, over every (task, seed) (1 is best)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    style = _style(comparison)
    for method in comparison.methods:
        color, line = style[method]
        ax.plot(comparison.grid, comparison.rank_curve[method], line, color=color, label=method)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("mean rank (1 = best)")
    ax.invert_yaxis()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title or "average rank over tasks and seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
