"""Reading an experiment back: results, best config, trajectory, Pareto front, plot."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpo_core.store.files import CONFIG_PREFIX, JOURNAL_FILE, RESULTS_FILE, SPEC_FILE, STATE_FILE
from hpo_core.store.store import ExperimentStore
from hpo_core.trial import Trial


class Experiment:
    """A finished or running experiment read back from its folder (see `load_experiment`)."""

    def __init__(self, path: Path, results: pd.DataFrame, spec: dict[str, Any] | None,
                 state: dict[str, Any] | None):
        self.path = path
        self.results = results
        self.spec = spec or {}
        self.state = state or {}
        metric = self.spec.get("metric")
        mode = self.spec.get("mode", "min")
        self.metrics: list[str] = [metric] if isinstance(metric, str) else list(metric or [])
        self.modes: list[str] = [mode] * len(self.metrics) if isinstance(mode, str) else list(mode)

    @property
    def metric(self) -> str:
        return self.metrics[0]

    @property
    def mode(self) -> str:
        return self.modes[0]

    @property
    def config_columns(self) -> list[str]:
        return [c for c in self.results.columns if c.startswith(CONFIG_PREFIX)]

    def _valid(self, metric: str | None = None) -> pd.DataFrame:
        metric = metric or self.metric
        if self.results.empty or metric not in self.results.columns:
            return self.results.iloc[0:0]
        values = pd.to_numeric(self.results[metric], errors="coerce")
        return self.results[np.isfinite(values)]

    def best_row(self) -> pd.Series | None:
        """The report with the best value of the metric."""
        valid = self._valid()
        if valid.empty:
            return None
        values = pd.to_numeric(valid[self.metric])
        index = values.idxmin() if self.mode == "min" else values.idxmax()
        return valid.loc[index]

    def best_config(self) -> dict[str, Any] | None:
        row = self.best_row()
        if row is None:
            return None
        trial = self.state.get("trials", {}).get(str(int(row["trial_id"])))
        if trial is not None:
            return dict(trial["config"])
        return {c[len(CONFIG_PREFIX):]: row[c] for c in self.config_columns}

    def best_value(self) -> float | None:
        row = self.best_row()
        return None if row is None else float(row[self.metric])

    def best_trial_id(self) -> int | None:
        row = self.best_row()
        return None if row is None else int(row["trial_id"])

    def trajectory(self) -> pd.DataFrame:
        """Incumbent over time: columns time, best (best value so far), trial_id (its trial)."""
        valid = self._valid().sort_values("time", kind="stable")
        if valid.empty:
            return pd.DataFrame(columns=["time", "best", "trial_id"])
        values = pd.to_numeric(valid[self.metric]).to_numpy()
        best = np.minimum.accumulate(values) if self.mode == "min" else np.maximum.accumulate(values)
        improved = np.r_[True, best[1:] != best[:-1]]
        return pd.DataFrame(
            {
                "time": valid["time"].to_numpy()[improved],
                "best": best[improved],
                "trial_id": valid["trial_id"].to_numpy()[improved].astype(int),
            }
        ).reset_index(drop=True)

    def trials(self) -> pd.DataFrame:
        """One row per trial: its config, status, number of reports and last reported values."""
        if self.results.empty:
            return self.results
        last = self.results.groupby("trial_id", sort=True).tail(1).set_index("trial_id")
        last["num_reports"] = self.results.groupby("trial_id").size()
        statuses = {int(k): v["status"] for k, v in self.state.get("trials", {}).items()}
        if statuses:
            last["status"] = [statuses.get(int(i), s) for i, s in zip(last.index, last["status"],
                                                                       strict=True)]
        return last.reset_index()

    def pareto_front(self, metrics: Sequence[str] | None = None,
                     modes: Sequence[str] | None = None) -> pd.DataFrame:
        """Non-dominated reports for several metrics (defaults: the experiment's metrics)."""
        metrics = list(metrics or self.metrics)
        modes = list(modes or self.modes)
        if self.results.empty or any(m not in self.results.columns for m in metrics):
            return self.results.iloc[0:0]
        frame = self.results.dropna(subset=metrics)
        values = frame[metrics].to_numpy(dtype=float)
        signs = np.array([1.0 if m == "min" else -1.0 for m in modes])
        mask = pareto_mask(values * signs)
        return frame[mask].sort_values(metrics[0]).reset_index(drop=True)

    def plot_trajectory(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Save the incumbent trajectory as a PNG (default `<experiment>/trajectory.png`)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path) if path is not None else self.path / "trajectory.png"
        traj = self.trajectory()
        fig, ax = plt.subplots(figsize=(7, 4))
        if not traj.empty:
            end = max(float(self.results["time"].max()), float(traj["time"].iloc[-1]))
            ax.step(np.r_[traj["time"].to_numpy(), end], np.r_[traj["best"], traj["best"].iloc[-1]],
                    where="post", label="best so far")
            ax.scatter(traj["time"], traj["best"], s=12)
        ax.set_xlabel("time (s)")
        ax.set_ylabel(f"best {self.metric} ({self.mode})" if self.metrics else "best")
        ax.set_title(f"Incumbent trajectory: {self.path.name}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def pareto_mask(values: np.ndarray) -> np.ndarray:
    """Rows of `values` (to minimize, one column per objective) that no other row dominates."""
    n = len(values)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        if not mask[i]:
            continue
        dominated = np.all(values <= values[i], axis=1) & np.any(values < values[i], axis=1)
        if dominated.any():
            mask[i] = False
    return mask


def load_experiment(path: str | os.PathLike[str]) -> Experiment:
    """Read an experiment folder: its results frame, spec and state."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no experiment folder at {path}")
    results_path = path / RESULTS_FILE
    results = pd.read_parquet(results_path) if results_path.exists() else pd.DataFrame()
    spec_path, state_path = path / SPEC_FILE, path / STATE_FILE
    spec = json.loads(spec_path.read_text()) if spec_path.exists() else None
    state = json.loads(state_path.read_text()) if state_path.exists() else None
    if spec is None and state is not None:
        spec = {"metric": state.get("metric"), "mode": state.get("mode", "min")}
    if state is not None and (path / JOURNAL_FILE).exists():
        results = _with_journal(path, state, results)
    return Experiment(path, results, spec, state)


def _with_journal(path: Path, state: Mapping[str, Any], results: pd.DataFrame) -> pd.DataFrame:
    """The results of a running or killed experiment: results.parquet plus the journal's rows
    that state.json covers (the rows a resume keeps)."""
    store = ExperimentStore(path.parent, path.name)
    store.load_state()
    if store.num_rows == len(results):
        return results
    trials = {int(tid): Trial.from_dict(data) for tid, data in state.get("trials", {}).items()}
    return store.results_frame(trials)
