"""MLflow tracking of an experiment, as a tuner callback, off the tuner's critical path.

One parent run per experiment (a handful of the redacted spec's fields as params, the whole
spec as a `spec.json` artifact; a markdown note with the best trial and the Prefect flow run;
tags: scheduler, backend, metric, Prefect flow run id), one child run per trial
(`mlflow.parentRunId` set; its config as params; every reported metric with `step` = the
trial's resource level (`resource_attr`, default "epoch"), else the report's index; its status
as the `tunesmith.status` tag). At the end the parent gets the best config and value, the
counts, the results table and `trials.csv` (every trial: status, value, config, child run id;
and, through `log_artifact`, the trajectory plot).

Which trials get a child run: on real backends every trial, written while it runs. In a
simulated experiment (thousands of trials in seconds) the best `child_runs` trials (default
50; all of them in a smaller experiment), chosen and written when the session ends, from the
store's rows; the others are rows of `trials.csv` and `results.parquet` on the parent run.

The callback only queues records; a background thread (`flows._mlflow_writer`) writes them in
batches, so the tuner never waits on MLflow. `close()` drains the queue. When MLflow is
unreachable or fails, a warning is logged, tracking stops and the experiment goes on: the
on-disk store is the complete record (a later resume fills MLflow in from it). A resumed
experiment reuses its parent run (its id is kept in `<store>/mlflow.json`; else found by the
`tunesmith.experiment` tag).
"""

from __future__ import annotations

import heapq
import json
import math
import os
import queue
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import pandas as pd

from flows._mlflow_writer import (
    BEST_CONFIG_TAG,
    BEST_VALUE_TAG,
    STOP,
    TRIALS_FILE,
    Artifact,
    Finish,
    MlflowWriter,
    Segment,
    WriterSettings,
    now_ms,
    row_metrics,
)
from flows._trial_logs import TrialLogs, find_trial_logs
from flows.mlflow_client import SQLITE, sqlite_database
from flows.status import front_rows
from hpo_core.backend import ClockKind, TrialContext
from hpo_core.secrets import (
    MASK,
    is_reference,
    is_secret_name,
    mask_text,
    redact,
    spec_secret_names,
)
from hpo_core.spec import ExperimentSpec
from hpo_core.store import (
    CONFIG_PREFIX,
    RESULTS_FILE,
    dumps,
    load_experiment,
    write_results,
)
from hpo_core.trial import (
    ENDED_STATUSES,
    Decision,
    Trial,
    TrialResult,
    TrialStatus,
    counts_text,
    status_text,
    trial_counts,
)
from hpo_core.trial_value import (
    TrialValue,
    best_report,
    format_value,
    is_feasible,
    metric_value,
    no_best,
    report_step,
    sentence,
)
from hpo_core.tuner import Tuner, TunerCallback

__all__ = ["MlflowTracker", "redact", "resolve_tracking_uri", "ui_command", "flatten"]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: `mlflow ui` without its job-execution workers and with one web worker: it starts in seconds
#: and a few hundred MB on a small machine (the defaults took 55 s and 3.6 GB on 2 cores)
FAST_UI = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --workers 1"
#: MLflow 3.17's UI shows the GenAI pages unless the URL (or the "Model training" toggle, which
#: it remembers) asks for the machine-learning ones; every link we print asks for them
UI_VIEW = "workflowType=machine_learning"
SPEC_PARAMS = ("scheduler", "backend", "metric", "mode", "n_workers", "seed", "stop",
               "scheduler_options", "backend_options", "max_failures")
DEFAULT_ARTIFACT_DIR = "mlartifacts"
#: a simulated experiment's trials with a child run: the best ones, at most this many (each
#: costs MLflow ~30-50 ms of CPU through its client on SQLite; a simulated trial costs ~1 ms)
SIMULATED_CHILD_RUNS = 50
#: the Pareto front's reports listed in the parent run's note (several metrics)
FRONT_NOTE_ROWS = 20
# Fail fast against an unreachable server (each only if the user did not set it).
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # two lines per child run, else
}


def resolve_tracking_uri(uri: str | None = None) -> str:
    """`uri`, else $MLFLOW_TRACKING_URI, else `sqlite:///mlflow.db`; SQLite paths made absolute."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    database = sqlite_database(uri)
    if database is not None:
        query = uri.partition("?")[1:]
        uri = f"{SQLITE}{database}{''.join(query)}"
    return uri


def default_artifact_location(tracking_uri: str, experiment_name: str) -> str | None:
    """Where a new MLflow experiment keeps artifacts: `mlartifacts/` next to a SQLite file (or
    in the working directory for other databases and in-memory SQLite); a server decides for
    itself."""
    scheme = urlparse(tracking_uri).scheme
    if scheme in ("http", "https", "databricks", "databricks-uc", "uc"):
        return None
    database = sqlite_database(tracking_uri)
    root = (database.parent if database is not None else Path.cwd()) / DEFAULT_ARTIFACT_DIR
    return (root / experiment_name).as_uri()


def ui_command(tracking_uri: str) -> str:
    """How to look at the runs: an `mlflow ui` command, or the server's address."""
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return f"open {tracking_uri}"
    return f"{FAST_UI} --backend-store-uri {tracking_uri}"


def ui_base_url(tracking_uri: str) -> str:
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return tracking_uri.rstrip("/")
    return "http://127.0.0.1:5000"


def spec_params(spec: Mapping[str, Any]) -> dict[str, str]:
    """A handful of the (redacted) spec's fields as the parent run's params; the whole spec is
    its `spec.json` artifact. Options are JSON text, one param each."""
    out: dict[str, str] = {}
    for key in SPEC_PARAMS:
        value = spec.get(key)
        if value is None or value == {}:
            continue
        out[key] = value if isinstance(value, str) else json.dumps(value, default=str)
    return out


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings as dotted keys; lists and other values as JSON text."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        elif value is None or value == {}:
            continue
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value, default=str)
    return out


class MlflowTracker(TunerCallback):
    """Mirrors an experiment into MLflow (see the module docstring).

    Args:
        spec: the experiment.
        tracking_uri: overrides `spec.tracking_uri` (default: $MLFLOW_TRACKING_URI, else
            `sqlite:///mlflow.db` with artifacts in `./mlartifacts`).
        experiment_name: the MLflow experiment (default: `spec.name`); re-tuning runs share one.
        tags: extra tags of the parent run (e.g. the Prefect flow run id).
        flush_interval: on real backends, running trials' reports are written at least this
            often (wall seconds).
        child_runs: in a simulated experiment, how many trials get a child run: the best
            ones, written when the session ends (every trial is in the parent's `trials.csv`).
    """

    def __init__(self, spec: ExperimentSpec, tracking_uri: str | None = None,
                 experiment_name: str | None = None, tags: Mapping[str, str] | None = None,
                 flush_interval: float = 10.0, child_runs: int = SIMULATED_CHILD_RUNS):
        self.spec = spec
        self.tracking_uri = resolve_tracking_uri(tracking_uri or spec.tracking_uri)
        self.experiment_name = experiment_name or spec.name
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.flush_interval = flush_interval
        self.child_runs = child_runs
        self.error: str | None = None
        self._records: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: MlflowWriter | None = None
        self._enabled = True
        self._realtime = False
        self._choose_at_end = False  # simulated: child runs for the best trials, at the end
        self._ended: dict[int, int] = {}
        self._pending: dict[int, list[tuple[Mapping[str, Any], int]]] = {}
        self._started: dict[int, int] = {}
        self._flushed: dict[int, float] = {}
        self._trial_files: TrialContext | None = None  # real backends: where trials keep output
        self._secret_names: set[str] = set()
        self._best: dict[int, TrialValue] = {}  # each trial's value so far (its best report)
        self._metric = spec.metric if isinstance(spec.metric, str) else spec.metric[0]
        self._mode = spec.mode if isinstance(spec.mode, str) else spec.mode[0]
        self._resource_attr: str | None = None
        self._constraint: str | None = None  # the method's; only feasible reports can be best
        self._folder: Path | None = None  # masked copies waiting for the writer
        if urlparse(self.tracking_uri).scheme in ("http", "https"):
            for name, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(name, value)

    # -- what callers read ---------------------------------------------------------------------
    @property
    def parent_run_id(self) -> str | None:
        return self._writer.parent_run_id if self._writer else None

    @property
    def experiment_id(self) -> str | None:
        return self._writer.experiment_id if self._writer else None

    @property
    def ui_command(self) -> str:
        return ui_command(self.tracking_uri)

    def run_url(self, run_id: str | None = None) -> str | None:
        """The MLflow UI address of the parent run (or of `run_id`)."""
        run_id = run_id or self.parent_run_id
        if run_id is None or self.experiment_id is None:
            return None
        return f"{ui_base_url(self.tracking_uri)}/#/experiments/{self.experiment_id}/runs/" \
               f"{run_id}?{UI_VIEW}"

    def child_run_ids(self) -> dict[int, str]:
        """Trial id -> child run id, for the trials written so far (after `close()`: all)."""
        writer = self._writer
        return {tid: run for tid, (run, _, _) in writer._children.items()} if writer else {}

    # -- tuner callback ------------------------------------------------------------------------
    def on_tuning_start(self, tuner: Tuner) -> None:
        spec = self.spec.to_dict()
        secrets = spec_secret_names(spec)
        store = tuner.store
        store_path = Path(store.path).resolve() if store is not None else None
        self._realtime = tuner.backend.clock_kind is ClockKind.WALL
        self._choose_at_end = not self._realtime and store is not None
        self._trial_files = store.trial_context() if store is not None and self._realtime \
            else None
        self._secret_names = secrets
        self._resource_attr = tuner.scheduler.resource_attr
        self._constraint = tuner.scheduler.constraint
        self._best = _restored_best(store.rows() if store is not None else [], self._metric,
                                    self._mode, self._resource_attr, self._constraint)
        settings = WriterSettings(
            tracking_uri=self.tracking_uri,
            experiment_name=self.experiment_name,
            run_key=f"{self.spec.name}@{store_path or '-'}",
            run_name=self.spec.name,
            artifact_location=default_artifact_location(self.tracking_uri, self.experiment_name),
            parent_tags={
                "scheduler": self.spec.scheduler,
                "backend": self.spec.backend,
                "metric": _tag_text(self.spec.metric),
                "mode": _tag_text(self.spec.mode),
                "tunesmith.name": self.spec.name,
                "tunesmith.store": str(store_path or ""),
                **self.tags,
            },
            parent_params=spec_params(redact(spec, secrets)),
            spec_json=dumps(redact(spec, secrets)),
            store_path=store_path,
            resource_attr=tuner.scheduler.resource_attr or "epoch",
            metric=self._metric,
            mode=self._mode,
            constraint=self._constraint,
            ui_base=ui_base_url(self.tracking_uri),
            restored_trials={
                tid: (dict(t.config), t.status.value, t.failure_reason)
                for tid, t in tuner.trials.items()
            },
            restored_rows=list(store.rows()) if store is not None else [],
            restored_logs={tid: self._logs(t) for tid, t in tuner.trials.items()
                           if t.status in ENDED_STATUSES},
            write_missing=not self._choose_at_end,
        )
        self._writer = MlflowWriter(settings, self._records, self._on_disable)
        self._writer.start()

    def on_trial_start(self, trial: Trial) -> None:
        self._started.setdefault(trial.trial_id, now_ms())
        if self._realtime:
            self._flushed[trial.trial_id] = time.monotonic()

    def on_trial_result(self, trial: Trial, result: TrialResult, decision: Decision) -> None:
        if not self._enabled:
            return
        if not self._choose_at_end:
            self._pending.setdefault(trial.trial_id, []).append((result.metrics, now_ms()))
        self._add_value(trial.trial_id, result.metrics, trial.num_results, result.time)
        if self._realtime and decision == Decision.CONTINUE and \
                time.monotonic() - self._flushed.get(trial.trial_id, 0.0) >= self.flush_interval:
            self._flushed[trial.trial_id] = time.monotonic()
            self._segment(trial, end=False)

    def on_trial_complete(self, trial: Trial) -> None:
        self._trial_end(trial)

    def on_trial_error(self, trial: Trial) -> None:
        self._trial_end(trial)

    def _trial_end(self, trial: Trial) -> None:
        if self._choose_at_end:
            self._ended[trial.trial_id] = now_ms()
        else:
            self._segment(trial, end=True)

    def on_tuning_end(self, tuner: Tuner) -> None:
        if not self._enabled:
            return
        result = tuner.result()
        status = tuner.status
        metric = tuner.scheduler.metric
        counts = trial_counts((t.status for t in tuner.trials.values()), status.num_results,
                              ended=True)
        metrics = {("num_results" if k == "results" else "num_trials" if k == "trials"
                    else f"num_trials_{k}"): float(v) for k, v in counts.items()}
        metrics["experiment_time"] = float(tuner.now())
        tags = {"tunesmith.end_reason": result.reason}
        if result.best_config is not None and result.best_value is not None:
            metrics[f"best_{metric}"] = float(result.best_value)
            tags[BEST_CONFIG_TAG] = json.dumps(redact(result.best_config, self._secret_names), default=str)
            tags[BEST_VALUE_TAG] = repr(float(result.best_value))
            tags["tunesmith.best_trial_id"] = str(result.best_trial_id)
        results = self._results(tuner)
        if tuner.interruption is not None and not self._choose_at_end:
            for trial in tuner.trials.values():
                if trial.status == TrialStatus.RUNNING:
                    self._end_interrupted(trial, results)
        artifacts = [self._masked_copy(results)] if results is not None and not results.empty \
            else []
        chosen = self._chosen(tuner) if self._choose_at_end else None
        if chosen is not None:
            self._queue_chosen(tuner, chosen)
        self._records.put(Finish(_run_status(tuner), tags, metrics, artifacts,
                                 note=self._note(tuner, counts, chosen),
                                 best_trial_id=result.best_trial_id,
                                 trials=self._trials_table(tuner),
                                 only_trials=None if chosen is None else frozenset(chosen),
                                 trials_path=self._temp_folder() / TRIALS_FILE))

    def _end_interrupted(self, trial: Trial, results: pd.DataFrame | None) -> None:
        """A trial the interruption found running: its child run gets its last reports (those
        since its last segment, and those the backend handed over as it ended the trial, which
        were journaled without a callback: its rows in `results` past those the tuner handled)
        and ends KILLED (`interrupted`); a resume continues it."""
        tid = trial.trial_id
        reports = self._pending.pop(tid, [])
        first_index = trial.num_results - len(reports)
        if results is not None and not results.empty:
            stamp = now_ms()
            rows = results[results["trial_id"] == tid].iloc[trial.num_results:]
            records = cast(list[dict[str, Any]], rows.to_dict(orient="records"))
            for index, row in enumerate(records, trial.num_results + 1):
                metrics = {k: v for k, v in row_metrics(row).items()  # what it reported
                           if not k.startswith(CONFIG_PREFIX) and v is not None
                           and not (isinstance(v, float) and math.isnan(v))}
                reports.append((metrics, stamp))
                self._add_value(tid, metrics, index, float(row.get("time", 0.0)))
        self._records.put(Segment(tid, dict(trial.config), "interrupted", reports, first_index,
                                  self._started.get(tid) or now_ms(), now_ms(),
                                  logs=self._logs(trial), best=self._best.get(tid)))

    def _add_value(self, trial_id: int, metrics: Mapping[str, Any], index: int,
                   time_: float) -> None:
        """Keep the trial's value (its best report) up to date with its `index`-th report."""
        value = metric_value(metrics, self._metric)
        if value is not None and is_feasible(metrics, self._constraint):
            candidate = TrialValue(value, report_step(metrics, index, self._resource_attr), time_)
            if candidate.better_than(self._best.get(trial_id), self._mode):
                self._best[trial_id] = candidate

    def _chosen(self, tuner: Tuner) -> list[int]:
        """The trials of a simulated experiment that get a child run: the best `child_runs`
        by their value (trials without one last, then by id); with several metrics, every
        trial with a report on the Pareto front first."""
        sign = 1.0 if self._mode == "min" else -1.0

        def rank(trial_id: int) -> tuple[int, float, int]:
            best = self._best.get(trial_id)
            if best is None or math.isnan(best.value):
                return (1, 0.0, trial_id)
            return (0, sign * best.value, trial_id)

        best = heapq.nsmallest(max(self.child_runs, 0), tuner.trials, key=rank)
        if isinstance(self.spec.metric, str) or tuner.store is None:
            return best
        front = sorted({int(row["trial_id"]) for _, row in front_rows(tuner)})
        return front + [t for t in best if t not in front][: max(self.child_runs - len(front), 0)]

    def _queue_chosen(self, tuner: Tuner, chosen: list[int]) -> None:
        """Queue the chosen trials' segments: all their reports, from the store's rows (the
        writer skips what an earlier session wrote)."""
        rows: dict[int, list[Mapping[str, Any]]] = {tid: [] for tid in chosen}
        for row in tuner.store.rows() if tuner.store is not None else []:
            trial_rows = rows.get(int(row["trial_id"]))
            if trial_rows is not None:
                trial_rows.append(row)
        for tid in chosen:
            trial = tuner.trials[tid]
            start = self._started.get(tid) or now_ms()
            self._records.put(Segment(
                trial_id=tid, config=dict(trial.config), status=trial.status.value,
                # a distinct timestamp per report: MLflow drops a repeated (key, value, step, time)
                reports=[(row_metrics(r), start + i) for i, r in enumerate(rows[tid])],
                first_index=0, start_ms=start, end_ms=self._ended.get(tid) or now_ms(),
                failure_reason=trial.failure_reason, best=self._best.get(tid)))

    def _trials_table(self, tuner: Tuner) -> list[dict[str, Any]]:
        """One row per trial for `trials.csv` (the writer adds the child run ids); configs and
        text masked like everything else MLflow gets."""
        table = []
        for tid, trial in sorted(tuner.trials.items()):
            best = self._best.get(tid)
            row: dict[str, Any] = {
                "trial_id": tid, "status": status_text(trial.status, ended=True),
                self._metric: best.value if best else None,
                "best_step": best.step if best else None, "num_reports": trial.num_results}
            for name, value in redact(trial.config, self._secret_names).items():
                row[CONFIG_PREFIX + str(name)] = _cell(value)
            table.append(row)
        return table

    def _note(self, tuner: Tuner, counts: Mapping[str, int], chosen: list[int] | None) -> str:
        """The parent run's description (markdown): the best trial, counts, the Prefect run."""
        result = tuner.result()
        metric, mode = tuner.scheduler.metric, tuner.scheduler.mode
        lines = [f"**{self.spec.name}**: {self.spec.scheduler} on the {self.spec.backend} "
                 f"backend, {metric} ({mode}).", ""]
        best = self._best.get(result.best_trial_id) if result.best_trial_id is not None else None
        if result.best_config is None or result.best_value is None:
            lines += [f"{sentence(no_best(metric, self._constraint))}.", ""]
        else:
            step = f", {self._resource_attr or 'report'} {format_value(best.step)}" if best else ""
            lines += [f"Best {metric}: **{format_value(result.best_value)}**, "
                      f"[trial {result.best_trial_id}]({{best_run_url}}){step}.", "",
                      "| hyperparameter | value |", "|---|---|",
                      *[f"| {k} | {format_value(v)} |"
                        for k, v in redact(result.best_config, self._secret_names).items()], ""]
        if not isinstance(self.spec.metric, str):
            lines += self._front_note(tuner, list(self.spec.metric))
        lines += [f"Trials: {counts_text(counts)}; {counts['results']} reports. "
                  f"Ended: {mask_text(result.reason)}.", ""]
        if chosen is not None and len(chosen) < len(tuner.trials):
            which = "the Pareto front's trials, then the best by the first metric" \
                if not isinstance(self.spec.metric, str) else "the best"
            lines += [f"Child runs: {which}, {len(chosen)} of {len(tuner.trials)} trials (a "
                      f"simulated experiment); every trial, with its child run id where it has "
                      f"one, is in `{TRIALS_FILE}`, every report in `{RESULTS_FILE}`.", ""]
        prefect_url = self.tags.get("prefect.flow_run_url")
        if prefect_url:
            lines += [f"Prefect flow run: [{self.tags.get('prefect.flow_run_id', prefect_url)}]"
                      f"({prefect_url})", ""]
        return "\n".join(lines)

    def _front_note(self, tuner: Tuner, metrics: list[str]) -> list[str]:
        """The note's lines on the Pareto front of several metrics: its size and its first
        `FRONT_NOTE_ROWS` reports."""
        modes = tuner.scheduler.modes
        rows = [row for _, row in front_rows(tuner)]
        objectives = ", ".join(f"{m} ({mode})" for m, mode in zip(metrics, modes, strict=True))
        if not rows:
            return [f"Pareto front of {objectives}: "
                    f"{no_best('them all', tuner.scheduler.constraint)}.", ""]
        step = self._resource_attr or "epoch"  # what counts a trial's progress (as the tuner)
        trials = len({row["trial_id"] for row in rows})
        lines = [f"Pareto front of {objectives}: {len(rows)} reports of {trials} trials"
                 + (f" (the first {FRONT_NOTE_ROWS} here; all of them in "
                    f"`tunesmith show {self.spec.name}`)" if len(rows) > FRONT_NOTE_ROWS
                    else "") + ".", "",
                 f"| trial | {' | '.join(metrics)} | {step} |",
                 "|---|" + "---|" * (len(metrics) + 1)]
        for row in rows[:FRONT_NOTE_ROWS]:
            lines.append(f"| {row['trial_id']} | "
                         + " | ".join(format_value(row[m]) for m in metrics)
                         + f" | {format_value(row.get(step))} |")
        return [*lines, ""]

    # -- after tuning --------------------------------------------------------------------------
    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Attach a file to the parent run (queued like everything else)."""
        if self._enabled:
            self._records.put(Artifact(Path(path), artifact_path))

    def close(self, timeout: float | None = 600.0) -> bool:
        """Write everything queued and stop the writer; False if it did not finish in time."""
        writer = self._writer
        if writer is None:
            return True
        self._records.put(STOP)
        writer.join(timeout)
        if self._folder is not None and not writer.is_alive():
            shutil.rmtree(self._folder, ignore_errors=True)
        if writer.is_alive():
            self._on_disable(f"MLflow writes still pending after {timeout}s; "
                             "the rest is dropped (the experiment store has everything)")
            return False
        return True

    # -- internals -----------------------------------------------------------------------------
    @staticmethod
    def _results(tuner: Tuner) -> pd.DataFrame | None:
        """Every report row: the final snapshot's results.parquet; for an interrupted run (cut
        short in the middle of an event, it ends without a snapshot) also the rows journaled
        after its last snapshot."""
        if tuner.store is None:
            return None
        if tuner.interruption is not None:
            return load_experiment(tuner.store.path).results
        results = Path(tuner.store.path) / RESULTS_FILE
        # no threads: see `hpo_core.store.store.read_rows`
        return pd.read_parquet(results, use_threads=False) if results.exists() else None

    def _masked_copy(self, frame: pd.DataFrame) -> Path:
        """results.parquet as MLflow gets it: secret config columns masked, text masked."""
        masked: dict[str, str] = {}  # each distinct text masked once (a column repeats a few)
        for column in frame.columns:
            name = column[len(CONFIG_PREFIX):] if column.startswith(CONFIG_PREFIX) else None
            secret = name is not None and is_secret_name(name, self._secret_names)
            if not secret and frame[column].dtype != object:
                continue
            # structured values (a reference, a metric reported as a list) as JSON text, as the
            # store's results.parquet keeps them; then masked
            values = [v if v is None or isinstance(v, str | bool | int | float) else dumps(v)
                      for v in frame[column]]
            frame[column] = [v if _is_reference_text(v) else MASK for v in values] if secret \
                else [_masked(v, masked) if isinstance(v, str) else v for v in values]
        target = self._temp_folder() / RESULTS_FILE
        write_results(frame, target)
        return target

    def _temp_folder(self) -> Path:
        """Where files wait for the writer (removed by `close()`)."""
        self._folder = self._folder or Path(tempfile.mkdtemp(prefix="tunesmith-mlflow-"))
        return self._folder

    def _segment(self, trial: Trial, end: bool) -> None:
        reports = self._pending.pop(trial.trial_id, [])
        if not self._enabled:
            return
        self._records.put(Segment(
            trial_id=trial.trial_id,
            config=dict(trial.config),
            status=trial.status.value if end else "running",
            reports=reports,
            first_index=trial.num_results - len(reports),
            start_ms=self._started.get(trial.trial_id) or now_ms(),
            end_ms=now_ms() if end else None,
            failure_reason=trial.failure_reason if end else None,
            logs=self._logs(trial) if end else None,
            best=self._best.get(trial.trial_id) if end else None,
        ))

    def _logs(self, trial: Trial) -> Callable[[], TrialLogs | None] | None:
        """What finds the trial's output files, for the writer's thread to call."""
        files = self._trial_files
        if files is None:
            return None
        secrets = [v for k, v in trial.config.items() if is_secret_name(k, self._secret_names)]
        return partial(_find_logs, files, trial.trial_id, secrets)

    def _on_disable(self, message: str) -> None:
        self.error = message
        self._enabled = False
        self._pending.clear()


def _find_logs(files: TrialContext, trial_id: int, secrets: list[Any]) -> TrialLogs | None:
    return find_trial_logs(files.trial_dir(trial_id), secrets)


def _restored_best(rows: Sequence[Mapping[str, Any]], metric: str, mode: str,
                   resource_attr: str | None, constraint: str | None
                   ) -> dict[int, TrialValue]:
    """Each trial's value from the store's rows of earlier sessions (a resumed experiment)."""
    by_trial: dict[int, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_trial.setdefault(int(row["trial_id"]), []).append(row)
    out = {}
    for trial_id, trial_rows in by_trial.items():
        best = best_report(trial_rows, metric, mode, resource_attr, constraint)
        if best is not None:
            out[trial_id] = best
    return out


def _tag_text(value: str | Sequence[str]) -> str:
    """A spec's metric or mode as a tag: itself, or a JSON list for several objectives."""
    return value if isinstance(value, str) else json.dumps(list(value))


def _run_status(tuner: Tuner) -> str:
    """The parent run's MLflow status: FINISHED, FAILED (an error) or KILLED (a signal,
    Ctrl-C, a cancellation)."""
    if isinstance(tuner.interruption, Exception):  # an error, or too many failed trials
        return "FAILED"
    return "FINISHED" if tuner.end_reason else "KILLED"


def _masked(text: str, cache: dict[str, str]) -> str:
    """`mask_text(text)`, once per distinct text."""
    if text not in cache:
        cache[text] = mask_text(text)
    return cache[text]


def _cell(value: Any) -> Any:
    """A config value as a `trials.csv` cell: numbers as they are, text masked, others JSON."""
    if value is None or isinstance(value, bool | int | float):
        return value
    return mask_text(value if isinstance(value, str) else json.dumps(value, default=str))


def _is_reference_text(value: Any) -> bool:
    """A secret reference as results.parquet stores it (JSON text): it holds no secret."""
    try:
        return isinstance(value, str) and is_reference(json.loads(value))
    except ValueError:
        return False
