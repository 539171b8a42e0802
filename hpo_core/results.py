"""The experiment store on disk, and its analysis.

Layout of `<root>/<experiment>/`:

* `spec.json`        the ExperimentSpec that started the experiment;
* `results.parquet`  one row per report: trial_id, time, status, decision, `config_<name>`
                     columns and every reported metric;
* `trials/<id>/`     per-trial files of real backends (config.json, stdout, stderr, checkpoint/);
* `state.json`       tuner, scheduler and searcher state, written atomically after the results.

MLflow mirrors this store; it is never the only copy.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpo_core.trial import Trial

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CONFIG_PREFIX = "config_"
RESULTS_FILE = "results.parquet"
STATE_FILE = "state.json"
JOURNAL_FILE = "results.journal.jsonl"
SPEC_FILE = "spec.json"


def validate_name(name: str, field: str = "name") -> str:
    """Check a name used in paths: letters, digits, '.', '_', '-'; no leading dot; <= 128 chars."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or ".." in name:
        raise ValueError(
            f"{field}: {name!r} is not a valid name (letters, digits, '.', '_', '-'; "
            "starting with a letter or digit; at most 128 characters)"
        )
    return name


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see the old or the new content, never a partial one.

    Atomic against a killed process (rename); no fsync, so not against a power loss."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def dumps(data: Any) -> str:
    return json.dumps(data, indent=1, default=_json_default, allow_nan=True)


class ExperimentStore:
    """Reads and writes one experiment's folder."""

    def __init__(self, root: str | os.PathLike[str], name: str):
        self.name = validate_name(name, "name")
        self.path = Path(root) / self.name
        self.trials_path = self.path / "trials"
        self._rows: list[dict[str, Any]] = []
        self._flushed_rows = 0
        self._journal: Any = None

    # -- files ---------------------------------------------------------------------------------
    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def has_state(self) -> bool:
        return (self.path / STATE_FILE).exists()

    def write_spec(self, spec: Mapping[str, Any]) -> None:
        atomic_write_text(self.path / SPEC_FILE, dumps(dict(spec)))

    def read_spec(self) -> dict[str, Any] | None:
        path = self.path / SPEC_FILE
        return json.loads(path.read_text()) if path.exists() else None

    def trial_dir(self, trial_id: int) -> Path:
        path = self.trials_path / str(int(trial_id))
        path.mkdir(parents=True, exist_ok=True)
        return path

    def checkpoint_dir(self, trial_id: int) -> Path:
        path = self.trial_dir(trial_id) / "checkpoint"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_trial_config(self, trial: Trial) -> Path:
        path = self.trial_dir(trial.trial_id) / "config.json"
        atomic_write_text(path, dumps(trial.config))
        return path

    # -- results -------------------------------------------------------------------------------
    def record(self, row: dict[str, Any]) -> None:
        """Buffer one report row (trial_id, time, status, decision, metrics); with a journal
        open, the row also reaches the journal file at once."""
        if self._journal is not None:
            line = json.dumps({"_seq": len(self._rows), **row}, default=_json_default)
            self._journal.write(line + "\n")
            self._journal.flush()
        self._rows.append(row)

    def open_journal(self) -> None:
        """Append every new row to `results.journal.jsonl`, so that a cheap `save(full=False)`
        (state.json only) loses no row when the process is killed. Call after a full save."""
        if self._journal is None:
            self.create()
            self._journal = open(self.path / JOURNAL_FILE, "w")  # noqa: SIM115

    def close_journal(self) -> None:
        """Close the journal; an empty one (all rows in results.parquet) is removed."""
        if self._journal is not None:
            empty = self._journal.tell() == 0
            self._journal.close()
            self._journal = None
            if empty:
                (self.path / JOURNAL_FILE).unlink(missing_ok=True)

    @property
    def num_rows(self) -> int:
        return len(self._rows)

    def rows(self) -> list[dict[str, Any]]:
        return self._rows

    def results_frame(self, trials: Mapping[int, Trial]) -> pd.DataFrame:
        """All report rows with each trial's config as `config_<name>` columns."""
        frame = pd.DataFrame(self._rows)
        if frame.empty:
            return frame
        config_rows = {
            tid: {f"{CONFIG_PREFIX}{k}": _scalar(v) for k, v in t.config.items()}
            for tid, t in trials.items()
        }
        configs = pd.DataFrame.from_dict(config_rows, orient="index")
        if not configs.empty:
            configs.index.name = "trial_id"
            overlap = [c for c in configs.columns if c in frame.columns]
            frame = frame.drop(columns=overlap).join(configs, on="trial_id")
        return frame

    def save(self, state: Mapping[str, Any], trials: Mapping[int, Trial], full: bool = True) -> None:
        """Write results.parquet (if new rows) and then state.json, each atomically.

        `full=False` writes state.json only: the rows since the last full save are in the
        journal (see `open_journal`), which `load_state` reads back."""
        self.create()
        if full and (len(self._rows) != self._flushed_rows
                     or not (self.path / RESULTS_FILE).exists()):
            frame = self.results_frame(trials)
            tmp = self.path / f".{RESULTS_FILE}.tmp"
            _to_parquet(frame, tmp)
            os.replace(tmp, self.path / RESULTS_FILE)
            self._flushed_rows = len(self._rows)
            if self._journal is not None:
                self._journal.seek(0)
                self._journal.truncate()
        atomic_write_text(self.path / STATE_FILE, json.dumps(dict(state), default=_json_default,
                                                             separators=(",", ":")))

    def load_state(self) -> dict[str, Any] | None:
        """The saved state, with the report rows it covers loaded back into the buffer."""
        path = self.path / STATE_FILE
        if not path.exists():
            return None
        state = json.loads(path.read_text())
        results = self.path / RESULTS_FILE
        self._rows = []
        if results.exists():
            frame = pd.read_parquet(results)
            frame = frame[[c for c in frame.columns if not c.startswith(CONFIG_PREFIX)]]
            self._rows = [
                {k: v for k, v in row.items() if not _is_missing(v)}
                for row in frame.to_dict(orient="records")
            ]
        self._flushed_rows = len(self._rows)
        journal = self.path / JOURNAL_FILE
        if journal.exists():
            for line in journal.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    break  # a line cut by the kill: the state does not cover it either
                if row.pop("_seq") == len(self._rows):
                    self._rows.append(row)
            if len(self._rows) != self._flushed_rows:
                self._flushed_rows = -1  # rewrite results.parquet at the next full save
        covered = state.get("num_results")
        if isinstance(covered, int) and 0 <= covered < len(self._rows):
            # killed between writing results.parquet and state.json: drop the rows the state
            # does not know (they are reported again), and rewrite the file at the next save
            self._rows = self._rows[:covered]
            self._flushed_rows = -1
        return state


def _scalar(value: Any) -> Any:
    if isinstance(value, list | dict | tuple):
        return json.dumps(value, default=_json_default)
    return value


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _to_parquet(frame: pd.DataFrame, path: Path) -> None:
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object:
            kinds = {type(v) for v in frame[column].dropna()}
            if len(kinds) > 1 or (kinds and not kinds <= {str, bool}):
                frame[column] = frame[column].map(
                    lambda v: None if _is_missing(v) else (v if isinstance(v, str) else dumps(v))
                )
    frame.to_parquet(path, index=False)


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
