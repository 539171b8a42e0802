"""Comparing HPO methods over tasks and seeds: normalized regret, ranks, intervals, paired tests.

Input: one `Run` per (method, task, seed): the simulated times and values of the reports that
improved on the best so far, the budget, and how the run ended. Per task, regret is normalized
by the task's range, so tasks of any scale average together:

    regret(t) = (best so far at t - y_best) / (y_worst - y_best), clipped to [0, 1]

in the metric's direction, where `y_best` is the best value any run of the comparison reported
on the task, and `y_worst` the median over runs of their first report (a random config at the
lowest fidelity). Before a run's first report its regret is 1. A run that ended before its
budget (a finite space exhausted, a scheduler with nothing left to start) keeps its best value
to the end of the budget, and its end reason is shown.

Figures per run: `area`, the time-average of its regret curve over the budget (anytime
performance, 0 is best); `final`, its regret at the budget; `rank` among the methods on the same
(task, seed), by area (ties share the mean rank). Methods are compared with 95% t-intervals
over the (task, seed) runs (kept within the range of the figure: [0, 1] for regret, [1, number
of methods] for rank) and, pairwise, with a paired test over the same (task, seed) blocks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

GRID_POINTS = 200


@dataclass
class Run:
    """One (method, task, seed) run: its improving reports and how it ended."""

    method: str
    task: str
    seed: int
    times: list[float]
    values: list[float]
    budget: float
    end_time: float | None = None
    end_reason: str = ""
    num_trials: int = 0
    tool: str = "tunesmith"

    @property
    def ended_early(self) -> bool:
        """Ended more than 1% of the budget before it (the budget was not used up)."""
        return self.end_time is not None and self.end_time < 0.99 * self.budget

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Comparison:
    """The analysed comparison (see the module doc); tables are DataFrames."""

    mode: str
    grid: np.ndarray
    runs: pd.DataFrame  # one row per run: method, task, seed, area, final, rank, end...
    per_task: pd.DataFrame  # task x method: area/final/rank mean and 95% interval
    overall: pd.DataFrame  # method: the same over every (task, seed)
    curves: dict[tuple[str, str], np.ndarray]  # (task, method) -> seeds x grid regret
    rank_curve: dict[str, np.ndarray] = field(default_factory=dict)  # method -> mean rank(t)

    @property
    def methods(self) -> list[str]:
        return list(self.overall["method"])

    @property
    def tasks(self) -> list[str]:
        return sorted({t for t, _ in self.curves})


def mean_interval(values: Iterable[float], level: float = 0.95,
                  bounds: tuple[float, float] = (-math.inf, math.inf)
                  ) -> tuple[float, float, float]:
    """Mean and its t-interval (NaN bounds for fewer than 2 values), kept within `bounds`, the
    range the mean can take (regret's [0, 1]: a t-interval of few runs reaches past it)."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, max(mean - half, bounds[0]), min(mean + half, bounds[1])


def incumbent(run: Run, grid: np.ndarray) -> np.ndarray:
    """The run's best value so far at each grid time (NaN before its first report)."""
    if not run.times:
        return np.full(grid.size, np.nan)
    times = np.asarray(run.times, dtype=float)
    index = np.searchsorted(times, grid, side="right") - 1
    best = np.asarray(run.values, dtype=float)[np.clip(index, 0, None)]
    return np.where(index >= 0, best, np.nan)


def task_bounds(runs: Sequence[Run], mode: str) -> dict[str, tuple[float, float]]:
    """Per task, (y_best, y_worst) as the module doc defines them."""
    sign = 1.0 if mode == "min" else -1.0
    out: dict[str, tuple[float, float]] = {}
    for task in sorted({r.task for r in runs}):
        mine = [r for r in runs if r.task == task and r.values]
        if not mine:
            out[task] = (math.nan, math.nan)
            continue
        best = min(sign * v for r in mine for v in r.values) * sign
        worst = float(np.median([r.values[0] for r in mine]))
        out[task] = (best, worst)
    return out


def regret(run: Run, grid: np.ndarray, bounds: tuple[float, float], mode: str) -> np.ndarray:
    """Normalized regret of the run on the grid (1 before its first report)."""
    best, worst = bounds
    span = abs(worst - best)
    values = incumbent(run, grid)
    sign = 1.0 if mode == "min" else -1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sign * (values - best) / span if span > 0 else np.where(values == best, 0.0, 1.0)
    return np.clip(np.where(np.isnan(r), 1.0, r), 0.0, 1.0)


def analyse(runs: Sequence[Run], mode: str, grid_points: int = GRID_POINTS) -> Comparison:
    """Everything the tables and plots show (see the module doc)."""
    if not runs:
        raise ValueError("runs: nothing to compare")
    budget = max(r.budget for r in runs)
    grid = np.linspace(budget / grid_points, budget, grid_points)
    bounds = task_bounds(runs, mode)
    curve_of = {(r.method, r.task, r.seed): regret(r, grid, bounds[r.task], mode) for r in runs}
    rows = []
    for r in runs:
        c = curve_of[r.method, r.task, r.seed]
        rows.append({"method": r.method, "tool": r.tool, "task": r.task, "seed": r.seed,
                     "area": float(c.mean()), "final": float(c[-1]),
                     "best": r.values[-1] if r.values else math.nan, "trials": r.num_trials,
                     "end_time": r.end_time, "ended_early": r.ended_early,
                     "end_reason": r.end_reason})
    table = pd.DataFrame(rows)
    table["rank"] = table.groupby(["task", "seed"])["area"].rank(method="average")
    curves: dict[tuple[str, str], np.ndarray] = {}
    for (task, method), group in table.groupby(["task", "method"]):
        curves[str(task), str(method)] = np.vstack(
            [curve_of[str(method), str(task), int(s)] for s in sorted(group["seed"])])
    order = table.groupby("method")["area"].mean().sort_values().index.tolist()
    per_task = pd.DataFrame([
        {"task": task, "method": method, **_figures(table[(table.task == task)
                                                          & (table.method == method)],
                                                    len(order))}
        for task in sorted(table["task"].unique()) for method in order
        if ((table.task == task) & (table.method == method)).any()])
    overall = pd.DataFrame([{"method": m, **_figures(table[table.method == m], len(order))}
                            for m in order])
    return Comparison(mode, grid, table, per_task, overall, curves, _rank_curve(curve_of, grid))


def _figures(rows: pd.DataFrame, num_methods: int) -> dict[str, Any]:
    out: dict[str, Any] = {"tool": rows["tool"].iloc[0], "runs": len(rows)}
    for name, bounds in (("area", (0.0, 1.0)), ("final", (0.0, 1.0)),
                         ("rank", (1.0, float(num_methods)))):
        mean, lo, hi = mean_interval(rows[name], bounds=bounds)
        out.update({name: mean, f"{name}_lo": lo, f"{name}_hi": hi})
    early = rows[rows["ended_early"]]
    out["ended_early"] = len(early)
    out["end_note"] = "" if early.empty else (
        f"{len(early)}/{len(rows)} ended before the budget (at "
        f"{early['end_time'].min():.0f}-{early['end_time'].max():.0f} s): "
        f"{early['end_reason'].iloc[0]}")
    return out


def _rank_curve(curve_of: dict[tuple[str, str, int], np.ndarray], grid: np.ndarray
                ) -> dict[str, np.ndarray]:
    """Mean rank of each method's regret at each grid time over the (task, seed) blocks."""
    blocks = sorted({(t, s) for _, t, s in curve_of})
    methods = sorted({m for m, _, _ in curve_of})
    sums = {m: np.zeros(grid.size) for m in methods}
    counts = {m: 0 for m in methods}
    for task, seed in blocks:
        present = [m for m in methods if (m, task, seed) in curve_of]
        ranks = stats.rankdata(np.vstack([curve_of[m, task, seed] for m in present]), axis=0)
        for m, r in zip(present, ranks, strict=True):
            sums[m] += r
            counts[m] += 1
    return {m: sums[m] / counts[m] for m in methods if counts[m]}


def paired_test(comparison: Comparison, a: str, b: str, figure: str = "area") -> dict[str, Any]:
    """Method a minus method b over the (task, seed) runs both have: mean difference with its
    95% t-interval, a Wilcoxon signed-rank p-value, and the counts of wins and losses of a
    (lower is better)."""
    runs = comparison.runs
    left = runs[runs.method == a].set_index(["task", "seed"])[figure]
    right = runs[runs.method == b].set_index(["task", "seed"])[figure]
    both = left.index.intersection(right.index)
    diff = (left.loc[both] - right.loc[both]).to_numpy(dtype=float)
    # a difference of regrets lies in [-1, 1], of ranks in [1 - methods, methods - 1]
    span = len(comparison.methods) - 1 if figure == "rank" else 1.0
    mean, lo, hi = mean_interval(diff, bounds=(-span, span))
    nonzero = diff[diff != 0]
    p = float(stats.wilcoxon(nonzero).pvalue) if nonzero.size >= 2 else math.nan
    return {"a": a, "b": b, "figure": figure, "pairs": int(diff.size), "mean_diff": mean,
            "lo": lo, "hi": hi, "p_wilcoxon": p, "a_better": int((diff < 0).sum()),
            "b_better": int((diff > 0).sum())}


def format_table(frame: pd.DataFrame, columns: Sequence[str] = ("area", "final", "rank")) -> str:
    """A plain-text table: method, runs, each figure as `mean [lo, hi]`, and any end note."""
    lines = [f"{'method':24s} {'tool':9s} {'runs':>4s}  " + "  ".join(
        f"{c + ' (95% CI)':>22s}" for c in columns)]
    for row in frame.itertuples(index=False):
        cells = [_interval(getattr(row, c), getattr(row, f"{c}_lo"), getattr(row, f"{c}_hi"),
                           2 if c == "rank" else 4) for c in columns]
        line = f"{str(row.method):24} {str(row.tool):9} {str(row.runs):>4}  " + "  ".join(
            f"{c:>22s}" for c in cells)
        lines.append(line + (f"  <- {str(row.end_note)}" if row.end_note else ""))
    return "\n".join(lines)


def markdown_table(frame: pd.DataFrame, columns: Sequence[str] = ("area", "final", "rank")
                   ) -> str:
    """The same as `format_table`, as a markdown table."""
    head = ["method", "tool", "runs", *[f"{c} (95% CI)" for c in columns], "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in frame.itertuples(index=False):
        cells = [_interval(getattr(row, c), getattr(row, f"{c}_lo"), getattr(row, f"{c}_hi"),
                           2 if c == "rank" else 4) for c in columns]
        lines.append("| " + " | ".join([str(row.method), str(row.tool), str(row.runs), *cells,
                                        str(row.end_note)]) + " |")
    return "\n".join(lines)


def _interval(mean: float, lo: float, hi: float, digits: int) -> str:
    if math.isnan(mean):
        return "-"
    if math.isnan(lo):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
