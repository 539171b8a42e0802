"""The experiment store on disk.

Layout of `<root>/<experiment>/`:

* `spec.json`        the ExperimentSpec that started the experiment;
* `lock.json`        who owns the experiment now (`hpo_core.store.lock`);
* `journal/`         every trial start and every backend event, appended before the scheduler
                     sees it (`hpo_core.store.journal`);
* `state.json`       the last snapshot: tuner, scheduler, searcher and backend state, and which
                     journal segment and how many result rows it covers;
* `results.parquet`  the rows the snapshot covers, one per report: trial_id, time, status,
                     decision, `config_<name>` columns and every reported metric;
* `transfer.json`    of a transfer method: the evaluations of the earlier experiments it read
                     when the experiment started, read instead of them from then on;
* `trials/<id>/`     per-trial files of real backends (config.json, stdout, stderr, checkpoint/).

Snapshots are taken by the tuner at consistent points of its loop and written by a background
thread (results.parquet, then state.json, both durable, then the covered journal segments are
removed), so the tuner never waits on them (a simulation writes them itself: see `begin`);
their cost is bounded by the events since the last one (`snapshot_due`), so persisting an
event costs the same at 100 trials as at 20,000.
MLflow mirrors this store; it is never the only copy.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hpo_core.backend import TrialContext
from hpo_core.json_encoders import compiled_encoder
from hpo_core.secrets import one_line
from hpo_core.store.config_columns import ConfigColumns
from hpo_core.store.files import (
    CONFIG_PREFIX,
    RESULTS_FILE,
    SPEC_FILE,
    STATE_FILE,
    TRANSFER_FILE,
    atomic_write_text,
    dumps,
    json_default,
    remove_temporary_files,
    sync_folder,
    validate_name,
)
from hpo_core.store.journal import Journal, StoreError, encode, encode_decisions, store_error
from hpo_core.store.lock import GUARD_FILE, ExperimentLock, experiment_lock
from hpo_core.trial import ENDED_STATUSES, Trial, TrialEvent

logger = logging.getLogger(__name__)

#: a snapshot may cost at most this many units (trials + rows) per event since the last one
SNAPSHOT_UNITS_PER_EVENT = 8
#: ... and is taken at the latest once the events since the last one outnumber its units
SNAPSHOT_MIN_EVENTS = 64
#: seconds between fdatasyncs of the journal (a power loss loses at most this much)
SYNC_INTERVAL = 1.0
#: state.json's encoder (`json.dumps(state, default=json_default, separators=(",", ":"))`)
_STATE_ENCODE = compiled_encoder(
    json.JSONEncoder(separators=(",", ":"), default=json_default))
#: `ENDED_STATUSES` as state.json writes them
_ENDED = frozenset(s.value for s in ENDED_STATUSES)


class ExperimentStore:
    """Reads and writes one experiment's folder (see the module docstring).

    The tuner drives it: `lock`, `load_state` (snapshot, its rows, the journal after it),
    `begin` (a new journal segment), then `journal_start` / `journal_events` / `record` for
    each trial start, poll and report, `snapshot` when `snapshot_due`, and `close`."""

    def __init__(self, root: str | os.PathLike[str], name: str):
        self.name = validate_name(name, "name")
        self.path = Path(root) / self.name
        self.trials_path = self.path / "trials"
        #: wall seconds after which a snapshot is taken once it is cheap enough
        self.snapshot_interval = 5.0
        self._rows: list[dict[str, Any]] = []
        self._journal = Journal(self.path)
        self._replay: list[dict[str, Any]] = []
        self._base_segment = 0  # the snapshot covers the journal segments below it
        self._decisions: list[list[Any]] = []  # of the last batch, written with the next record
        self._events_since = 0
        self._snapshot_units = 0
        self._snapshot_wall = time.monotonic()
        self._writer: _SnapshotWriter | None = None
        self._lock: ExperimentLock | None = None  # held by this store
        self._ended_trials: dict[str, str] = {}  # JSON of the trials that ended (`_state_text`)

    # -- files ---------------------------------------------------------------------------------
    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def has_state(self) -> bool:
        """Whether the experiment has run before (a snapshot, or a journal)."""
        return (self.path / STATE_FILE).exists() or bool(self._journal.segments())

    def write_spec(self, spec: Mapping[str, Any]) -> None:
        atomic_write_text(self.path / SPEC_FILE, dumps(dict(spec)), durable=True)

    def read_spec(self) -> dict[str, Any] | None:
        path = self.path / SPEC_FILE
        return json.loads(path.read_text()) if path.exists() else None

    def write_transfer(self, evaluations: Sequence[Mapping[str, Any]]) -> None:
        atomic_write_text(self.path / TRANSFER_FILE, dumps(list(evaluations)), durable=True)

    def read_transfer(self) -> list[dict[str, Any]] | None:
        """The evaluations of earlier experiments that this one's transfer method read when it
        started (None if none were kept); StoreError naming the file if it cannot be read."""
        evaluations: list[dict[str, Any]] | None = _read_json(self.path / TRANSFER_FILE, list)
        return evaluations

    def trial_context(self) -> TrialContext:
        """Where this experiment's trials keep their files (handed to the backend)."""
        return TrialContext(self.trials_path, experiment=self.name)

    def trial_dir(self, trial_id: int) -> Path:
        """The trial's folder, created."""
        return self.trial_context().trial_dir(trial_id)

    def write_trial_config(self, trial: Trial) -> Path:
        path = self.trial_dir(trial.trial_id) / "config.json"
        atomic_write_text(path, dumps(trial.config))
        return path

    # -- ownership -----------------------------------------------------------------------------
    def lock(self) -> None:
        """Own the experiment (`hpo_core.store.lock`); ExperimentLockedError if a live process
        does. Idempotent for this store object."""
        if self._lock is None:
            self.create()
            lock = experiment_lock(self.path)
            lock.acquire()
            self._lock = lock
            remove_temporary_files(self.path, keep=(GUARD_FILE,))

    def unlock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    # -- reading back --------------------------------------------------------------------------
    def load_state(self) -> dict[str, Any] | None:
        """The last snapshot (None: none yet), with the rows it covers loaded into the buffer
        and the journal written after it kept for `replay_records`."""
        state = read_state(self.path)
        info = (state or {}).get("store", {})
        self._base_segment = int(info.get("segment", 0))
        self._rows = read_rows(self.path, info.get("num_rows"))
        self._replay = self._journal.read(self._base_segment)
        return state

    def replay_records(self) -> list[dict[str, Any]]:
        """The journal records after the snapshot, in order (see `hpo_core.store.journal`)."""
        return self._replay

    # -- writing -------------------------------------------------------------------------------
    def begin(self, n_workers: int, background: bool = True) -> None:
        """Start this session's journal segment (after the replay), headed by the session's
        `n_workers` (a replay starts trials as this session did), and the snapshot writer.
        `background`: snapshots are written by the writer thread; else by the caller's thread,
        when it takes them (a simulation: its loop never waits for a trial, and a writer
        thread would only contend with it for the interpreter lock, which costs as much as
        the writing or more); the journal is synced by the writer thread either way."""
        self.create()
        segments = self._journal.segments()
        self._journal.open(max([self._base_segment - 1, *segments]) + 1)
        self._replay = []
        self._writer = _SnapshotWriter(self, background)
        self._writer.start()
        self._append({"n": n_workers})

    def journal_start(self, trial: Trial) -> None:
        """Journal a new trial (before the backend starts it)."""
        self._append({"s": [trial.trial_id, trial.config, trial.checkpoint_from]})

    def journal_events(self, events: Sequence[TrialEvent], time_offset: float) -> None:
        """Journal one poll's events (before the scheduler sees them)."""
        self._append({"b": [event_record(e, time_offset) for e in events]})
        self._events_since += len(events)

    def journal_exit(self, reason: str, error: bool) -> None:
        """Journal why this session ended before the experiment did (`error`: an error, not a
        kill), for the views (`Experiment.last_exit`); a resume ignores it."""
        self._append({"x": [reason, error]})

    def record(self, row: dict[str, Any], index: int | None = None) -> None:
        """Buffer one report row (trial_id, time, status, decision, metrics); `index` is its
        event's place in the last journaled batch (its decision is journaled with the next
        record)."""
        self._rows.append(row)
        if index is not None and self._writer is not None:
            self._decisions.append([index, row.get("status"), row.get("decision")])

    def _append(self, record: dict[str, Any]) -> None:
        self.check()
        data = encode(record)
        if self._decisions:
            data = encode_decisions(self._decisions) + data
            self._decisions = []
        self._journal.append(data)

    def check(self) -> None:
        """Raise the error the snapshot writer met (a full disk, ...), or StoreError if
        another process took the experiment over (this one was judged dead)."""
        writer = self._writer
        if writer is not None and writer.error is not None:
            raise writer.error
        if self._lock is not None and self._lock.lost:
            raise StoreError(f"experiment store: {self._lock.lost}; this run stops")

    @property
    def num_rows(self) -> int:
        return len(self._rows)

    def rows(self) -> list[dict[str, Any]]:
        return self._rows

    def results_frame(self, trials: Mapping[int, Trial] | Mapping[int, Mapping[str, Any]],
                      rows: Sequence[Mapping[str, Any]] | None = None) -> pd.DataFrame:
        """All report rows with each trial's config as `config_<name>` columns (`trials`:
        Trial objects, or configs by trial id)."""
        return results_frame(self._rows if rows is None else rows, trials)

    # -- snapshots -----------------------------------------------------------------------------
    def snapshot_due(self) -> bool:
        """Whether a snapshot is worth taking now: it costs about (trials + rows) units, and
        may cost at most SNAPSHOT_UNITS_PER_EVENT per event since the last one; within that
        bound it is taken every `snapshot_interval` seconds, or once the events outnumber it."""
        since = self._events_since
        if since == 0 or since * SNAPSHOT_UNITS_PER_EVENT < self._snapshot_units:
            return False
        return (since >= max(SNAPSHOT_MIN_EVENTS, self._snapshot_units)
                or time.monotonic() - self._snapshot_wall >= self.snapshot_interval)

    def snapshot(self, state: Mapping[str, Any], trials: Mapping[int, Trial],
                 wait: bool = False) -> None:
        """Take a snapshot of `state` (consistent with everything journaled so far): later
        records go to a new journal segment; the writer thread writes results.parquet and
        state.json and then removes the segments they cover. `wait`: until it is written."""
        self.check()
        if self._writer is None:  # not begun (a store used without a tuner): write it now
            self._write_snapshot(_Snapshot(self._state_text(state, len(self._rows), 0), trials,
                                           len(self._rows), 0), None)
            return
        self._flush_decisions()  # into the segment this snapshot covers
        segment = (self._journal.segment or 0) + 1
        self._journal.open(segment)
        job = _Snapshot(self._state_text(state, len(self._rows), segment), trials,
                        len(self._rows), segment)
        self._events_since = 0
        self._snapshot_units = len(trials) + len(self._rows)
        self._snapshot_wall = time.monotonic()
        self._writer.submit(job, wait)
        if wait:
            self.check()

    def _state_text(self, state: Mapping[str, Any], num_rows: int, segment: int) -> str:
        """state.json's text: `json.dumps` of the state and what it covers, except that a trial
        that ended (stopped, completed, failed: it never changes again) is encoded once and
        its text reused by later snapshots, so a snapshot encodes the live trials only."""
        covered = {**state, "store": {"segment": segment, "num_rows": num_rows}}
        trials = covered.get("trials")
        if not isinstance(trials, Mapping):
            return _STATE_ENCODE(covered)
        ended, encode = self._ended_trials, _STATE_ENCODE
        parts = []
        for key, trial in trials.items():
            part = ended.get(key)  # '"<key>":<trial>'
            if part is None:
                part = f"{encode(key)}:{encode(trial)}"
                if isinstance(trial, Mapping) and trial.get("status") in _ENDED:
                    ended[key] = part
            parts.append(part)
        items = [f"{encode(k)}:{'{' + ','.join(parts) + '}' if k == 'trials' else encode(v)}"
                 for k, v in covered.items()]
        return "{" + ",".join(items) + "}"

    def save(self, state: Mapping[str, Any], trials: Mapping[int, Trial],
             full: bool = True) -> None:
        """Take a snapshot and wait until it is written (`full` is accepted for older
        callers; every snapshot is full)."""
        del full
        self.snapshot(state, trials, wait=True)

    def close(self) -> None:
        """Journal the last batch's decisions, stop the writer (after its last snapshot), close
        the journal, release the lock."""
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                try:
                    self._flush_decisions()
                except StoreError:  # a full disk or a lost lock: the error is raised elsewhere
                    pass
                writer.stop()
        finally:
            self._journal.close()
            self.unlock()

    def discard_decisions(self) -> None:
        """Forget the decisions of a batch an interruption cut short: readers then take the
        whole batch as not decided yet (every report of it a row), as a resume replays it."""
        self._decisions = []

    def _flush_decisions(self) -> None:
        """The decisions of the last journaled batch, journaled now (else they go with the
        next record)."""
        if self._decisions:
            self._append({"d": []})

    def _write_snapshot(self, job: _Snapshot, writer: _SnapshotWriter | None) -> None:
        """results.parquet, then state.json (both durable), then remove covered segments."""
        self.create()
        rows = self._rows[: job.num_rows]
        results = self.path / RESULTS_FILE
        if writer is None or writer.rows_written != job.num_rows or not results.exists():
            tmp = self.path / f".{RESULTS_FILE}.tmp"
            try:
                cache = writer.config_columns if writer is not None else None
                write_results(results_frame(rows, job.configs, cache), tmp)
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, results)
            except OSError as err:
                tmp.unlink(missing_ok=True)
                raise store_error(err, results) from None
            if writer is not None:
                writer.rows_written = job.num_rows
        try:
            atomic_write_text(self.path / STATE_FILE, job.text, durable=True)
        except OSError as err:
            raise store_error(err, self.path / STATE_FILE) from None
        self._journal.remove_below(job.segment)
        sync_folder(self.path)


class _Snapshot:
    """A snapshot handed to the writer thread: the state already serialized by the tuner's
    thread (so nothing the tuner changes later leaks in)."""

    __slots__ = ("text", "configs", "num_rows", "segment")

    def __init__(self, text: str, trials: Mapping[int, Trial], num_rows: int, segment: int):
        self.text = text
        self.configs = {tid: t.config for tid, t in trials.items()}  # replaced, never mutated
        self.num_rows = num_rows
        self.segment = segment


class _SnapshotWriter(threading.Thread):
    """Writes snapshots off the tuner's thread (only the newest pending one: it covers more),
    or on it when not `background`, and fdatasyncs the journal every SYNC_INTERVAL seconds."""

    def __init__(self, store: ExperimentStore, background: bool = True):
        super().__init__(name=f"store-{store.name}", daemon=True)
        self.store = store
        self.background = background
        self.error: StoreError | None = None
        self.rows_written = -1
        #: the trials' config columns, kept from one snapshot to the next
        self.config_columns = ConfigColumns()
        self._cond = threading.Condition()
        self._job: _Snapshot | None = None
        self._busy = False
        self._stopping = False

    def submit(self, job: _Snapshot, wait: bool) -> None:
        if not self.background:
            self._write(job)
            return
        with self._cond:
            self._job = job
            self._cond.notify_all()
            if wait:
                self._cond.wait_for(lambda: self._job is None and not self._busy)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self.join()

    def run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._job is not None or self._stopping,
                                    timeout=SYNC_INTERVAL)
                job, self._job = self._job, None
                if job is None and self._stopping:
                    return
                self._busy = job is not None
            self.store._journal.sync()
            if job is not None:
                self._write(job)
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _write(self, job: _Snapshot) -> None:
        """Write a snapshot; an error is kept (`error`), for the store's `check()` to raise."""
        if self.error is not None:
            return
        try:
            self.store.check()  # never write over a new owner's snapshot
            self.store._write_snapshot(job, self)
        except StoreError as err:
            self.error = err
        except OSError as err:
            self.error = store_error(err, self.store.path)


def event_record(event: TrialEvent, time_offset: float) -> list[Any]:
    """A backend event as the journal keeps it (experiment time)."""
    return [event.kind.value, event.trial_id, time_offset + event.time, event.metrics,
            event.reason]


def read_state(folder: Path) -> dict[str, Any] | None:
    """state.json (None if there is none); StoreError naming the file if it cannot be read."""
    state: dict[str, Any] | None = _read_json(Path(folder) / STATE_FILE, dict)
    return state


def _read_json(path: Path, kind: type[dict[str, Any]] | type[list[Any]]) -> Any:
    """A store file's JSON, a `kind` (None if there is no file); StoreError naming the file if
    it cannot be read or is not one."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:  # ValueError: not JSON, or not UTF-8
        raise unreadable(path, err) from None
    if not isinstance(data, kind):
        raise unreadable(path, ValueError(f"not a JSON {'object' if kind is dict else 'list'}"))
    return data


def unreadable(path: Path, err: Exception) -> StoreError:
    """The error for a store file that cannot be read (damaged, or not the store's)."""
    return StoreError(f"experiment store: cannot read {path}: {one_line(str(err), 200)}")


def read_rows(folder: Path, num_rows: int | None) -> list[dict[str, Any]]:
    """The rows of results.parquet (the first `num_rows`: those the snapshot covers)."""
    results = Path(folder) / RESULTS_FILE
    if not results.exists():
        return []
    try:
        # use_threads=False: after a threaded read, pyarrow can abort the interpreter's exit
        # ("terminate called without an active exception", apache/arrow#34314: 7 of 60 runs
        # of a write-read-exit script on a busy machine, none of 60 without threads)
        frame = pd.read_parquet(results, use_threads=False)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise unreadable(results, err) from None
    if num_rows is not None:
        frame = frame.iloc[: int(num_rows)]
    frame = frame[[c for c in frame.columns if not c.startswith(CONFIG_PREFIX)]]
    return [{str(k): v for k, v in row.items() if not _is_missing(v)}
            for row in frame.to_dict(orient="records")]


def results_frame(rows: Sequence[Mapping[str, Any]],
                  trials: Mapping[int, Trial] | Mapping[int, Mapping[str, Any]],
                  columns: ConfigColumns | None = None) -> pd.DataFrame:
    """Report rows with each trial's config as `config_<name>` columns (`columns`: the config
    columns kept by a caller that builds the frame again and again, the snapshot writer)."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return frame
    configs = (columns or ConfigColumns()).frame(trials)
    if not configs.empty:
        overlap = [c for c in configs.columns if c in frame.columns]
        frame = frame.drop(columns=overlap).join(configs, on="trial_id")
    return frame


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def write_results(frame: pd.DataFrame, path: Path) -> None:
    """A results frame as parquet: a column of mixed or structured values (a metric reported
    as a list) as JSON text."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object:
            kinds = {type(v) for v in frame[column].dropna()}
            if len(kinds) > 1 or (kinds and not kinds <= {str, bool}):
                frame[column] = frame[column].map(
                    lambda v: None if _is_missing(v) else (v if isinstance(v, str) else dumps(v))
                )
    frame.to_parquet(path, index=False)
