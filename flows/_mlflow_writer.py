"""The background thread that does every MLflow write of an experiment (see `flows.tracking`).

The tuner only puts small records on a queue; this thread turns them into calls of MLflow's
public client (`MlflowClient`; nothing below it): one child run per written trial (created, one
`log_batch` with its config and every metric point, terminated; the trial's output files as
artifacts, see `flows._trial_logs`), the parent run at the start and at the end, with
`trials.csv` (every trial, and its child run id where it has one). It never raises: an
unreachable or failing MLflow disables it with a warning, and the experiment goes on.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flows._trial_logs import TrialLogs, upload_trial_logs
from flows.mlflow_client import open_client
from hpo_core.secrets import mask_text, redact
from hpo_core.store import ROW_COLUMNS, atomic_write_text
from hpo_core.trial_value import TrialValue, best_report

logger = logging.getLogger("flows.tracking")

PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
NOTE_TAG = "mlflow.note.content"
#: the experiment's kind: a UI without the GenAI / "Model training" toggle opens an experiment
#: with this value on its runs (ExperimentKind in MLflow's UI code); 3.17's UI has the toggle and
#: follows the URL's `workflowType` (see `flows.tracking.UI_VIEW`) or the user's last choice
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
EXPERIMENT_TAG = "tunesmith.experiment"
ROLE_TAG = "tunesmith.role"
TRIAL_TAG = "tunesmith.trial_id"
STATUS_TAG = "tunesmith.status"
REPORTS_TAG = "tunesmith.num_reports"
FAILURE_TAG = "tunesmith.failure_reason"
BEST_CONFIG_TAG = "tunesmith.best_config"
BEST_VALUE_TAG = "tunesmith.best_value"
#: a resume with a changed spec: which params changed (params are immutable in MLflow and
#: keep the first session's values), and each one's current value under CURRENT_PARAM_TAG<name>
CHANGED_PARAMS_TAG, CURRENT_PARAM_TAG = "tunesmith.changed_params", "tunesmith.current."
BEST_STEP_TAG = "tunesmith.best_step"
RUN_FILE = "mlflow.json"
TRIALS_FILE = "trials.csv"
RUN_ID_COLUMN = "mlflow_run_id"
MLFLOW_STATUS = {"completed": "FINISHED", "stopped": "FINISHED", "paused": "FINISHED",
                 "failed": "FAILED", "running": None, "pending": None,
                 "interrupted": "KILLED"}  # running when the tuner was interrupted
MAX_KEY, MAX_PARAM_VALUE, MAX_TAG_VALUE = 250, 6000, 8000
MAX_PARAMS_PER_BATCH, MAX_ENTITIES_PER_BATCH = 100, 1000
_BAD_KEY_CHARS = re.compile(r"[^\w\-. :/]")
MAX_RECORDS_PER_BATCH = 256
STOP = object()
MetricPoint = tuple[str, float, int, int]  # key, value, timestamp (ms), step


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Segment:
    """Reports of one trial since its last segment, and its status when the segment ended."""

    trial_id: int
    config: dict[str, Any]
    status: str
    reports: Sequence[tuple[Mapping[str, Any], int]]  # (metrics, wall time in ms)
    first_index: int  # reports of this trial written before this segment
    start_ms: int
    end_ms: int | None = None
    failure_reason: str | None = None
    # finds the output files to attach when the segment ended (called in the writer's thread:
    # file system calls cost the tuner nothing)
    logs: Callable[[], TrialLogs | None] | None = None
    best: TrialValue | None = None  # the trial's value so far (its best report), when it ended


@dataclass
class Finish:
    """The end of a tuning session: the parent run's summary."""

    status: str
    tags: dict[str, str]
    metrics: dict[str, float]
    artifacts: list[Path]
    note: str = ""  # markdown; `{best_run_url}` becomes the best trial's child run address
    best_trial_id: int | None = None
    #: every trial (id, status, value, config, ...): written as `trials.csv` to this path with
    #: each trial's child run id (empty where it has none), then logged to the parent run
    trials: list[dict[str, Any]] = field(default_factory=list)
    trials_path: Path | None = None
    #: the trials that keep a child run (a simulated experiment's best): the runs an earlier
    #: session wrote for others are deleted; None: every trial keeps its run
    only_trials: frozenset[int] | None = None


@dataclass
class Artifact:
    path: Path
    artifact_path: str | None = None


@dataclass
class WriterSettings:
    """What the writer needs to find or create the experiment's MLflow runs."""

    tracking_uri: str
    experiment_name: str
    run_key: str  # identifies the parent run: experiment name + store path
    run_name: str
    artifact_location: str | None
    parent_tags: dict[str, str]
    parent_params: dict[str, str]
    spec_json: str
    store_path: Path | None
    resource_attr: str
    ui_base: str = "http://127.0.0.1:5000"  # the MLflow UI, for links in the parent's note
    metric: str = ""  # each ended trial logs best_<metric> at the step of its best report
    mode: str = "min"
    constraint: str | None = None  # only its feasible reports can be a trial's best
    restored_trials: dict[int, tuple[dict[str, Any], str, str | None]] = field(default_factory=dict)
    restored_rows: list[Mapping[str, Any]] = field(default_factory=list)
    #: what finds the output files of each restored trial that ended (attached when its child
    #: run is written on resume, as when it ended live)
    restored_logs: dict[int, Callable[[], TrialLogs | None] | None] = field(default_factory=dict)
    #: on resume, write the child runs of restored trials that MLflow lacks (off when the
    #: tracker chooses the trials with child runs at the end, see `flows.tracking`)
    write_missing: bool = True


class MlflowWriter(threading.Thread):
    """Consumes `Segment`, `Finish` and `Artifact` records from `queue` until `STOP`."""

    def __init__(self, settings: WriterSettings, records: queue.SimpleQueue[Any],
                 on_disable: Callable[[str], None]):
        super().__init__(name="mlflow-writer", daemon=True)
        self.settings = settings
        self.records = records
        self.on_disable = on_disable
        self.client: Any = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.error: str | None = None
        self.num_written = 0
        # trial -> its child run id, the reports written to it, its tunesmith status there
        self._children: dict[int, tuple[str, int, str]] = {}
        self._keys: dict[str, str | None] = {}
        self._failures = 0
        self._entities: Any = None

    # -- thread ------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._connect()
            self._reconcile()
        except Exception as err:  # noqa: BLE001 - any failure to reach MLflow disables tracking
            self._disable(f"cannot use MLflow at {self.settings.tracking_uri}: {_short(err)}")
        while True:
            batch = [self.records.get()]
            while batch[-1] is not STOP and len(batch) < MAX_RECORDS_PER_BATCH:
                try:
                    batch.append(self.records.get_nowait())
                except queue.Empty:
                    break
            stop = batch[-1] is STOP
            if stop:
                batch.pop()
            if self.error is None and batch:
                self._write_batch(batch)
            if stop:
                return

    def _write_batch(self, batch: list[Any]) -> None:
        for record in batch:
            if self.error is not None:
                return
            try:
                self._write(record)
                self._failures = 0
            except Exception as err:  # noqa: BLE001
                self._failures += 1
                logger.warning("MLflow write failed (%s): %s", type(record).__name__, _short(err))
                if self._failures >= 3 or _is_connection_error(err):
                    self._disable(f"MLflow at {self.settings.tracking_uri} failed: {_short(err)}")

    def _disable(self, message: str) -> None:
        self.error = message
        where = self.settings.store_path or "the experiment store"
        logger.warning("%s; the experiment goes on without MLflow, results stay in %s",
                       message, where)
        self.on_disable(message)

    def _write(self, record: Any) -> None:
        if isinstance(record, Segment):
            self._write_segment(record)
        elif isinstance(record, Finish):
            self._finish(record)
        elif isinstance(record, Artifact):
            self.client.log_artifact(self.parent_run_id, str(record.path), record.artifact_path)

    # -- setup -------------------------------------------------------------------------------
    def _connect(self) -> None:
        import mlflow.entities as entities

        s = self.settings
        self._entities = entities
        self.client = open_client(s.tracking_uri)
        self.experiment_id = self._experiment()
        run = self._existing_parent()
        if run is None:
            run = self.client.create_run(
                self.experiment_id, run_name=s.run_name,
                tags={**s.parent_tags, EXPERIMENT_TAG: s.run_key, ROLE_TAG: "parent"},
            )
            self.parent_run_id = run.info.run_id
            self._log_batch(self.parent_run_id, [], s.parent_params, {})
        else:  # resumed: params are immutable in MLflow, so only new ones are added, and
            # the current values of those the spec changed are tags
            self.parent_run_id = run.info.run_id
            self.client.update_run(self.parent_run_id, status="RUNNING")
            logged = run.data.params
            params = {k: v for k, v in s.parent_params.items() if k not in logged}
            changed = {k: v for k, v in s.parent_params.items()
                       if k in logged and logged[k] != str(v)}
            tags = dict(s.parent_tags)
            if changed:
                tags[CHANGED_PARAMS_TAG] = ", ".join(sorted(changed))
                tags.update({CURRENT_PARAM_TAG + k: str(v) for k, v in changed.items()})
            self._log_batch(self.parent_run_id, [], params, tags)
        self.client.log_text(self.parent_run_id, s.spec_json, "spec.json")
        if s.store_path is not None:
            atomic_write_text(s.store_path / RUN_FILE, json.dumps({
                "tracking_uri": s.tracking_uri, "experiment_id": self.experiment_id,
                "run_id": self.parent_run_id}, indent=1))

    def _experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        name = self.settings.experiment_name
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return self.client.create_experiment(
                    name, artifact_location=self.settings.artifact_location,
                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            except MlflowException:  # created meanwhile by another process
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            self.client.restore_experiment(experiment.experiment_id)
        if EXPERIMENT_KIND_TAG not in experiment.tags:  # a kind the user chose stays
            self.client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG,
                                           EXPERIMENT_KIND)
        return experiment.experiment_id

    def _existing_parent(self) -> Any | None:
        """The parent run of an earlier session: from `mlflow.json` in the store, else (when
        resuming) by tag."""
        s = self.settings
        if s.store_path is not None and (s.store_path / RUN_FILE).exists():
            try:
                saved = json.loads((s.store_path / RUN_FILE).read_text())
                if saved.get("tracking_uri") == s.tracking_uri:
                    run = self.client.get_run(saved["run_id"])
                    if run.info.lifecycle_stage == "active" and \
                            run.info.experiment_id == self.experiment_id:
                        return run
            except Exception:  # noqa: BLE001 - a stale file or a deleted run: search instead
                pass
        if not s.restored_trials:  # a new experiment gets a new parent run
            return None
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{EXPERIMENT_TAG}` = '{_quote(s.run_key)}'",
            max_results=1, order_by=["attributes.start_time DESC"],
        )
        return runs[0] if runs else None

    def _reconcile(self) -> None:
        """Bring the child runs in line with the store after a resume: trials written before a
        crash stay, missing reports are added, runs of trials the store does not know (run
        again after the crash) are deleted."""
        s = self.settings
        logged: dict[int, Any] = {}
        for run in self._child_runs():
            tid = run.data.tags.get(TRIAL_TAG)
            if tid is None or not tid.isdigit() or int(tid) in logged:
                self.client.delete_run(run.info.run_id)
                continue
            logged[int(tid)] = run
        rows: dict[int, list[Mapping[str, Any]]] = {}
        for row in s.restored_rows:
            rows.setdefault(int(row["trial_id"]), []).append(row)
        for tid, run in list(logged.items()):
            known = s.restored_trials.get(tid)
            n = int(run.data.tags.get(REPORTS_TAG, "-1"))
            if known is None or n < 0 or n > len(rows.get(tid, [])) or \
                    json.dumps(_param_values(known[0]), sort_keys=True) != \
                    json.dumps(_param_values_from_run(run, known[0]), sort_keys=True):
                self.client.delete_run(run.info.run_id)
                del logged[tid]
                continue
            status = run.data.tags.get(STATUS_TAG, "running") \
                if run.info.status != "RUNNING" else "running"
            self._children[tid] = (run.info.run_id, n, status)
        if not s.write_missing:
            return
        missing = []
        for tid, (config, status, reason) in sorted(s.restored_trials.items()):
            trial_rows = rows.get(tid, [])
            done = self._children.get(tid, (None, 0, False))[1]
            current = logged.get(tid)
            if current is not None and done == len(trial_rows) and \
                    current.data.tags.get(STATUS_TAG) == status:
                continue
            if not trial_rows and status == "running":
                continue
            stamp = now_ms()
            reports = [(row_metrics(r), stamp) for r in trial_rows[done:]]
            best = best_report(trial_rows, s.metric, s.mode, s.resource_attr, s.constraint) \
                if s.metric else None
            missing.append(Segment(tid, config, status, reports, done, stamp, stamp, reason,
                                   logs=s.restored_logs.get(tid), best=best))
        for i in range(0, len(missing), MAX_RECORDS_PER_BATCH):
            self._write_batch(missing[i:i + MAX_RECORDS_PER_BATCH])

    def _child_runs(self) -> Iterator[Any]:
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'",
                max_results=1000, page_token=token,
            )
            yield from page
            token = page.token
            if not token:
                return

    # -- writes ------------------------------------------------------------------------------
    def _segment_tags(self, seg: Segment) -> dict[str, str]:
        tags = {STATUS_TAG: seg.status, REPORTS_TAG: str(seg.first_index + len(seg.reports))}
        if seg.best is not None:
            tags[BEST_STEP_TAG] = str(seg.best.step)
        if seg.failure_reason:
            tags[FAILURE_TAG] = _clip(mask_text(seg.failure_reason), MAX_TAG_VALUE)
        return tags

    def _write_segment(self, seg: Segment) -> None:
        run_id, written, logged_status = self._children.get(seg.trial_id, (None, 0, "running"))
        ended = MLFLOW_STATUS.get(logged_status) is not None
        if run_id is not None and written > seg.first_index:  # those reports are in MLflow
            seg = replace(seg, reports=seg.reports[written - seg.first_index:],
                          first_index=written)
            if not seg.reports and ended and seg.status == logged_status:
                return  # nothing new (a resumed experiment's trial, written before)
        params: dict[str, str] = {}
        if run_id is None:
            run = self.client.create_run(
                self.experiment_id, start_time=seg.start_ms, run_name=f"trial-{seg.trial_id}",
                tags={PARENT_TAG: self.parent_run_id, TRIAL_TAG: str(seg.trial_id)},
            )
            run_id = run.info.run_id
            params = _param_values(seg.config)
        metric = self._entities.Metric
        metrics = [metric(*point) for point in self._metrics(seg)]
        self._log_batch(run_id, metrics, params, self._segment_tags(seg))
        status = MLFLOW_STATUS.get(seg.status)
        if status is not None:
            self.client.set_terminated(run_id, status, seg.end_ms)
        elif ended:
            self.client.update_run(run_id, status="RUNNING")
        self._children[seg.trial_id] = (run_id, seg.first_index + len(seg.reports), seg.status)
        self.num_written += 1
        self._upload_logs(seg, run_id)

    def _upload_logs(self, seg: Segment, run_id: str) -> None:
        """The trial's output as artifacts; a failure costs the logs only (the store has them)."""
        if seg.logs is None:
            return
        try:
            logs = seg.logs()
            if logs is not None:
                upload_trial_logs(self.client, run_id, logs)
        except Exception as err:  # noqa: BLE001
            logger.warning("trial %s: output not attached to its MLflow run (%s)", seg.trial_id,
                           _short(err))

    def _metrics(self, seg: Segment) -> list[MetricPoint]:
        """(key, value, timestamp, step) of every numeric reported value but the resource."""
        keys = self._keys
        resource_attr = self.settings.resource_attr
        out: list[MetricPoint] = []
        index = seg.first_index
        for values, timestamp in seg.reports:
            index += 1
            step = _step(values.get(resource_attr), index)
            for name, value in values.items():
                key = keys[name] if name in keys else self._key(name)
                if key is None:
                    continue
                if type(value) is not float:
                    if isinstance(value, bool | str) or not isinstance(value, numbers.Real):
                        continue
                    value = float(value)
                out.append((key, value, timestamp, step))
        best = seg.best if seg.status != "failed" else None  # a failed trial is never ranked
        best_key = self._key(f"best_{self.settings.metric}") if best is not None else None
        if best is not None and best_key is not None:
            timestamp = seg.reports[-1][1] if seg.reports else now_ms()
            out.append((best_key, best.value, timestamp, _step(best.step, index)))
        return out

    def _key(self, name: str) -> str | None:
        """A metric key MLflow accepts (cached), or None to skip the metric (the resource)."""
        if name == self.settings.resource_attr:
            self._keys[name] = None
        elif name not in self._keys:
            key = _BAD_KEY_CHARS.sub("_", str(name)).lstrip("/")[:MAX_KEY]
            while "//" in key or ".." in key:
                key = key.replace("//", "/").replace("..", "_")
            self._keys[name] = key or None
        return self._keys[name]

    def _log_batch(self, run_id: str, metrics: Sequence[Any], params: Mapping[str, str],
                   tags: Mapping[str, str]) -> None:
        """As few `log_batch` calls as MLflow's limits allow; the tags go in the last one, so
        a run whose write was interrupted lacks them (and is written again on resume)."""
        e = self._entities
        items = [("params", e.Param(_clip(k, MAX_KEY), _clip(v, MAX_PARAM_VALUE)))
                 for k, v in params.items()]
        items += [("metrics", m) for m in metrics]
        items += [("tags", e.RunTag(_clip(k, MAX_KEY), _clip(v, MAX_TAG_VALUE)))
                  for k, v in tags.items()]
        calls: list[dict[str, list[Any]]] = [{"params": [], "metrics": [], "tags": []}]
        for kind, item in items:
            call = calls[-1]
            keyed = len(call["params"]) + len(call["tags"])
            if keyed + len(call["metrics"]) >= MAX_ENTITIES_PER_BATCH or \
                    (kind != "metrics" and keyed >= MAX_PARAMS_PER_BATCH):
                call = {"params": [], "metrics": [], "tags": []}
                calls.append(call)
            call[kind].append(item)
        for call in calls:
            if any(call.values()):
                self.client.log_batch(run_id, synchronous=True, **call)

    def _finish(self, finish: Finish) -> None:
        parent_run_id = self.parent_run_id
        assert parent_run_id is not None  # the parent run is opened before anything is written
        e = self._entities
        ts = now_ms()
        metrics = [e.Metric(self._key(k), v, ts, 0) for k, v in finish.metrics.items()
                   if self._key(k) and math.isfinite(v)]
        tags = dict(finish.tags)
        if finish.note:
            child = self._children.get(finish.best_trial_id, (None,))[0] \
                if finish.best_trial_id is not None else None
            url = f"{self.settings.ui_base}/#/experiments/{self.experiment_id}/runs/" \
                  f"{child or parent_run_id}?workflowType=machine_learning"
            tags[NOTE_TAG] = _clip(finish.note.replace("{best_run_url}", url), MAX_TAG_VALUE)
        self._log_batch(parent_run_id, metrics, {}, tags)
        if finish.only_trials is not None:
            for tid in [t for t in self._children if t not in finish.only_trials]:
                self.client.delete_run(self._children.pop(tid)[0])
        if finish.trials_path is not None:
            self._log_trials(finish.trials, finish.trials_path, parent_run_id)
        for path in finish.artifacts:
            if path.exists():
                self.client.log_artifact(parent_run_id, str(path))
        self.client.set_terminated(parent_run_id, finish.status)

    def _log_trials(self, trials: list[dict[str, Any]], path: Path, parent_run_id: str) -> None:
        """`trials.csv` on the parent run: every trial, with its child run id (or empty)."""
        import pandas as pd

        run_ids = {tid: run for tid, (run, _, _) in self._children.items()}
        frame = pd.DataFrame(trials)
        if len(frame):
            frame[RUN_ID_COLUMN] = [run_ids.get(int(t), "") for t in frame["trial_id"]]
        frame.to_csv(path, index=False)
        self.client.log_artifact(parent_run_id, str(path))


def _step(resource: Any, index: int) -> int:
    if isinstance(resource, numbers.Real) and not isinstance(resource, bool):
        value = float(resource)
        if math.isfinite(value) and value == int(value):
            return int(value)
    return index


def row_metrics(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored report row's reported values (the store's own columns left out)."""
    return {k: v for k, v in row.items() if k not in ROW_COLUMNS}


def _param_values(config: Mapping[str, Any]) -> dict[str, str]:
    """A trial's config as MLflow params: redacted, keys MLflow accepts, values as text."""
    return {_clip(_BAD_KEY_CHARS.sub("_", str(k)), MAX_KEY): _param_text(v)
            for k, v in redact(config).items()}


def _param_values_from_run(run: Any, config: Mapping[str, Any]) -> dict[str, str]:
    return {k: run.data.params.get(k, "") for k in _param_values(config)}


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return _clip(text, MAX_PARAM_VALUE)


def _clip(text: Any, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _short(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) < 300 else text[:297] + "..."


def _is_connection_error(err: BaseException) -> bool:
    text = f"{type(err).__name__} {err}".lower()
    return any(s in text for s in ("connection", "max retries", "timed out", "timeout",
                                   "unreachable", "refused"))
