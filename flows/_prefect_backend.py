"""A real backend wrapped so that every trial segment is one Prefect task run.

`start`/`resume` submit a task named after the trial; the task launches the process or job
(so an infrastructure error, an exception from the launch, gets Prefect's retries) and lives
until the segment ends: the trial completed or failed (seen in `poll()`), or the tuner stopped
or paused it. A trial that fails on its own fails its task without a retry; a launch that still
fails after the retries becomes a FAILED event for the tuner. The tuner loop is unchanged: it
polls this wrapper, which polls the real backend. Calls into the real backend are serialized by
one lock, since backends are not written for concurrent use.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.states import Cancelled, Completed, Failed, State
from prefect.tasks import TaskRunNameCallbackWithParameters
from prefect.utilities.annotations import quote

from hpo_core.backend import Fidelity, TrialBackend, TrialContext
from hpo_core.secrets import is_reference, mask_text, one_line, redact
from hpo_core.space import ConfigSpace
from hpo_core.trial import EventKind, Trial, TrialEvent, TrialStatus
from hpo_core.trial_value import format_value

# Names of a segment task's Completed state (Prefect's own "Paused" is another state type).
STATE_NAMES = {"completed": "Completed", "stopped": "Stopped", "paused": "Trial paused"}


class TrialFailed(Exception):
    """The trial itself failed (its script crashed or reported garbage): never retried."""


@dataclass
class _Segment:
    trial_id: int
    action: str  # "start" or "resume"
    done: threading.Event = field(default_factory=threading.Event)
    outcome: str | None = None  # completed, failed, stopped, paused, interrupted
    reason: str | None = None
    launch_error: str | None = None
    future: PrefectFuture[Any] | None = None
    # the trial's last report as of the poll that ended the segment: the tuner may not have
    # applied that poll's reports to `trial.last_result` yet when the task writes its message
    last_report: dict[str, Any] | None = None
    where: str | None = None  # distributed backends: the worker running it, once known
    located: threading.Event = field(default_factory=threading.Event)  # where is known, or ended

    def end(self, outcome: str, reason: str | None = None) -> bool:
        if self.done.is_set():
            return False
        self.outcome, self.reason = outcome, reason
        self.done.set()
        self.located.set()
        return True


def _retry_infrastructure_errors(_task: Any, _task_run: Any, state: State) -> bool:
    try:
        state.result()
    except (TrialFailed, TypeError, ValueError):  # the trial's own failure, or a user error
        return False
    except Exception:  # noqa: BLE001 - launch errors (OSError, throttling, ...) are retried
        return True
    return False


@task(cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=[2, 10],
      retry_condition_fn=_retry_infrastructure_errors)
def trial_segment(backend: PrefectTrialBackend, trial: Trial, segment: _Segment) -> State:
    """Launch one segment of a trial and wait for its end."""
    try:
        backend._launch(trial, segment)
    except Exception as err:
        segment.launch_error = f"{type(err).__name__}: {err}"
        raise
    where = _await_worker(backend.inner, trial.trial_id, segment) if backend.distributed \
        else None
    segment.done.wait()
    on = f" on worker {where}" if where else ""
    if segment.outcome == "failed":  # a state, not a raise: no traceback of ours in the logs
        message = one_line(f"trial {trial.trial_id} failed{on}: {segment.reason}")
        return Failed(data=TrialFailed(message), message=message)
    outcome = segment.outcome or "completed"
    if outcome == "stopped" and trial.status == TrialStatus.COMPLETED:
        outcome = "completed"  # stopped by the scheduler at max_t: it ran its course
    report = segment.last_report if segment.last_report is not None else trial.last_result
    message = segment_message(trial.trial_id, outcome, report) + on
    if outcome == "interrupted":  # the tuner was: a resume continues the trial
        return Cancelled(message=message)
    return Completed(message=message, name=STATE_NAMES.get(outcome, "Completed"))


def _await_worker(backend: TrialBackend, trial_id: int, segment: _Segment) -> str | None:
    """For backends that run trials on other machines (`trial_worker`, the dask backend): the
    worker running this segment (`poll()` finds it), logged in the task once it is known."""
    segment.located.wait()
    if segment.where and not segment.done.is_set():
        get_run_logger().info("trial %s runs on worker %s", trial_id, segment.where)
        return segment.where
    return segment.where or backend.trial_worker(trial_id)


def _segment_task_name(parameters: dict[str, Any]) -> str:
    """The task run's name, from its arguments (see `task_run_name`)."""
    return task_run_name(parameters["trial"], parameters["segment"].action)


def segment_message(trial_id: int, outcome: str, last_report: dict[str, Any] | None) -> str:
    """`trial 3 stopped early; last report: epoch=9 val_loss=0.114` (the task's state message)."""
    text = f"trial {trial_id} {'stopped early' if outcome == 'stopped' else outcome}"
    report = {k: v for k, v in (last_report or {}).items()
              if isinstance(v, int | float) and not isinstance(v, bool)}
    if report:
        text += "; last report: " + " ".join(f"{k}={format_value(v)}" for k, v in report.items())
    return text


def task_run_name(trial: Trial, action: str) -> str:
    """`trial-3 lr=0.01 batch_size=64` (with `resume` for a resumed segment), at most 120 chars;
    secrets masked (`hpo_core.secrets.redact`)."""
    config = " ".join(f"{k}={_short(v)}" for k, v in redact(trial.config).items())
    head = f"trial-{trial.trial_id}" + (" resume" if action == "resume" else "")
    name = f"{head} {config}".strip()
    return name if len(name) <= 120 else name[:117] + "..."


def _short(value: Any) -> str:
    if is_reference(value):
        return f"<{value['secret']}>"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class PrefectTrialBackend(TrialBackend):
    """Runs each trial segment of `backend` as a Prefect task (see the module docstring).

    Args:
        backend: the real backend (local processes, SageMaker jobs).
        retries: Prefect retries of a segment whose launch raised.
        retry_delay_seconds: waits between those retries.
    """

    def __init__(self, backend: TrialBackend, retries: int = 2,
                 retry_delay_seconds: Sequence[float] | float = (2.0, 10.0)):
        super().__init__()
        self.inner = backend
        self.clock_kind = backend.clock_kind
        self.restores_running_trials = backend.restores_running_trials
        self.distributed = backend.distributed
        self._lock = threading.RLock()
        self._contenders = 0
        self._counter = threading.Lock()
        self._segments: dict[int, _Segment] = {}
        self._failed_launches: list[TrialEvent] = []
        self._unlocated: dict[int, _Segment] = {}  # distributed: segments not yet placed
        self._task = trial_segment.with_options(
            # Prefect calls a name function that takes `parameters` with the task's arguments;
            # its protocol type also has a classmethod, which no plain function has
            task_run_name=cast(TaskRunNameCallbackWithParameters, _segment_task_name),
            retries=retries,
            retry_delay_seconds=retry_delay_seconds if isinstance(retry_delay_seconds, float | int)
            else list(retry_delay_seconds))

    # -- delegation: the wrapped backend's clock, files and capabilities ----------------------
    def set_context(self, context: TrialContext) -> None:
        super().set_context(context)
        self.inner.set_context(context)

    def now(self) -> float:
        return self.inner.now()

    def default_n_workers(self) -> int:
        return self.inner.default_n_workers()

    def max_n_workers(self) -> int:
        return self.inner.max_n_workers()

    def config_space(self) -> ConfigSpace | None:
        return self.inner.config_space()

    def fidelity(self) -> Fidelity | None:
        return self.inner.fidelity()

    def trial_worker(self, trial_id: int) -> str | None:
        return self.inner.trial_worker(trial_id)

    def state_dict(self) -> dict[str, Any]:
        with self._lock:
            return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with self._lock:
            self.inner.load_state_dict(state)

    # -- trials ------------------------------------------------------------------------------
    def start(self, trial: Trial) -> None:
        self._submit(trial, "start")

    def resume(self, trial: Trial) -> None:
        self._submit(trial, "resume")

    def pause(self, trial_id: int) -> None:
        with self._lock:
            self.inner.pause(trial_id)
        self._end(trial_id, "paused")

    def stop(self, trial_id: int) -> None:
        with self._lock:
            self.inner.stop(trial_id)
        self._end(trial_id, "stopped")

    def poll(self) -> list[TrialEvent]:
        # let tasks waiting to launch go first (the lock is not fair)
        deadline = time.monotonic() + 1.0
        while self._contenders and time.monotonic() < deadline:
            time.sleep(0.002)
        with self._lock:
            events, self._failed_launches = self._failed_launches, []
            events += self.inner.poll()
        self._locate()
        self._note_reports(events)
        for event in events:
            if event.kind in (EventKind.COMPLETED, EventKind.FAILED):
                self._end(event.trial_id, event.kind.value, event.reason)
        return events

    def _note_reports(self, events: Sequence[TrialEvent]) -> None:
        """Each open segment's last report, for its task's message."""
        for event in events:
            if event.kind == EventKind.RESULT and event.metrics is not None:
                segment = self._segments.get(event.trial_id)
                if segment is not None and not segment.done.is_set():
                    segment.last_report = event.metrics

    def wake(self) -> None:
        self.inner.wake()

    def set_pausing(self, pausing: bool) -> None:
        self.inner.set_pausing(pausing)

    def drain(self) -> list[TrialEvent]:
        """The real backend's drain(), and the launches that failed for good meanwhile."""
        with self._lock:
            events, self._failed_launches = self._failed_launches, []
            events += self.inner.drain()
        self._note_reports(events)
        return events

    def close(self) -> None:
        """Close the real backend; a segment still open is one the tuner did not end (it was
        interrupted: a finished experiment stops its trials first), and its task is
        Cancelled."""
        with self._lock:
            self.inner.close()
        for segment in list(self._segments.values()):
            segment.end("interrupted")
        for segment in list(self._segments.values()):
            if segment.future is not None:
                segment.future.wait(timeout=30)

    # -- internals ---------------------------------------------------------------------------
    def _submit(self, trial: Trial, action: str) -> None:
        segment = _Segment(trial.trial_id, action)
        self._segments[trial.trial_id] = segment
        if self.distributed:
            self._unlocated[trial.trial_id] = segment
        # quote(): Prefect unwraps it before the call, but its Task types do not model it
        future = self._task.submit(  # type: ignore[call-overload]
            quote(self), quote(trial), quote(segment))
        segment.future = future
        future.add_done_callback(lambda _: self._on_task_done(segment))

    def _launch(self, trial: Trial, segment: _Segment) -> None:
        """Called in the task: start or resume the trial in the real backend."""
        with self._counter:
            self._contenders += 1
        self.inner.wake()  # a poll waiting under the lock returns now
        try:
            with self._lock:
                if segment.done.is_set():
                    return
                if segment.action == "resume":
                    self.inner.resume(trial)
                else:
                    self.inner.start(trial)
        finally:
            with self._counter:
                self._contenders -= 1

    def _locate(self) -> None:
        """Tell the tasks of segments that now run on a known worker where that is."""
        for trial_id, segment in list(self._unlocated.items()):
            where = self.inner.trial_worker(trial_id) if not segment.done.is_set() else None
            if where or segment.done.is_set():
                segment.where = where
                segment.located.set()
                if self._unlocated.get(trial_id) is segment:
                    del self._unlocated[trial_id]

    def _on_task_done(self, segment: _Segment) -> None:
        """A task that ended before its segment did: its launch failed for good."""
        if segment.done.is_set():
            return
        reason = mask_text("infrastructure error, retries exhausted: "
                           f"{segment.launch_error or 'unknown'}")
        if segment.end("failed", reason):
            with self._lock:
                self._failed_launches.append(TrialEvent(
                    EventKind.FAILED, segment.trial_id, self.inner.now(), reason=reason))

    def _end(self, trial_id: int, outcome: str, reason: str | None = None) -> None:
        segment = self._segments.get(trial_id)
        if segment is not None:
            segment.end(outcome, reason)
