"""What script trials and function trials share: each trial segment runs in a process here.

`ProcessTrialBackend` is the base of `backends.local.LocalBackend` (one subprocess per run of
a script) and `backends.functions.FunctionBackend` (a run of a Python function in a worker
process). It holds what both do the same way: the options they share (GPUs, timeout, extra
environment, interpreter, poll interval), a trial's files and checkpoint copy (PBT), the GPU
rotation, the queue that the subclass's reader threads fill and `poll()` drains, timeouts,
pending launches (a resumed trial waits until its previous run is over, and a new one until a
stopped run has freed its GPU), and the time and reports of each trial over all its runs.

Reports are acknowledged: a run's reporter waits after each report until the tuner has acted on
it, so that a trial paused at a report is ended there (its checkpoint is the one saved before
that report, no epoch run past it). The reports a `poll()` returns are acknowledged at the next
`poll()` (the tuner has acted on them by then), except for runs cancelled meanwhile.

A subclass starts a run (`_launch`), ends its processes (`_end_now`), turns what its reader
threads queued into events (`_handle`, calling `_reported_by` for each report), lets a run go
on past a report (`_send_ack`), names the runs whose processes may still be alive
(`_live_runs`, `_over`, `_exited`) and ends everything in `close()`.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import sys
import tempfile
import time
from abc import abstractmethod
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from backends import processes
from backends.checkpoints import settled_copy
from backends.gpus import GpuRotation, detect_gpus
from hpo_core.backend import TrialBackend, TrialContext, poll_interval_seconds
from hpo_core.report import DISTRIBUTED_ENV
from hpo_core.secrets import is_reference, known_values, mask_text, resolve
from hpo_core.trial import EventKind, Trial, TrialEvent

logger = logging.getLogger(__name__)

STDERR_TAIL_LINES = 10
#: ... read from at most this many bytes at its end
STDERR_TAIL_BYTES = 8192
#: seconds `drain()` waits for the last output of the trials it ends
DRAIN_WAIT_SECONDS = 3.0


@dataclass(eq=False, kw_only=True)
class ProcessRun:
    """One segment of a trial (a start or a resume), run in a process."""

    trial_id: int
    started: float  # monotonic
    deadline: float | None  # monotonic time after which the run has timed out
    stderr_path: Path
    stderr_offset: int  # its stderr starts here in the trial's stderr file
    gpu_key: tuple[int, int] | None = None  # its assignment in the GPU rotation
    num_reports: int = 0
    cancelled: bool = False  # stopped, paused or timed out: its later events are dropped


RunT = TypeVar("RunT", bound=ProcessRun)


class ProcessTrialBackend(TrialBackend, Generic[RunT]):
    """Trials whose segments run in processes on this machine (see the module docstring).

    Args:
        gpus: "auto" (detect with nvidia-smi; none found: CPU only), a list of GPU ids (or a
            string "0,2,3") to rotate over, [] to hide all GPUs (CUDA_VISIBLE_DEVICES=""), or
            None to leave CUDA_VISIBLE_DEVICES alone.
        gpus_per_trial: GPUs given to each trial, always the least busy ones.
        timeout: seconds a trial may run in all (its runs summed); then it fails.
        env: extra environment variables (secret references resolved at each launch).
        python: the interpreter (default: the current one).
        poll_interval: longest wait of `poll()` when nothing happens.
    """

    def __init__(
        self,
        *,
        gpus: str | Sequence[int | str] | None,
        gpus_per_trial: int,
        timeout: float | None,
        env: Mapping[str, Any] | None,
        python: str | None,
        poll_interval: float,
    ):
        super().__init__()
        if python is not None and (not isinstance(python, str) or shutil.which(python) is None):
            raise ValueError(f"backend_options.python: no such executable: {python!r}")
        self.python = python or sys.executable
        self.timeout = _positive_or_none(timeout, "timeout")
        self.poll_interval = poll_interval_seconds(poll_interval)
        if env is not None and not isinstance(env, Mapping):
            raise ValueError(f"backend_options.env: must be a mapping of names to values, got {env!r}")
        self.env = {str(k): v if is_reference(v) else str(v) for k, v in (env or {}).items()}
        self.rotation, self.hide_gpus = _gpu_setup(gpus, gpus_per_trial)
        self._t0 = time.monotonic()
        # (kind, source, payload, backend time) from the reader threads; ("wake", ...) from wake()
        self._queue: queue.SimpleQueue[tuple[str, Any, Any, float]] = queue.SimpleQueue()
        self._active: dict[int, RunT] = {}  # the current run of each running trial
        self._pending: dict[int, Trial] = {}  # launches waiting for an old run or a GPU
        self._reported: dict[int, int] = {}  # reports per trial over all its runs
        self._copied_in: set[int] = set()  # trials started from a checkpoint put in place
        self._temporary_root: Path | None = None  # a trial folder made here, removed at close
        self._elapsed: dict[int, float] = {}  # seconds run per trial, ended runs
        # events no poll returned yet: raised outside poll (failed launches), or taken by a
        # poll that has not returned (a kill in it leaves them to `drain()`)
        self._early: list[TrialEvent] = []
        self._unacknowledged: list[RunT] = []  # one entry per report returned by poll()
        #: each poll acknowledges the reports the last one returned; off where another process
        #: decides (a Dask worker's backend, told by the tuner through `acknowledge`)
        self.auto_acknowledge = True
        self._gpu_launches = 0

    # -- what a subclass does ------------------------------------------------------------------
    @abstractmethod
    def _launch(self, trial: Trial) -> None:
        """Start a run of the trial now (a failed start: `_launch_failed`)."""

    @abstractmethod
    def _end_now(self, run: RunT) -> None:
        """Start ending a run's processes now (the backend's way: a grace period or not)."""

    @abstractmethod
    def _handle(self, kind: str, source: Any, payload: Any, t: float,
                events: list[TrialEvent]) -> None:
        """One item a reader thread queued, turned into events."""

    @abstractmethod
    def _send_ack(self, run: RunT) -> None:
        """Let a run that is still wanted go on past one report."""

    @abstractmethod
    def _live_runs(self) -> Iterable[RunT]:
        """Runs whose process may still be alive."""

    @abstractmethod
    def _over(self, run: RunT) -> bool:
        """Whether the run is over: a new run of its trial may start."""

    @abstractmethod
    def _exited(self, run: RunT) -> bool:
        """Whether the run's process has exited (its GPUs are free)."""

    # -- contract ------------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self._t0

    def default_n_workers(self) -> int:
        """Trials to run at once: one per GPU slot when there are GPUs, else one per CPU."""
        if self.rotation is not None and self.rotation.num_slots > 0:
            return self.rotation.num_slots
        return _cpu_count()

    def start(self, trial: Trial) -> None:
        checkpoint = self.checkpoint_dir(trial.trial_id)
        if trial.checkpoint_from is not None:
            source = self.checkpoint_dir(trial.checkpoint_from)
            copy_checkpoint(source, checkpoint, trial.checkpoint_from)
        if checkpoint.is_dir() and any(checkpoint.iterdir()):  # copied (PBT), or downloaded
            self._copied_in.add(trial.trial_id)
        config_path = self.trial_dir(trial.trial_id) / "config.json"
        if not config_path.exists():
            _write_json(config_path, trial.config)
        self._launch_when_ready(trial)

    def resume(self, trial: Trial) -> None:
        _write_json(self.trial_dir(trial.trial_id) / "config.json", trial.config)
        # A trial that already reported (also in an earlier session) may end without a new report.
        tid = trial.trial_id
        self._reported[tid] = max(self._reported.get(tid, 0), trial.num_results)
        self._launch_when_ready(trial)

    def pause(self, trial_id: int) -> None:
        """End the trial's run; its checkpoint folder stays for `resume`."""
        self.stop(trial_id)

    def stop(self, trial_id: int) -> None:
        self._pending.pop(trial_id, None)
        run = self._active.pop(trial_id, None)
        if run is not None:
            self._cancel(run)

    def poll(self) -> list[TrialEvent]:
        events = self._early  # kept there until returned
        self._housekeeping(events)
        self._take_queued(events, wait=0 if events else self.poll_interval)
        self._launch_pending()
        self._early = []
        events.sort(key=lambda e: e.time)
        return events

    def drain(self) -> list[TrialEvent]:
        """End the running trials now and return what they reported that no poll returned.

        Their processes are ended as `stop` would end them, and this waits (up to
        DRAIN_WAIT_SECONDS) until what they printed or sent before they ended is read, so a
        report that follows a saved checkpoint is not lost. Their ends are not events: the tuner is
        being interrupted, the trials did not fail (they are resumed from their checkpoints);
        `close()` ends whatever is left."""
        runs = list(self._active.values())
        self._active.clear()  # so that their ends make no event
        self._pending.clear()
        for run in runs:
            self._end_for_drain(run)
        deadline = time.monotonic() + DRAIN_WAIT_SECONDS
        while not all(self._over(run) for run in runs) and time.monotonic() < deadline:
            time.sleep(0.01)
        events, self._early = self._early, []
        self._take_queued(events, wait=0)
        events.sort(key=lambda e: e.time)
        return events

    def _take_queued(self, events: list[TrialEvent], wait: float) -> None:
        """What the reader threads queued, turned into events; waits up to `wait` seconds for
        the first item."""
        try:
            item = self._queue.get(timeout=wait)
            while True:  # each item handled as it is taken (a kill loses none taken before)
                kind, source, payload, t = item
                if kind != "wake":
                    self._handle(kind, source, payload, t, events)
                item = self._queue.get_nowait()
        except queue.Empty:
            pass

    def wake(self) -> None:
        self._queue.put(("wake", None, None, 0.0))

    def set_context(self, context: TrialContext) -> None:
        """Also end what an earlier, killed session of this experiment left running (found
        through its process records), before anything is launched here."""
        super().set_context(context)
        ended = processes.reconcile(context.root.glob("*/processes/*.json"))
        if ended:
            logger.warning("ended %d processes an earlier session of this experiment left",
                           len(ended))

    def state_dict(self) -> dict[str, Any]:
        """Run time per trial (for timeouts); live processes are in their records instead."""
        return {"elapsed": {str(k): v for k, v in self._elapsed.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore run times."""
        self._elapsed = {int(k): float(v) for k, v in state.get("elapsed", {}).items()}

    # -- launching -----------------------------------------------------------------------------
    def _context(self) -> TrialContext:
        """The trial context; a temporary folder when the tuner set none."""
        if self.context is None:
            self._temporary_root = Path(tempfile.mkdtemp(prefix="tunesmith-trials-"))
            self.set_trial_root(self._temporary_root)
            logger.info("no trial root set: trial files go to %s (removed when the backend "
                        "closes; a store keeps them)", self.trial_root)
        return super()._context()

    def _remove_temporary_root(self) -> None:
        """Remove the trial folder `_context` made for want of one (closing: nothing else
        knows it)."""
        root, self._temporary_root = self._temporary_root, None
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)

    def _environment(self) -> dict[str, str]:
        """This process's environment for a run, less a distributed launch's own variables,
        plus `env` (secret references resolved for this launch only)."""
        env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV}
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(resolve(self.env, "backend_options.env"))
        return env

    def _assign_gpus(self, trial_id: int) -> tuple[tuple[int, int] | None, str | None]:
        """A run's key in the GPU rotation and its CUDA_VISIBLE_DEVICES (None: left alone)."""
        if self.hide_gpus:
            return None, ""
        if self.rotation is None:
            return None, None
        self._gpu_launches += 1
        key = (trial_id, self._gpu_launches)
        return key, ",".join(self.rotation.acquire(key))

    def _deadline(self, trial_id: int, now: float) -> float | None:
        """When a run starting at `now` times out (the trial's earlier runs counted)."""
        if self.timeout is None:
            return None
        return now + max(0.0, self.timeout - self._elapsed.get(trial_id, 0.0))

    def _launch_failed(self, trial_id: int, gpu_key: tuple[int, int] | None, reason: str) -> None:
        if gpu_key is not None and self.rotation is not None:
            self.rotation.release(gpu_key)
        self._early.append(TrialEvent(EventKind.FAILED, trial_id, self.now(), reason=reason))

    def _launch_when_ready(self, trial: Trial) -> None:
        """Launch now, or from `poll()` once the trial's previous run is over and a GPU is
        free."""
        if self._ready(trial.trial_id):
            self._launch(trial)
            return
        self._pending[trial.trial_id] = trial
        if self._waits_for_gpu():
            logger.info("trial %s waits for the GPU of a stopped or paused trial", trial.trial_id)

    def _ready(self, trial_id: int) -> bool:
        previous = any(r.trial_id == trial_id and not self._over(r) for r in self._live_runs())
        return not previous and not self._waits_for_gpu()

    def _waits_for_gpu(self) -> bool:
        """No GPU is free now, but one will be once a stopped or paused trial's process has
        exited, and the trials still running leave a slot. Starting at once would put two
        trials on one GPU until then, and the new one could run out of GPU memory. (A child
        that left the trial's process group is not waited for.) A stopped run whose process
        has exited frees its GPU here, before `poll()` sees its end: else the rotation would
        still count it and the new trial could be given the GPU of a running one."""
        rotation = self.rotation
        if rotation is None:
            return False
        exiting = False
        for run in list(self._live_runs()):
            if run.cancelled and run.gpu_key is not None:
                if self._exited(run):
                    self._release_gpus(run)
                else:
                    exiting = True
        return exiting and rotation.free_slots() == 0 and len(self._active) < rotation.num_slots

    def _launch_pending(self) -> None:
        for tid, trial in list(self._pending.items()):
            if self._ready(tid):
                del self._pending[tid]
                self._launch(trial)

    # -- runs ----------------------------------------------------------------------------------
    def _reported_by(self, run: RunT, metrics: dict[str, Any], t: float,
                     events: list[TrialEvent]) -> None:
        """A report of a run (dropped if the run was cancelled): an event, acknowledged at the
        next poll."""
        if run.cancelled:
            return
        self._unacknowledged.append(run)
        events.append(TrialEvent(EventKind.RESULT, run.trial_id, t, metrics=metrics))

    def _acknowledge(self) -> None:
        """Let the runs go on past the reports the last `poll()` returned: the tuner has acted
        on them (a run it paused or stopped meanwhile is ended, never acknowledged)."""
        runs, self._unacknowledged = self._unacknowledged, []
        for run in runs:
            if not run.cancelled:
                self._send_ack(run)

    def acknowledge(self, trial_ids: Collection[int]) -> None:
        """Let these trials go on past the reports polled so far (`auto_acknowledge` off: the
        process that decides says when; a paused or stopped run is never acknowledged)."""
        keep = []
        for run in self._unacknowledged:
            if run.cancelled:
                continue
            if run.trial_id in trial_ids:
                self._send_ack(run)
            else:
                keep.append(run)
        self._unacknowledged = keep

    def _cancel(self, run: RunT) -> None:
        """End a run the tuner no longer wants (stop, pause, timeout); its later reports and
        its end are dropped."""
        run.cancelled = True
        self._end_now(run)

    def _housekeeping(self, events: list[TrialEvent]) -> None:
        """What each poll does before it reads the queue: acknowledge the reports the last poll
        returned (unless another process does), and fail the runs that timed out."""
        if self.auto_acknowledge:
            self._acknowledge()
        now = time.monotonic()
        for tid, run in list(self._active.items()):
            if run.deadline is not None and now >= run.deadline:
                del self._active[tid]
                self._cancel(run)
                reason = f"timed out after {self.timeout:g}s" + self._stderr_tail(run)
                events.append(TrialEvent(EventKind.FAILED, tid, self.now(), reason=reason))

    def _end_for_drain(self, run: RunT) -> None:
        """End a run because the tuner is being interrupted (`drain`): as `stop` would."""
        self._end_now(run)

    def _ended_complete(self, trial_id: int) -> bool:
        """Whether a run that ended normally completed its trial (else it failed, "without
        reporting"): the trial reported (in this run, an earlier one or an earlier session), or
        it started from another trial's checkpoint, which may have trained to the end already
        and leave nothing to report (PBT: a parent whose script ran ahead of the reports the
        tuner had seen; Syne Tune counts such a trial as completed too)."""
        return self._reported[trial_id] > 0 or trial_id in self._copied_in

    def _run_ended(self, run: RunT) -> bool:
        """Count an ended run's time and reports and free its GPUs. True when it was its
        trial's current run (no longer active then): the tuner hears how it ended."""
        tid = run.trial_id
        self._elapsed[tid] = self._elapsed.get(tid, 0.0) + time.monotonic() - run.started
        self._reported[tid] = self._reported.get(tid, 0) + run.num_reports
        self._release_gpus(run)
        if run.cancelled or self._active.get(tid) is not run:
            return False
        del self._active[tid]
        return True

    def _release_gpus(self, run: RunT) -> None:
        """Once per run (its end may come after `_waits_for_gpu` released them)."""
        if self.rotation is not None and run.gpu_key is not None:
            self.rotation.release(run.gpu_key)
            run.gpu_key = None

    def _stderr_tail(self, run: RunT) -> str:
        return stderr_tail(run.stderr_path, run.stderr_offset)


# -- helpers -------------------------------------------------------------------------------------
def copy_checkpoint(source: Path, target: Path, source_id: int) -> None:
    """Copy trial `source_id`'s checkpoint folder into `target` (PBT), half-written files left
    out; without one, or if it never stopped changing (a torn copy could crash the trial),
    the trial starts fresh."""
    if not source.is_dir():
        logger.warning("trial %s has no checkpoint to copy; starting fresh", source_id)
    elif not settled_copy(source, target, keep_unsettled=False):  # waits for one written in place
        logger.warning("trial %s's checkpoint kept changing while it was copied (written in "
                       "place?); starting fresh rather than from a torn copy", source_id)


def stderr_tail(path: Path, offset: int) -> str:
    """The last `STDERR_TAIL_LINES` non-empty lines a run wrote to its stderr file after
    `offset` (of its last STDERR_TAIL_BYTES), for a failure reason, secrets masked. The bytes
    before that window that a secret cut by it could start in are read and masked too: the
    tail never holds part of a secret."""
    margin = max((len(value.encode()) for value in known_values()), default=0)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(offset, size - STDERR_TAIL_BYTES - margin))
            text = mask_text(f.read().decode("utf-8", "replace"))[-STDERR_TAIL_BYTES:]
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if line.strip()][-STDERR_TAIL_LINES:]
    return "; stderr:\n" + "\n".join(lines) if lines else " (stderr empty)"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _gpu_setup(gpus: Any, gpus_per_trial: int) -> tuple[GpuRotation | None, bool]:
    """The GPU rotation (None: GPUs left alone) and whether to hide all GPUs."""
    if isinstance(gpus_per_trial, bool) or not isinstance(gpus_per_trial, int) or gpus_per_trial < 1:
        raise ValueError(
            f"backend_options.gpus_per_trial: must be a positive integer, got {gpus_per_trial!r}")
    if gpus is None:
        return None, False
    if gpus == "auto":
        found = detect_gpus()
        if not found:
            return None, False
        try:
            return GpuRotation(found, gpus_per_trial), False
        except ValueError as err:
            raise ValueError(f"backend_options.{err}") from None
    if isinstance(gpus, str):
        gpus = [g.strip() for g in gpus.split(",") if g.strip()]
    if not isinstance(gpus, Sequence) or not all(_is_gpu_id(g) for g in gpus):
        raise ValueError(f"backend_options.gpus: must be 'auto', a list of GPU ids (indices, or "
                         f"UUIDs as nvidia-smi -L prints them) or null, got {gpus!r}")
    if not gpus:
        return None, True
    ids = [str(g) for g in gpus]
    stats = {g.index: g for g in detect_gpus()}
    try:
        rotation = GpuRotation([stats.get(i, i) for i in ids], gpus_per_trial)
    except ValueError as err:
        raise ValueError(f"backend_options.{err}") from None
    return rotation, False


def _is_gpu_id(value: Any) -> bool:
    """A GPU id CUDA_VISIBLE_DEVICES takes: an index (0, "1"), or a GPU or MIG UUID."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, str) and (value.isdigit() or value.startswith(("GPU-", "MIG-")))


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=_json_default, allow_nan=True))
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _positive_or_none(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"backend_options.{name}: must be a positive number of seconds, got {value!r}")
    return float(value)


def _non_negative(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"backend_options.{name}: must be a non-negative number, got {value!r}")
    return float(value)
