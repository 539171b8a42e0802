"""The worker side of the `dask` backend: one trial segment as one Dask task.

`run_segment` runs on a Dask worker. It hands the trial to this worker process's `_Host` for
the experiment, which owns ONE local backend (`backends.local.LocalBackend` for scripts,
`backends.functions.FunctionBackend` for Python functions), so process handling (own process
group, PDEATHSIG, watchdog, records, SIGTERM then SIGKILL of the whole tree), GPU rotation
(`CUDA_VISIBLE_DEVICES` from this host's `nvidia-smi`) and checkpoints are the local
backend's, not a second implementation. A pump thread drives that backend and routes its
events to the segment tasks, which forward each report to the tuner at once with
`Worker.log_event` (the scheduler passes it to the tuner's client, ~2 ms on loopback), and
then how the segment ended (so the tuner needs no round trip to fetch the task's result).

The task ends the trial on its host as soon as its Dask task is cancelled: the tuner cancels
it to stop or pause the trial, and the scheduler cancels it when the tuner's client is gone (a
killed tuner). It also ends it when the worker starts closing (it closes when it loses its
scheduler). A worker that dies takes its trials with it (PDEATHSIG, the watchdog).

A tuner can also go silent without closing its connection (the process stopped, its host or
network frozen): the scheduler then keeps its tasks. So each tuner session holds a lease on
every worker, which it renews (`renew_lease`, every `lease / 5` seconds); a host whose lease
has not been renewed for `lease` seconds (on this worker's clock) ends all its trials.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Literal

from backends.checkpoint_url import CheckpointURL, CheckpointURLError
from hpo_core.secrets import import_resolvers, mask_event, mask_text
from hpo_core.trial import EventKind, Trial, TrialEvent

logger = logging.getLogger(__name__)

#: the name of the Dask worker a trial runs on, in the trial's environment
WORKER_ENV = "TUNESMITH_DASK_WORKER"
#: in `trial_root`, replaced by each worker's name (a folder per worker)
WORKER_PLACEHOLDER = "{worker}"
#: seconds between two looks at the task's state (a stop reaches the trial within this)
CHECK_EVERY = 0.05
#: a host without segments for this long closes its backend (its worker processes)
IDLE_CLOSE = 60.0

_HOSTS: dict[str, _Host] = {}  # by session of the tuner
_HOSTS_LOCK = threading.Lock()
_QUIET = False  # the filter of `_quiet_acknowledgments` is installed
#: the last lease renewal of each tuner session (monotonic; kept, so that a silent session's
#: next segment finds its lease expired too)
_RENEWED: dict[str, float] = {}


class _Host:
    """This worker process's local backend for one tuner session, driven by one thread."""

    def __init__(self, experiment: str, session: str, options: dict[str, Any], trial_root: str,
                 lease: float):
        self.experiment = experiment
        self.session = session
        self.lease = lease
        self.reason = "closed"  # why its segments ended, once closed
        _RENEWED.setdefault(session, time.monotonic())
        options = dict(options)
        url = options.pop("checkpoint_url", None)
        storage_options = options.pop("checkpoint_options", None)
        name = options.pop("experiment_name", None)
        import_resolvers(options.pop("resolvers", {}))  # before a trial resolves a reference
        tuner_acks = bool(options.pop("tuner_acks", False))
        #: the checkpoints' URL, when they live there (else in the trial folders)
        self.remote = CheckpointURL(url, name, storage_options) if url else None
        self.inner = _local_backend(options)
        if tuner_acks:  # the scheduler may pause: a trial waits at each report for the tuner
            self.inner.auto_acknowledge = False
            _quiet_acknowledgments()
        self.inner.set_trial_root(Path(trial_root))  # also ends what a dead session left here
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._segments: dict[int, queue.SimpleQueue[TrialEvent | None]] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._done = False  # the pump has ended: no more segments
        #: the tuner is being killed: its trials were ended by `drain`, and a cancelled segment
        #: forwards the reports still queued for it (a pause would drop them)
        self.draining = threading.Event()
        self._idle_since = time.monotonic()
        self._thread = threading.Thread(target=self._pump, name=f"tunesmith-host-{session}",
                                        daemon=True)
        self._thread.start()

    def begin(self, trial: Trial, action: str) -> queue.SimpleQueue[TrialEvent | None]:
        events: queue.SimpleQueue[TrialEvent | None] = queue.SimpleQueue()
        with self._lock:
            if self._done:  # closed meanwhile (lease expired, idle): the segment ends at once
                events.put(None)
                return events
            old = self._segments.get(trial.trial_id)
            self._segments[trial.trial_id] = events
        if old is not None:  # the tuner paused it and resumed it here before its task saw that
            old.put(None)
            self._command("stop", trial.trial_id)
        self._command(action, trial)
        return events

    def end(self, trial_id: int, events: queue.SimpleQueue[TrialEvent | None],
            stop: bool) -> None:
        with self._lock:
            if self._segments.get(trial_id) is events:
                del self._segments[trial_id]
                self._idle_since = time.monotonic()
            else:
                stop = False  # a newer segment of the trial runs here: leave it
        if stop:
            self._command("stop", trial_id)

    def close(self) -> None:
        self._closed.set()
        self.inner.wake()
        self._thread.join(timeout=60)

    def drain(self) -> int:
        """End the trials now (the local backend's `drain`: their last output is read) and
        queue their reports that no poll took for their segments; how many."""
        from backends.process_trials import DRAIN_WAIT_SECONDS

        done: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._command("drain", done)
        try:
            return done.get(timeout=DRAIN_WAIT_SECONDS + 10)  # the pump may be mid-poll
        except queue.Empty:
            return 0

    def _command(self, name: str, arg: Any) -> None:
        self._commands.put((name, arg))
        self.inner.wake()

    def _pump(self) -> None:
        try:
            while not self._closed.is_set():
                while True:
                    try:
                        name, arg = self._commands.get_nowait()
                    except queue.Empty:
                        break
                    if name == "drain":
                        self.draining.set()
                        events = self.inner.drain()
                        self._route(events)
                        arg.put(len(events))
                    elif name == "ack":
                        self.inner.acknowledge(arg)
                    else:
                        self._do(name, arg)
                self._route(self.inner.poll())
                now = time.monotonic()
                silent = now - _RENEWED.get(self.session, 0.0)
                with self._lock:
                    idle = not self._segments and now - self._idle_since > IDLE_CLOSE
                if silent > self.lease:
                    self.reason = (f"the tuner did not renew its lease for {silent:.0f} s "
                                   f"(tuner_lease: {self.lease:g} s): its trials on this "
                                   "worker were ended")
                    logger.warning("tuner session %s: %s", self.session, self.reason)
                if idle or silent > self.lease:
                    with _HOSTS_LOCK:
                        if _HOSTS.get(self.session) is self:
                            del _HOSTS[self.session]
                    break
        finally:
            self.inner.close()
            with self._lock:
                self._done = True
                for events in self._segments.values():
                    events.put(None)

    def _route(self, events: list[TrialEvent]) -> None:
        """Each event to its trial's segment (dropped if the trial has none here now)."""
        for event in events:
            with self._lock:
                target = self._segments.get(event.trial_id)
            if target is not None:
                target.put(event)

    def _do(self, name: str, arg: Any) -> None:
        actions = {"start": self.inner.start, "resume": self.inner.resume,
                   "stop": self.inner.stop}
        try:
            actions[name](arg)
        except Exception as err:  # noqa: BLE001 - the segment fails with the reason
            tid = arg if isinstance(arg, int) else arg.trial_id
            logger.exception("trial %s: %s failed", tid, name)
            with self._lock:
                target = self._segments.get(tid)
            if target is not None and name != "stop":
                target.put(TrialEvent(EventKind.FAILED, tid, 0.0,
                                      reason=f"could not {name} it: {type(err).__name__}: {err}"))


def _local_backend(options: dict[str, Any]) -> Any:
    from backends.objectives import is_function_entry

    options = dict(options)
    gpus_per_trial = options.pop("gpus_per_trial")
    gpu_options = {"gpus": "auto", "gpus_per_trial": gpus_per_trial} if gpus_per_trial \
        else {"gpus": []}
    entry_point = options["entry_point"]
    backend: Any
    if is_function_entry(entry_point) if isinstance(entry_point, str) \
            else not isinstance(entry_point, list | tuple):
        from backends.functions import FunctionBackend

        options.pop("stop_grace_period", None)
        backend = FunctionBackend(**options, **gpu_options)
    else:
        from backends.local import LocalBackend

        options.pop("metric", None)
        options.pop("reuse_workers", None)
        backend = LocalBackend(**options, **gpu_options)
    if gpus_per_trial and backend.rotation is None:  # "auto" found none: it advertises GPUs
        # (its GPU resource) it cannot give a trial
        raise ValueError(
            f"backend_options.gpus_per_trial: {gpus_per_trial} GPUs per trial, but this "
            "worker finds no GPU (nvidia-smi, on its PATH): give `--resources GPU=n` only "
            "to workers that have GPUs")
    return backend


def _host(experiment: str, session: str, options: dict[str, Any], trial_root: str,
          lease: float) -> _Host:
    with _HOSTS_LOCK:
        host = _HOSTS.get(session)
        if host is None:
            host = _HOSTS[session] = _Host(experiment, session, options, trial_root, lease)
        return host


def renew_lease(session: str) -> None:
    """The tuner of `session` is alive (run on every worker with `Client.run`)."""
    _RENEWED[session] = time.monotonic()


def run_segment(experiment: str, session: str, topic: str, segment: int, options: dict[str, Any],
                trial_root: str, trial: Trial, action: str) -> dict[str, Any]:
    """Run one segment of `trial` on this worker (the Dask task); returns how it ended:
    `{"outcome": "completed" | "failed" | "cancelled", "reason", "reports"}`."""
    from distributed import get_worker

    worker = get_worker()
    key = worker.get_current_task()
    tid = trial.trial_id
    options = {**options, "env": {**options.get("env", {}), WORKER_ENV: str(worker.name)}}
    lease = float(options.pop("tuner_lease"))
    host = _host(experiment, session, options,
                 trial_root.replace(WORKER_PLACEHOLDER, str(worker.name)), lease)
    worker.log_event(topic, {"kind": "started", "trial": tid, "segment": segment,
                             "worker": worker.address, "name": str(worker.name)})

    def current() -> bool:
        state = worker.state.tasks.get(key)
        return state is not None and state.state in ("executing", "long-running")

    versions: list[str] = []  # this trial's checkpoint versions at the URL, oldest first
    if host.remote is not None:
        try:
            host.remote.download(tid, host.inner.checkpoint_dir(tid),
                                 trial.checkpoint_from if action == "start" else None)
            versions = host.remote.versions(tid)
        except CheckpointURLError as err:
            return {"outcome": "failed", "reason": str(err), "reports": 0}
        trial = dataclasses.replace(trial, checkpoint_from=None)  # it is in place now
    events = host.begin(trial, action)
    reports = 0
    ended: dict[str, Any] | None = None
    event: TrialEvent | Literal[False] | None  # False: nothing came within CHECK_EVERY

    def forward(event: TrialEvent) -> dict[str, Any] | None:
        """One event of the trial passed on to the tuner, secrets masked (this worker resolved
        the trial's references: the tuner may not know their values); how the segment ended,
        if it did."""
        nonlocal reports
        mask_event(event)
        if event.kind in (EventKind.COMPLETED, EventKind.FAILED):
            return {"outcome": event.kind.value, "reason": event.reason}
        if event.kind == EventKind.RESULT:
            if host.remote is not None:  # its checkpoint first, then the report
                try:
                    host.remote.upload(tid, host.inner.checkpoint_dir(tid), current, versions)
                except CheckpointURLError as err:
                    return {"outcome": "failed", "reason": str(err)}
            reports += 1
            worker.log_event(topic, {"kind": "result", "trial": tid, "segment": segment,
                                     "metrics": _plain(event.metrics)})
        return None

    try:
        while ended is None:
            try:
                event = events.get(timeout=CHECK_EVERY)
            except queue.Empty:
                event = False
            if event is None:
                ended = {"outcome": "cancelled", "reason": host.reason}
            elif event is not False:
                ended = forward(event)
            if ended is None:
                if not current():
                    ended = {"outcome": "cancelled", "reason": "the task was cancelled"}
                    if host.draining.is_set():  # the tuner is being killed: its trials' last
                        # reports go to it (those of a paused trial would be dropped)
                        while (event := _next_queued(events)) is not None:
                            forward(event)
                elif worker.status.name not in ("running", "paused"):
                    # closing: it lost its scheduler (or is told to go); its trials go first
                    ended = {"outcome": "cancelled", "reason": f"the worker is {worker.status.name}"}
    finally:
        host.end(tid, events, stop=ended is None or ended["outcome"] != "completed")
    ended["reports"] = reports
    # the tuner acts on this message (after the reports, on the same stream), without fetching
    # the task's result from this worker
    worker.log_event(topic, {"kind": "ended", "trial": tid, "segment": segment, **ended})
    return ended


def _next_queued(events: queue.SimpleQueue[TrialEvent | None]) -> TrialEvent | None:
    """The next event queued for a segment, None if there is none."""
    try:
        return events.get_nowait()
    except queue.Empty:
        return None


def acknowledge(session: str, trial_ids: dict[str, list[int]], dask_worker: Any = None) -> None:
    """The tuner of `session` has acted on the reports of these trials (by worker address):
    those running here go on (run on their workers with `Client.run`; the scheduler may
    pause trials, so each waits at its reports for this)."""
    mine = trial_ids.get(dask_worker.address, []) if dask_worker is not None else []
    with _HOSTS_LOCK:
        host = _HOSTS.get(session)
    if host is not None and mine:
        host._command("ack", set(mine))


def _quiet_acknowledgments() -> None:
    """Keep the worker's log free of a line per acknowledgment (`Client.run` logs each call
    it runs at INFO)."""
    global _QUIET
    if not _QUIET:
        _QUIET = True
        logging.getLogger("distributed.worker").addFilter(
            lambda record: record.args != (acknowledge.__name__,))


def drain_session(session: str) -> int:
    """The tuner of `session` is being killed (run on every worker with `Client.run`, before
    it cancels its segments): its trials here end now, and their reports that were not
    forwarded yet go to the tuner with their segments' ends. Returns how many there were."""
    with _HOSTS_LOCK:
        host = _HOSTS.get(session)
    return 0 if host is None else host.drain()


def probe_checkpoint_url(url: str, storage_options: dict[str, Any] | None,
                         resolvers: dict[str, str]) -> str | None:
    """Whether this worker can write to the checkpoint URL: None, or the (masked) reason
    (`resolvers`: the tuner's `resolver_modules()`, for references in the storage options)."""
    import_resolvers(resolvers)
    try:
        CheckpointURL(url, None, storage_options).probe()
    except Exception as err:  # noqa: BLE001 - reported to the tuner as one line
        return str(err) if isinstance(err, CheckpointURLError) \
            else mask_text(f"{type(err).__name__}: {err}")
    return None


def end_experiment(experiment: str, keep_session: str | None = None,
                   dask_worker: Any = None) -> int:
    """Close this worker's hosts of `experiment` (all sessions but `keep_session`): their trial
    processes end. Run on every worker with `Client.run`; returns how many trials were still
    running there."""
    with _HOSTS_LOCK:
        hosts = [h for s, h in _HOSTS.items()
                 if h.experiment == experiment and s != keep_session]
        for host in hosts:
            del _HOSTS[host.session]
    running = 0
    for host in hosts:
        with host._lock:
            running += len(host._segments)
        host.close()
    return running


def _plain(value: Any) -> Any:
    """`value` as plain JSON types (msgpack carries it to the tuner)."""
    return json.loads(json.dumps(value, default=_default))


def _default(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)
