"""Trials of one experiment on the workers of a Dask cluster.

`backend: dask` with `backend_options: {address: tcp://host:8786, entry_point: ...}` (or, from
Python, `client=` a `distributed.Client` or a cluster object). Each trial segment (a start, or
a resume after a pause) is one Dask task, `backends.dask_worker.run_segment`, which runs the
trial on its worker through the local backend (scripts) or the function backend (Python
functions): the same process handling, GPU rotation and checkpoints as on one host.

- GPUs: workers advertise them as a resource (`dask worker ... --resources GPU=4`); a trial asks
  for `gpus_per_trial` of them (0: CPU only, `CUDA_VISIBLE_DEVICES=""`), and on its worker gets
  that many distinct devices through `CUDA_VISIBLE_DEVICES`.
- Reports reach the tuner as they happen (`Worker.log_event` -> the scheduler -> this client's
  topic), so ASHA decides at each rung; so does a segment's end (how it ended), so the tuner
  fetches no task result from the workers. Stop and pause cancel the segment's task: the worker
  ends the trial's processes within `dask_worker.CHECK_EVERY` seconds.
- Files: `trial_root` (default: the experiment's trials folder) is where each worker keeps
  trial configs, stdout/stderr and checkpoints. Either it is a path every worker reaches (a
  shared filesystem), or `checkpoint_url` (`s3://bucket/prefix`, any fsspec URL) holds the
  checkpoints: the worker running a trial downloads its checkpoint before each segment and
  uploads it at each report (`backends.checkpoint_url`); either way a paused trial resumes on
  any worker from its checkpoint. `{worker}` in `trial_root` becomes each worker's name.
- Faults: a worker that dies fails its trials with the reason (`on_worker_death: fail`) or lets
  Dask run them again on another worker, from their checkpoints (`requeue`); the experiment
  goes on. Losing the scheduler fails the experiment with a message saying how to resume it.
  The tuner's death cancels its tasks (the scheduler drops a vanished client's work), which
  ends every trial on every worker. A tuner gone silent without closing its connection (stopped,
  frozen, its network dropped) stops renewing its lease on the workers, which end its trials
  after `tuner_lease` seconds. A resumed experiment first ends whatever its earlier session
  still runs on the workers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import shlex
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends import dask_worker
from backends.checkpoint_url import check_url
from backends.local import _command
from backends.objectives import ObjectiveError, is_function_entry, objective_from
from backends.process_trials import DRAIN_WAIT_SECONDS, _non_negative, _positive_or_none
from hpo_core.backend import BackendLostError, TrialBackend, TrialContext, poll_interval_seconds
from hpo_core.report import ACK_PATIENCE
from hpo_core.secrets import is_reference, resolver_modules
from hpo_core.trial import EventKind, Trial, TrialEvent

logger = logging.getLogger(__name__)

ON_WORKER_DEATH = ("fail", "requeue")
#: seconds the scheduler may be unreachable before the experiment fails
SCHEDULER_LOSS_TIMEOUT = 5.0
#: seconds a segment's end waits for reports still on their way
REPORTS_GRACE = 2.0
#: default seconds the workers keep a tuner's trials running without hearing from it
TUNER_LEASE = 30.0
#: lease renewals per lease period
RENEWALS_PER_LEASE = 5
#: seconds a call on every worker (end an experiment, probe the checkpoint URL) waits for all
#: answers; a frozen worker never answers
WORKER_CALL_TIMEOUT = 30.0


class ClusterLostError(BackendLostError):
    """The Dask scheduler is gone: the experiment stops (its store can be resumed)."""


@dataclass(eq=False)
class _Segment:
    trial_id: int
    number: int
    future: Any
    worker: str | None = None  # address of the worker running it, once started
    worker_name: str | None = None
    reports: int = 0
    ending: dict[str, Any] | None = None  # how it ended (its "ended" event), awaiting reports
    ending_since: float = 0.0


class DaskBackend(TrialBackend):
    """Runs trials on a Dask cluster (see the module docstring).

    Args:
        entry_point: as for the local backend: a script or command, or a Python function
            (`pkg.module:function`, `file.py:function`, or the object itself from Python).
            Paths must be the same on every worker.
        address: the scheduler, `tcp://host:8786`.
        client: instead of `address`, a `distributed.Client` or a cluster object (it stays open).
        metric: for function trials, the metric a bare returned number is reported as.
        gpus_per_trial: GPUs each trial gets (workers advertise `--resources GPU=n`); 0: none.
        on_worker_death: "fail" (the trials of a dead worker fail with the reason) or
            "requeue" (Dask runs them again elsewhere, from their checkpoints).
        trial_root: the trials folder as the workers see it (default: the experiment's);
            `{worker}` in it becomes each worker's name; the experiment's trials go in its
            `<experiment name>` folder there.
        checkpoint_url: an fsspec URL (`s3://bucket/prefix`) for the trials' checkpoints, when
            the workers share no filesystem; each experiment's go under `<url>/<name>/`.
        checkpoint_options: fsspec storage options for it (`endpoint_url`, `key`, `secret`,
            ...), values may be secret references resolved on the workers; default: the
            workers' own credentials (environment, instance role).
        timeout, stop_grace_period, env, python, reuse_workers: as for the local and function
            backends, applied on the workers (`python`: the workers' interpreter).
        poll_interval: longest wait of `poll()` when nothing happens.
        connect_timeout: seconds to reach the scheduler and find a worker.
        tuner_lease: seconds a worker keeps this tuner's trials running without a renewal of
            its lease (sent every `tuner_lease / 5` seconds); then it ends them.
    """

    distributed = True

    def __init__(
        self,
        entry_point: Any,
        address: str | None = None,
        client: Any = None,
        metric: str | None = None,
        gpus_per_trial: int = 0,
        on_worker_death: str = "fail",
        trial_root: str | None = None,
        timeout: float | None = None,
        stop_grace_period: float = 5.0,
        env: Mapping[str, Any] | None = None,
        python: str | None = None,
        reuse_workers: bool = True,
        poll_interval: float = 0.1,
        connect_timeout: float = 10.0,
        tuner_lease: float = TUNER_LEASE,
        checkpoint_url: str | None = None,
        checkpoint_options: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if isinstance(gpus_per_trial, bool) or not isinstance(gpus_per_trial, int) \
                or gpus_per_trial < 0:
            raise ValueError("backend_options.gpus_per_trial: must be a non-negative integer, "
                             f"got {gpus_per_trial!r}")
        if on_worker_death not in ON_WORKER_DEATH:
            raise ValueError(f"backend_options.on_worker_death: must be one of {ON_WORKER_DEATH}, "
                             f"got {on_worker_death!r}")
        if env is not None and not isinstance(env, Mapping):
            raise ValueError(f"backend_options.env: must be a mapping of names to values, got {env!r}")
        self.gpus_per_trial = gpus_per_trial
        self.on_worker_death = on_worker_death
        self.poll_interval = poll_interval_seconds(poll_interval)
        self.options: dict[str, Any] = {
            "entry_point": _portable_entry_point(entry_point),
            "metric": metric,
            "gpus_per_trial": gpus_per_trial,
            "timeout": _positive_or_none(timeout, "timeout"),
            "stop_grace_period": _non_negative(stop_grace_period, "stop_grace_period"),
            # secret references stay references: the workers resolve them when trials launch
            "env": {str(k): v if is_reference(v) else str(v) for k, v in (env or {}).items()},
            "python": python,
            "poll_interval": 0.05,
            "reuse_workers": bool(reuse_workers),
            "tuner_lease": _lease(tuner_lease),
            # the workers register the resolvers this process has (`prefect:` references)
            "resolvers": resolver_modules(),
            "tuner_acks": False,  # see `set_pausing`
        }
        if checkpoint_url is not None:
            self.options["checkpoint_url"] = check_url(checkpoint_url, checkpoint_options)
            self.options["checkpoint_options"] = dict(checkpoint_options or {})
        self._shared_root = trial_root
        self.client, self._owns_client = _connect(address, client, connect_timeout)
        self.address = self.client.scheduler.address
        try:
            self.workers = _check_workers(self.client, self.address, gpus_per_trial,
                                          connect_timeout)
            _check_entry_point(self.client, self.options["entry_point"])
            if checkpoint_url is not None:
                _check_checkpoint_url(self.client, self.options)
        except BaseException:
            self._close_client()
            raise
        self.session = uuid.uuid4().hex[:12]
        self.experiment = self.session  # until set_context names the experiment
        self._topic = f"tunesmith-{self.session}"
        self._t0 = time.monotonic()
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._segments: dict[int, _Segment] = {}  # the current segment of each running trial
        # events taken by a poll that has not returned (a kill in it leaves them to drain())
        self._unreturned: list[TrialEvent] = []
        # with `set_pausing(True)`: the segments whose reports the last poll returned, and the
        # thread that lets their trials go on (one `Client.run` per batch, off the tuner's loop)
        self._acknowledge_next: list[_Segment] = []
        self._acks: queue.SimpleQueue[dict[str, list[int]] | None] = queue.SimpleQueue()
        self._acker: threading.Thread | None = None
        self._ack_failures = 0  # the first is a warning, later ones debug lines
        self._by_key: dict[str, _Segment] = {}
        self._numbers = 0
        self._lost_since: float | None = None
        self._ran_on: dict[int, str] = {}  # the worker of each trial's latest segment
        self._closed = False
        self.client.subscribe_topic(self._topic, lambda event: self._queue.put(("event", event[1])))
        self.client.subscribe_topic("all", self._on_cluster_event)
        self._stop_renewing = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name=f"tunesmith-lease-{self.session}",
                                         daemon=True)
        self._renewer.start()

    # -- contract ------------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self._t0

    def default_n_workers(self) -> int:
        """Trials the cluster runs at once: per worker, its threads, or its GPU slots."""
        total = 0
        for info in self.workers.values():
            slots = int(info.get("nthreads", 1))
            if self.gpus_per_trial:
                slots = min(slots, int(info.get("resources", {}).get("GPU", 0))
                            // self.gpus_per_trial)
            total += slots
        return max(total, 1)

    def set_context(self, context: TrialContext) -> None:
        """Also names the experiment (by its own trials folder, so two experiments on one
        cluster never take each other for an earlier session) and ends on every worker what
        an earlier session of it still runs. A `trial_root` given in the options may hold other
        experiments' trials too: this one's go in its `<experiment name>` folder there."""
        super().set_context(context)
        own = str(context.root.resolve())
        self.experiment = hashlib.sha1(own.encode()).hexdigest()[:16]
        # checkpoints at the URL go under the experiment's name (a backend used on its own:
        # the name of the folder holding the trials folder, as in a store's <name>/trials)
        name = context.experiment or context.root.resolve().parent.name
        self.options["experiment_name"] = name
        self.options_root = f"{self._shared_root.rstrip('/')}/{name}" if self._shared_root \
            else own
        try:
            ended = self.client.run(dask_worker.end_experiment, self.experiment, self.session,
                                    callback_timeout=WORKER_CALL_TIMEOUT)
        except TimeoutError:
            logger.warning("a Dask worker did not answer within %gs; what an earlier session "
                           "left there ends when its lease runs out", WORKER_CALL_TIMEOUT)
            return
        if any(ended.values()):
            logger.warning("ended %d trials an earlier session of this experiment left running "
                           "on workers %s", sum(ended.values()),
                           sorted(w for w, n in ended.items() if n))

    def set_pausing(self, pausing: bool) -> None:
        """With a scheduler that may pause, each trial waits at its reports until the tuner
        has acted on them (as on the local backend), so a paused trial stops exactly there;
        the acknowledgment is one `Client.run` to the workers per poll (a round trip through
        the scheduler, ~5 ms on loopback, per report). Otherwise the workers let the trials
        go on at once. Set before the first trial starts."""
        self.options["tuner_acks"] = bool(pausing)
        if pausing and self._acker is None:
            self._acker = threading.Thread(target=self._send_acks, daemon=True,
                                           name=f"tunesmith-acks-{self.session}")
            self._acker.start()

    def start(self, trial: Trial) -> None:
        self._submit(trial, "start")

    def resume(self, trial: Trial) -> None:
        self._submit(trial, "resume")

    def pause(self, trial_id: int) -> None:
        """Cancel the segment: its worker ends the trial; the checkpoint stays for `resume`."""
        self.stop(trial_id)

    def stop(self, trial_id: int) -> None:
        segment = self._segments.pop(trial_id, None)
        if segment is not None:
            self._by_key.pop(segment.future.key, None)
            segment.future.cancel()

    def poll(self) -> list[TrialEvent]:
        self._acknowledge_acted()
        events = self._unreturned  # kept there until returned
        try:
            kind, payload = self._queue.get(timeout=self.poll_interval)
            while True:  # each item handled as it is taken (the tuner holds a kill's
                # exception until a poll's events are journaled: `hpo_core.interrupts`)
                if kind == "event":
                    self._on_message(payload, events)
                elif kind == "done":
                    self._on_done(payload, events)
                elif kind == "removed":
                    self._on_worker_removed(payload, events)
                kind, payload = self._queue.get_nowait()
        except queue.Empty:
            pass
        self._finish_ends(events)
        self._check_scheduler()
        self._unreturned = []
        return events

    def drain(self) -> list[TrialEvent]:
        """End the segments now and return the events no poll returned: those a poll cut short
        by the kill had taken, and the reports that reached this client, or reach it within
        DRAIN_WAIT_SECONDS (not the ends of the segments this cancels).

        Each worker first ends this session's trials the local backend's way, which reads
        their last output (`dask_worker.drain_session`), so a report made just after a saved
        checkpoint is not lost; then their segments are cancelled, and each task forwards the
        reports still queued for it and says how many it forwarded in all (its "ended"
        message, after them on the same stream): this waits for exactly those."""
        segments = list(self._segments.values())
        if segments and self.client.status == "running":
            try:
                self.client.run(dask_worker.drain_session, self.session,
                                callback_timeout=WORKER_CALL_TIMEOUT)
            except Exception as err:  # noqa: BLE001 - a frozen worker: its lease ends its trials
                logger.debug("drain: the workers did not end their trials: %s", err)
            try:
                self.client.cancel([s.future for s in segments])
            except Exception as err:  # noqa: BLE001 - a lost cluster: close() ends what is left
                logger.debug("drain: could not cancel the segments: %s", err)
        events, self._unreturned = self._unreturned, []  # taken by a poll the kill cut short
        deadline = time.monotonic() + DRAIN_WAIT_SECONDS
        while True:  # until every report is in (or the deadline), then what is queued already
            waiting = time.monotonic() < deadline and not all(
                s.ending is not None and s.reports >= s.ending["reports"] for s in segments)
            try:
                kind, payload = self._queue.get(timeout=0.05) if waiting \
                    else self._queue.get_nowait()
            except queue.Empty:
                if waiting:
                    continue
                break
            if kind == "event":  # a task's end ("done", "removed") is not an event here
                self._on_message(payload, events)
        self._segments.clear()
        self._by_key.clear()
        return events

    def wake(self) -> None:
        self._queue.put(("wake", None))

    def close(self) -> None:
        """Cancel every segment, close this session on every worker (its trial processes
        end there), and close the client if this backend opened it."""
        if self._closed:
            return
        self._closed = True
        self._stop_renewing.set()
        futures = [s.future for s in self._segments.values()]
        self._segments.clear()
        self._by_key.clear()
        try:
            if futures and self.client.status == "running":
                self.client.cancel(futures)
            if self.client.status == "running":
                self.client.run(dask_worker.end_experiment, self.experiment,
                                callback_timeout=WORKER_CALL_TIMEOUT)
        except Exception as err:  # noqa: BLE001 - a lost cluster or a frozen worker: the
            # workers end the trials when the lease runs out
            logger.warning("could not close the trials on the Dask workers: %s", err)
        finally:
            self._renewer.join(timeout=10)
            if self._acker is not None:
                self._acks.put(None)
                self._acker.join(timeout=10)
            self._close_client()

    def trial_worker(self, trial_id: int) -> str | None:
        """The worker that runs (or ran) the trial's latest segment, `name (address)`, once
        its task has started there."""
        return self._ran_on.get(trial_id)

    # -- internals -----------------------------------------------------------------------------
    def _acknowledge_acted(self) -> None:
        """Let the trials whose reports the last poll returned go on: the tuner has acted on
        them (those it paused or stopped meanwhile have no segment now, and are not)."""
        if not self._acknowledge_next:
            return
        by_worker: dict[str, list[int]] = {}
        for segment in self._acknowledge_next:
            if self._segments.get(segment.trial_id) is segment and segment.worker is not None:
                by_worker.setdefault(segment.worker, []).append(segment.trial_id)
        self._acknowledge_next = []
        if by_worker:
            self._acks.put(by_worker)

    def _send_acks(self) -> None:
        """The acknowledgment thread: what is queued, merged into one call to the workers
        running those trials, until `None` comes."""
        while True:
            batches = [self._acks.get()]
            while True:
                try:
                    batches.append(self._acks.get_nowait())
                except queue.Empty:
                    break
            by_worker: dict[str, list[int]] = {}
            for batch in batches:
                for address, trial_ids in (batch or {}).items():
                    by_worker.setdefault(address, []).extend(trial_ids)
            if by_worker:
                try:
                    self.client.run(dask_worker.acknowledge, self.session, by_worker,
                                    workers=list(by_worker), on_error="ignore",
                                    callback_timeout=WORKER_CALL_TIMEOUT)
                except Exception as err:  # noqa: BLE001 - a lost or frozen worker: its trials
                    # fail or end with it; a trial never acknowledged goes on after ACK_PATIENCE
                    log = logger.debug if self._ack_failures else logger.warning
                    self._ack_failures += 1
                    log("could not acknowledge reports on workers %s (their trials wait for it, "
                        "up to %g s): %s", sorted(by_worker), ACK_PATIENCE, err)
            if None in batches:
                return

    def _renew(self) -> None:
        """Renew this session's lease on every worker until closed (the lease thread). Each
        worker gets its own call, in its own thread, so a frozen worker (whose reply never
        comes) holds up no other worker's renewals; it is skipped while its call is pending."""
        every = self.options["tuner_lease"] / RENEWALS_PER_LEASE
        pending: dict[str, threading.Thread] = {}
        while not self._stop_renewing.is_set():
            try:
                workers = list(self.client.scheduler_info(n_workers=-1)["workers"]) \
                    if self.client.status == "running" else []
            except Exception as err:  # noqa: BLE001 - a lost scheduler: poll() reports it
                logger.debug("listing the Dask workers to renew the lease: %s", err)
                workers = []
            for address in workers:
                if address in pending and pending[address].is_alive():
                    continue
                pending[address] = threading.Thread(
                    target=self._renew_on, args=(address,), daemon=True,
                    name=f"tunesmith-lease-{self.session}-{address}")
                pending[address].start()
            self._stop_renewing.wait(every)

    def _renew_on(self, address: str) -> None:
        try:
            self.client.run(dask_worker.renew_lease, self.session, workers=[address],
                            on_error="ignore")
        except Exception as err:  # noqa: BLE001 - a worker gone meanwhile
            logger.debug("renewing the tuner's lease on worker %s: %s", address, err)

    def _submit(self, trial: Trial, action: str) -> None:
        if self.trial_root is None:
            raise RuntimeError("the tuner has not set the trial root of this backend")
        self.stop(trial.trial_id)
        self._ran_on.pop(trial.trial_id, None)
        self._numbers += 1
        number = self._numbers
        key = f"tunesmith-{self.session}-trial{trial.trial_id}-{number}"
        resources = {"GPU": self.gpus_per_trial} if self.gpus_per_trial else None
        future = self.client.submit(
            dask_worker.run_segment, self.experiment, self.session, self._topic, number,
            self.options, self.options_root, trial, action, key=key, pure=False,
            resources=resources)
        segment = _Segment(trial.trial_id, number, future)
        self._segments[trial.trial_id] = segment
        self._by_key[key] = segment
        future.add_done_callback(lambda f: self._queue.put(("done", (segment, f))))

    def _current(self, trial_id: int, number: int) -> _Segment | None:
        segment = self._segments.get(trial_id)
        return segment if segment is not None and segment.number == number else None

    def _on_message(self, message: dict[str, Any], events: list[TrialEvent]) -> None:
        segment = self._current(message.get("trial", -1), message.get("segment", -1))
        if segment is None:
            return
        if message["kind"] == "started":
            if segment.worker is not None and segment.worker != message["worker"]:
                logger.warning("trial %s runs again, on worker %s", segment.trial_id,
                               message["name"])
            segment.worker, segment.worker_name = message["worker"], message["name"]
            self._ran_on[segment.trial_id] = f"{segment.worker_name} ({segment.worker})"
        elif message["kind"] == "result":
            segment.reports += 1
            if self.options["tuner_acks"]:
                self._acknowledge_next.append(segment)
            events.append(TrialEvent(EventKind.RESULT, segment.trial_id, self.now(),
                                     metrics=message["metrics"]))
        elif message["kind"] == "ended" and segment.ending is None:
            segment.ending = {k: message.get(k) for k in ("outcome", "reason", "reports")}
            segment.ending_since = time.monotonic()

    def _on_done(self, payload: tuple[_Segment, Any], events: list[TrialEvent]) -> None:
        segment, future = payload
        if self._segments.get(segment.trial_id) is not segment:
            return  # stopped, paused or failed already
        if future.status == "finished":
            if segment.ending is None:  # its "ended" message is not in yet: fetch the result
                segment.ending, segment.ending_since = future.result(), time.monotonic()
            return
        if future.status == "cancelled":
            if "connection-lost" in _cancel_reason(future) or self.client.status != "running":
                raise self._lost()  # the scheduler dropped this session's work
            reason = "its Dask task was cancelled outside the tuner"
        else:
            error = future.exception()
            reason = f"{type(error).__name__}: {error}"
            if type(error).__name__ == "KilledWorker":
                reason = f"the workers running it died ({error})"
        self._fail(segment, reason, events)

    def _finish_ends(self, events: list[TrialEvent]) -> None:
        """Segments whose task ended, once their reports are in (or after a grace period)."""
        for segment in list(self._segments.values()):
            ending = segment.ending
            if ending is None or (segment.reports < ending["reports"]
                                  and time.monotonic() - segment.ending_since < REPORTS_GRACE):
                continue
            if ending["outcome"] == "completed":
                self._drop(segment)
                events.append(TrialEvent(EventKind.COMPLETED, segment.trial_id, self.now()))
            else:
                self._fail(segment, ending.get("reason") or ending["outcome"], events)

    def _on_cluster_event(self, event: tuple[float, Any]) -> None:
        message = event[1]
        if isinstance(message, dict) and message.get("action") == "remove-worker":
            self._queue.put(("removed", message))

    def _on_worker_removed(self, message: dict[str, Any], events: list[TrialEvent]) -> None:
        keys = {str(k) for k in message.get("processing-tasks", ())}
        for segment in list(self._segments.values()):
            if str(segment.future.key) not in keys:
                continue
            where = f"worker {segment.worker_name} ({segment.worker})" if segment.worker \
                else "its worker"
            if self.on_worker_death == "requeue":
                logger.warning("trial %s: %s died; Dask runs it again on another worker",
                               segment.trial_id, where)
                continue
            segment.future.cancel()
            self._fail(segment, f"{where} died while running it", events)

    def _fail(self, segment: _Segment, reason: str, events: list[TrialEvent]) -> None:
        self._drop(segment)
        events.append(TrialEvent(EventKind.FAILED, segment.trial_id, self.now(), reason=reason))

    def _drop(self, segment: _Segment) -> None:
        if self._segments.get(segment.trial_id) is segment:
            del self._segments[segment.trial_id]
        self._by_key.pop(segment.future.key, None)

    def _check_scheduler(self) -> None:
        if self.client.status == "running":
            self._lost_since = None
            return
        if self._lost_since is None:
            self._lost_since = time.monotonic()
        if time.monotonic() - self._lost_since >= SCHEDULER_LOSS_TIMEOUT \
                or self.client.status in ("closed", "closing"):
            raise self._lost()

    def _lost(self) -> ClusterLostError:
        return ClusterLostError(
            f"lost the Dask scheduler at {self.address} (client {self.client.status}); its "
            "trials ended with it. The store keeps every report so far: resume the "
            f"experiment (tunesmith resume {self.options.get('experiment_name', '<name>')}) "
            "once the cluster is back")

    def _close_client(self) -> None:
        if self._owns_client:
            try:
                self.client.close(timeout=10)
            except Exception as err:  # noqa: BLE001 - closing after a loss
                logger.info("closing the Dask client: %s", err)


def _lease(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"backend_options.tuner_lease: must be a positive number of seconds, "
                         f"got {value!r}")
    return float(value)


def _portable_entry_point(entry_point: Any) -> Any:
    """The entry point with paths made absolute (workers do not share the tuner's working
    folder), checked as the local or function backend checks it; an absolute path to a file
    this host does not have is left to the workers (`_check_entry_point`)."""
    if not isinstance(entry_point, str | Sequence) or (
            isinstance(entry_point, str) and not entry_point.strip()):
        try:
            objective_from(entry_point)
        except ObjectiveError as err:
            raise ValueError(str(err)) from None
        return entry_point
    script = _script_path(entry_point)
    elsewhere = script is not None and Path(script).is_absolute() and not Path(script).exists()
    if isinstance(entry_point, str) and is_function_entry(entry_point):
        if elsewhere:
            return entry_point
        try:
            objective_from(entry_point)
        except ObjectiveError as err:
            raise ValueError(str(err)) from None
        if script is not None:
            return f"{Path(script).expanduser().resolve()}:{entry_point.rpartition(':')[2]}"
        return entry_point
    if elsewhere:
        return _parts(entry_point)
    command = _command(entry_point, "python")
    if command[0] == "python":  # a .py file: the workers run it with their interpreter
        return command[1:]
    return command


def _parts(entry_point: str | Sequence[Any]) -> list[str]:
    return shlex.split(entry_point) if isinstance(entry_point, str) \
        else [os.fspath(p) for p in entry_point]


def _script_path(entry_point: Any) -> str | None:
    """The `.py` file an entry point runs (a script, or `file.py:function`), if any."""
    if isinstance(entry_point, str) and is_function_entry(entry_point):
        target = entry_point.rpartition(":")[0]
        return target if target.endswith(".py") else None
    try:
        first = _parts(entry_point)[0]
    except (IndexError, TypeError, ValueError):
        return None
    return first if first.endswith(".py") else None


def _check_entry_point(client: Any, entry_point: Any) -> None:
    """An entry point's file must be on every worker, at the same path: else one error
    before anything runs (not a failed trial per worker that lacks it)."""
    script = _script_path(entry_point)
    if script is None:
        return
    found = client.run(os.path.isfile, script)
    missing = sorted(addr for addr, ok in found.items() if not ok)
    if missing:
        where = "any worker" if len(missing) == len(found) else f"workers {missing}"
        raise ValueError(f"backend_options.entry_point: no file {script!r} on {where} of the "
                         "Dask cluster (it must be at the same path on every worker)")


def _connect(address: str | None, client: Any, timeout: float) -> tuple[Any, bool]:
    """A client of the cluster, and whether this backend owns it."""
    try:
        from distributed import Client
    except ModuleNotFoundError:
        raise ValueError("backend: 'dask' needs the distributed package "
                         "(pip install 'tunesmith[dask]')") from None
    if client is not None:
        if address is not None:
            raise ValueError("backend_options: give either 'address' or 'client'")
        if isinstance(client, Client):
            return client, False
        if hasattr(client, "scheduler_address"):  # a cluster object
            return Client(client, timeout=timeout), True
        raise ValueError(f"backend_options.client: expected a distributed.Client or a cluster, "
                         f"got {type(client).__name__}")
    if not isinstance(address, str) or not address.strip():
        raise ValueError("backend_options.address: required (the scheduler, tcp://host:8786)")
    _check_address(address)  # before a Client: a half-made one hangs 2 timeouts as it goes
    try:
        return Client(address, timeout=timeout, set_as_default=False), True
    except (OSError, TimeoutError) as err:
        raise ValueError(f"backend_options.address: cannot reach the Dask scheduler at "
                         f"{address} within {timeout:g}s ({type(err).__name__}: {err})") from None


def _check_address(address: str) -> None:
    """ValueError naming the option for an address Dask cannot connect to by its form (an
    unknown scheme such as http://, no port)."""
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import get_backend

    try:
        scheme, location = parse_address(address)
        get_backend(scheme)
        if scheme != "inproc":
            parse_host_port(location)
    except ValueError as err:
        raise ValueError(f"backend_options.address: {err} (expected tcp://host:port)") from None


def _check_checkpoint_url(client: Any, options: dict[str, Any]) -> None:
    """One error before anything runs when a worker cannot write to the checkpoint URL."""
    url = options["checkpoint_url"]
    try:
        answers = client.run(dask_worker.probe_checkpoint_url, url,
                             options["checkpoint_options"], options["resolvers"],
                             on_error="return",
                             callback_timeout=WORKER_CALL_TIMEOUT)
    except TimeoutError:
        raise ValueError(f"backend_options.checkpoint_url: not every Dask worker answered "
                         f"within {WORKER_CALL_TIMEOUT:g}s whether it can use {url}") from None
    failed = {addr: answer for addr, answer in answers.items() if answer is not None}
    if failed:
        addr, reason = sorted(failed.items())[0]
        raise ValueError(f"backend_options.checkpoint_url: worker {addr} cannot use {url} "
                         f"({reason}; {len(failed)} of {len(answers)} workers failed)")


def _check_workers(client: Any, address: str, gpus_per_trial: int,
                   timeout: float) -> dict[str, dict[str, Any]]:
    """The cluster's workers; an error before anything runs when none could run a trial."""
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise ValueError(f"backend_options.address: the Dask cluster at {address} has no "
                         f"worker (waited {timeout:g}s)") from None
    workers = client.scheduler_info(n_workers=-1)["workers"]
    if gpus_per_trial:
        gpus = {info.get("name", addr): info.get("resources", {}).get("GPU", 0)
                for addr, info in workers.items()}
        most = max(gpus.values(), default=0)
        if most <= 0:
            raise ValueError(
                f"backend_options.gpus_per_trial: {gpus_per_trial} GPUs asked, but no worker of "
                f"the Dask cluster at {address} advertises GPUs (start workers with "
                "--resources GPU=<n>)")
        if most < gpus_per_trial:
            raise ValueError(
                f"backend_options.gpus_per_trial: {gpus_per_trial} is more than any worker has "
                f"(GPUs per worker: {gpus})")
    return workers


def _cancel_reason(future: Any) -> str:
    """Why the scheduler cancelled a future (distributed's `FutureCancelledError.reason`, which
    its `result()` raises; "" when it gives none)."""
    try:
        future.result(timeout=5)
    except CancelledError as err:
        return str(getattr(err, "reason", ""))
    except Exception:  # noqa: BLE001 - a client that cannot answer: no reason known
        return ""
    return ""
