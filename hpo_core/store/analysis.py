"""Reading an experiment back: results, best config, trajectory, Pareto front, plot."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from hpo_core.multiobjective import pareto_mask
from hpo_core.store.files import CONFIG_PREFIX, SPEC_FILE
from hpo_core.store.journal import Journal
from hpo_core.store.lock import is_held
from hpo_core.store.store import read_rows, read_state, results_frame, unreadable
from hpo_core.trial_value import TrialValue, best_report


class Experiment:
    """A finished or running experiment read back from its folder (see `load_experiment`)."""

    def __init__(self, path: Path, results: pd.DataFrame, spec: dict[str, Any] | None,
                 state: dict[str, Any] | None, last_exit: tuple[str, bool] | None = None):
        self.path = path
        self.results = results
        self.spec = spec or {}
        self.state = state or {}
        #: what interrupted its last session (the exception, masked, and whether it was an
        #: error rather than a kill); None if it ended, runs, or died without a word (SIGKILL)
        self.last_exit = last_exit
        metric = self.spec.get("metric")
        mode = self.spec.get("mode", "min")
        self.metrics: list[str] = [metric] if isinstance(metric, str) else list(metric or [])
        self.modes: list[str] = [mode] * len(self.metrics) if isinstance(mode, str) else list(mode)
        #: a metric that must be <= 0 for a report to be feasible (the method's
        #: `constraint_attr`): only feasible reports can be the best, or on the Pareto front
        self.constraint: str | None = self.state.get("constraint")

    @property
    def metric(self) -> str:
        return self.metrics[0]

    @property
    def mode(self) -> str:
        return self.modes[0]

    def mode_of(self, metric: str, default: str | None = None) -> str:
        """The mode `metric` is read in: the experiment's for one of its metrics, else
        `default` (else the experiment's first mode)."""
        if metric in self.metrics:
            return self.modes[self.metrics.index(metric)]
        return default or self.mode

    @property
    def running(self) -> bool:
        """Whether a process runs the experiment now (holds its lock)."""
        return is_held(self.path)

    @property
    def config_columns(self) -> list[str]:
        return [c for c in self.results.columns if c.startswith(CONFIG_PREFIX)]

    def failed_trial_ids(self) -> set[int]:
        """Trials that failed (never the best, whatever they reported before)."""
        return {int(k) for k, v in self.state.get("trials", {}).items()
                if v.get("status") == "failed"}

    def _valid(self, metric: str | None = None) -> pd.DataFrame:
        """Reports with a finite value of the metric, from trials that did not fail (and
        feasible, with a constraint)."""
        metric = metric or self.metric
        if self.results.empty or metric not in self.results.columns:
            return self.results.iloc[0:0]
        values = pd.to_numeric(self.results[metric], errors="coerce")
        failed = self.results["trial_id"].isin(list(self.failed_trial_ids()))
        return self.results[np.isfinite(values) & ~failed.to_numpy() & self._feasible()]

    def _feasible(self) -> np.ndarray:
        """Which reports are feasible (`hpo_core.trial_value.is_feasible`): all of them
        without a constraint."""
        if self.constraint is None:
            return np.ones(len(self.results), dtype=bool)
        if self.constraint not in self.results.columns:
            return np.zeros(len(self.results), dtype=bool)
        values = pd.to_numeric(self.results[self.constraint], errors="coerce").to_numpy(float)
        with np.errstate(invalid="ignore"):
            return values <= 0.0  # NaN (not reported): not feasible

    @property
    def resource_attr(self) -> str | None:
        """The resource a report's step is read from (e.g. "epoch"), if the scheduler has one."""
        return self.state.get("resource_attr") or \
            (self.spec.get("scheduler_options") or {}).get("resource_attr")

    def trial_values(self, metric: str | None = None, mode: str | None = None
                     ) -> dict[int, TrialValue]:
        """Each trial's value (`hpo_core.trial_value.best_report`), for trials that have one:
        of the experiment's metric in its mode, or of `metric` (in its mode here if the
        experiment has it, else in `mode`)."""
        metric = metric or self.metric
        mode = self.mode_of(metric, mode)
        valid = self._valid(metric)
        if valid.empty:
            return {}
        values = {}
        resource_attr = self.resource_attr
        failed = self.failed_trial_ids()  # never the best, whatever they reported
        # the rows as records once (one `to_dict` per trial's group cost ~1 ms each)
        by_trial: dict[int, list[dict[str, Any]]] = {}
        for record in cast(list[dict[str, Any]], self.results.to_dict(orient="records")):
            by_trial.setdefault(int(record["trial_id"]), []).append(record)
        for trial_id in sorted(by_trial):
            if trial_id in failed:
                continue
            best = best_report(by_trial[trial_id], metric, mode, resource_attr, self.constraint)
            if best is not None:
                values[trial_id] = best
        return values

    def ranked(self) -> pd.DataFrame:
        """`trials()` best first (ties: the earlier best report), trials without a value last."""
        trials = self.trials()
        if trials.empty or self.metric not in trials.columns:
            return trials
        return trials.sort_values([self.metric, "best_time"], ascending=[self.mode == "min", True],
                                  kind="stable", na_position="last").reset_index(drop=True)

    def best_trial_id(self) -> int | None:
        """The trial with the best value (the same one the tuner, MLflow and the CLI name)."""
        values = self.trial_values()
        if not values:
            return None
        best = None
        for trial_id, value in values.items():
            if best is None or value.better_than(values[best], self.mode) or \
                    (value.value == values[best].value and value.time < values[best].time):
                best = trial_id
        return best

    def best_value(self) -> float | None:
        trial_id = self.best_trial_id()
        return None if trial_id is None else self.trial_values()[trial_id].value

    def best_row(self) -> pd.Series | None:
        """The report the best value came from."""
        trial_id = self.best_trial_id()
        if trial_id is None:
            return None
        best = self.trial_values()[trial_id]
        rows = self._valid()
        rows = rows[(rows["trial_id"] == trial_id)
                    & (pd.to_numeric(rows[self.metric]) == best.value)]
        return rows.iloc[0]

    def best_config(self) -> dict[str, Any] | None:
        trial_id = self.best_trial_id()
        if trial_id is None:
            return None
        trial = self.state.get("trials", {}).get(str(trial_id))
        if trial is not None:
            return dict(trial["config"])
        row = self.best_row()
        if row is None:
            return None
        return {c[len(CONFIG_PREFIX):]: row[c] for c in self.config_columns}

    def num_trials(self) -> int:
        """Trials started (from the state; trials that never reported count too)."""
        known = {int(k) for k in self.state.get("trials", {})}
        if not self.results.empty:
            known |= {int(t) for t in self.results["trial_id"].unique()}
        return len(known)

    def trajectory(self) -> pd.DataFrame:
        """Incumbent over time: columns time, best (best value so far), trial_id (its trial)."""
        valid = self._valid()
        if valid.empty:
            return pd.DataFrame(columns=["time", "best", "trial_id"])
        valid = valid.sort_values("time", kind="stable")
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
        """One row per trial (by id): status, its value (the metric's best report, in the
        experiment's mode), the step and time of that report, number of reports, the last
        reported values of the other metrics, and its config (`config_<name>` columns).

        Status `completed` means the trial ran to its end (e.g. max_t), `stopped` that the
        scheduler stopped it early (or the experiment ended while it ran)."""
        state_trials = self.state.get("trials", {})
        if self.results.empty and not state_trials:
            return self.results
        if self.results.empty:
            frame = pd.DataFrame({"trial_id": sorted(int(k) for k in state_trials)})
            frame["status"] = None
            frame["num_reports"] = 0
        else:
            frame = self.results.groupby("trial_id", sort=True).tail(1).set_index("trial_id")
            frame["num_reports"] = self.results.groupby("trial_id").size()
            missing = sorted({int(k) for k in state_trials} - set(frame.index.astype(int)))
            if missing:
                extra = pd.DataFrame(index=pd.Index(missing, name="trial_id"))
                extra["num_reports"] = 0
                frame = pd.concat([frame, extra]).sort_index()
            frame = frame.reset_index()
        frame["num_reports"] = frame["num_reports"].fillna(0).astype(int)
        if state_trials:
            statuses = {int(k): v["status"] for k, v in state_trials.items()}
            frame["status"] = [statuses.get(int(i), s)
                               for i, s in zip(frame["trial_id"], frame["status"], strict=True)]
            for name, values in _state_configs(state_trials).items():
                if name not in frame.columns:
                    frame[name] = None
                frame[name] = [values.get(int(i), v) if v is None or v != v else v
                               for i, v in zip(frame["trial_id"], frame[name], strict=True)]
        if self.metrics:
            values = self.trial_values()
            frame[self.metric] = [values[t].value if t in values else np.nan
                                  for t in frame["trial_id"].astype(int)]
            frame["best_step"] = [values[t].step if t in values else np.nan
                                  for t in frame["trial_id"].astype(int)]
            frame["best_time"] = [values[t].time if t in values else np.nan
                                  for t in frame["trial_id"].astype(int)]
        reasons = {int(k): v.get("failure_reason") for k, v in state_trials.items()}
        if any(reasons.values()):
            frame["failure_reason"] = [reasons.get(int(i)) for i in frame["trial_id"]]
        frame["trial_id"] = frame["trial_id"].astype(int)
        return frame

    def pareto_front(self, metrics: Sequence[str] | None = None,
                     modes: Sequence[str] | None = None) -> pd.DataFrame:
        """Non-dominated reports for several metrics (defaults: the experiment's metrics), of
        trials that did not fail (a failed one is never best), best first in the first; with
        a constraint, of the feasible reports."""
        metrics = list(metrics or self.metrics)
        modes = list(modes or self.modes)
        if self.results.empty or any(m not in self.results.columns for m in metrics):
            return self.results.iloc[0:0]
        failed = self.results["trial_id"].isin(list(self.failed_trial_ids()))
        frame = self.results[~failed.to_numpy() & self._feasible()].dropna(subset=metrics)
        values = frame[metrics].to_numpy(dtype=float)
        signs = np.array([1.0 if m == "min" else -1.0 for m in modes])
        mask = pareto_mask(values * signs)
        return frame[mask].sort_values(metrics[0], ascending=modes[0] == "min"
                                       ).reset_index(drop=True)

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

    def plot_learning_curves(self, path: str | os.PathLike[str] | None = None,
                             highlight: int = 5) -> Path:
        """Save every trial's curve of the metric against its step as a PNG (default
        `<experiment>/learning_curves.png`): all trials thin and grey, the `highlight` best in
        colour, each marked at its best report."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker

        path = Path(path) if path is not None else self.path / "learning_curves.png"
        fig, ax = plt.subplots(figsize=(7, 4))
        valid = self._valid()
        resource = self.resource_attr
        step_of = (lambda g: pd.to_numeric(g[resource], errors="coerce").to_numpy()) \
            if resource and resource in valid.columns else \
            (lambda g: np.arange(1, len(g) + 1))
        if not valid.empty:
            values = self.trial_values()
            top = [int(t) for t in self.ranked().dropna(subset=[self.metric])["trial_id"]
                   .head(highlight)]
            for trial_id, group in _by_trial(valid):
                if trial_id not in top:
                    ax.plot(step_of(group), pd.to_numeric(group[self.metric]), color="0.7",
                            linewidth=0.6, alpha=0.6)
            for rank, trial_id in enumerate(top):
                group = valid[valid["trial_id"] == trial_id]
                line, = ax.plot(step_of(group), pd.to_numeric(group[self.metric]), linewidth=1.8,
                                label=f"trial {trial_id}" + (" (best)" if rank == 0 else ""))
                best = values[int(trial_id)]
                ax.scatter([best.step], [best.value], color=line.get_color(), s=30, zorder=3)
            ax.legend(fontsize=8, loc="best")
            all_values = pd.to_numeric(valid[self.metric]).to_numpy()
            low, high = np.percentile(all_values, [0, 98] if self.mode == "min" else [2, 100])
            margin = 0.05 * (high - low or abs(high) or 1.0)
            ax.set_ylim(low - margin, high + margin)  # a few diverged curves off the top
            steps = step_of(valid)
            if np.nanmin(steps) > 0 and np.nanmax(steps) >= 10 * np.nanmin(steps):
                ax.set_xscale("log")  # rungs of multi-fidelity methods are geometric
                ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel(resource or "report")
        ax.set_ylabel(f"{self.metric} ({self.mode})" if self.metrics else "value")
        ax.set_title(f"Learning curves of all {self.num_trials()} trials: {self.path.name}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def _state_configs(trials: Mapping[str, Any]) -> dict[str, dict[int, Any]]:
    """`config_<name>` -> trial id -> value, from the state's trials (for trials without rows)."""
    out: dict[str, dict[int, Any]] = {}
    for key, trial in trials.items():
        for name, value in (trial.get("config") or {}).items():
            if not isinstance(value, list | dict | tuple):
                out.setdefault(f"{CONFIG_PREFIX}{name}", {})[int(key)] = value
    return out


def load_experiment(path: str | os.PathLike[str]) -> Experiment:
    """Read an experiment folder: its results frame, spec and state. Never takes the lock: for
    a running or killed experiment, the rows journaled after the last snapshot are added
    (their decision is missing for the last poll, when the tuner had not decided it yet)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no experiment folder at {path}")
    state = read_state(path)
    info = (state or {}).get("store", {})
    rows = read_rows(path, info.get("num_rows"))
    spec_path = path / SPEC_FILE
    try:
        spec = json.loads(spec_path.read_text()) if spec_path.exists() else None
    except (OSError, ValueError) as err:
        raise unreadable(spec_path, err) from None
    if spec is None and state is not None:
        spec = {"metric": state.get("metric"), "mode": state.get("mode", "min")}
    records = Journal(path).read(int(info.get("segment", 0)))
    if records:
        state = _with_journal(state or {"trials": {}}, rows, records)
    configs = {int(tid): t["config"] for tid, t in (state or {}).get("trials", {}).items()}
    results = results_frame(rows, configs) if rows else pd.DataFrame()
    return Experiment(path, results, spec, state, _last_exit(records))


def _last_exit(records: Sequence[Mapping[str, Any]]) -> tuple[str, bool] | None:
    """The last session's `x` record (`ExperimentStore.journal_exit`), if no session began
    after it."""
    last = None
    for record in records:
        if "n" in record:
            last = None
        elif "x" in record:
            last = (str(record["x"][0]), bool(record["x"][1]))
    return last


def _with_journal(state: dict[str, Any], rows: list[dict[str, Any]],
                  records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Add the journal's report rows to `rows`; the state with the journal's trials and
    statuses. A batch's decisions follow it (`d`); a batch followed by another record of its
    segment made no rows; the last batch of a segment without one was not decided yet."""
    trials = {tid: dict(t) for tid, t in state.get("trials", {}).items()}
    pending: list[list[Any]] | None = None

    def settle(decisions: dict[int, list[Any]] | None) -> None:
        for index, (kind, tid, time, metrics, reason, *_) in enumerate(pending or []):
            trial = trials.get(str(tid))
            if kind != "result":
                if trial is not None:
                    trial["status"] = kind
                    if reason:
                        trial["failure_reason"] = reason
                continue
            if decisions is not None and index not in decisions:
                continue
            status, decision = decisions[index] if decisions is not None else ("running", None)
            rows.append({**(metrics or {}), "trial_id": tid, "time": time, "status": status,
                         "decision": decision})
            if trial is not None:
                trial["status"] = status

    for record in records:
        if "d" in record:
            if pending is not None:
                settle({d[0]: d[1:3] for d in record["d"]})
            pending = None
            continue
        if pending is not None:  # an `x` record (the session's exit) decided nothing either
            settle(None if "end" in record or "x" in record else {})
            pending = None
        if "s" in record:
            tid, config, source = record["s"]
            trials[str(tid)] = {"trial_id": tid, "config": config, "status": "running",
                                "checkpoint_from": source}
        elif "b" in record:
            pending = record["b"]
    settle(None)
    return {**state, "trials": trials}


def _by_trial(frame: pd.DataFrame) -> Iterator[tuple[int, pd.DataFrame]]:
    """Each trial's id and rows, by id (pandas' stubs type a group key as any scalar)."""
    for trial_id, group in frame.groupby("trial_id", sort=True):
        yield int(cast(float, trial_id)), group
