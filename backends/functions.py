"""Python functions and classes as trials, in worker processes this backend owns.

The local backend's other half (`backend: local` with `entry_point: "pkg.module:objective"` or
`"path/to/file.py:objective"`, or an objective object from `tunesmith.tune`): each trial runs in
a worker process (`backends.function_worker`), never in the tuner's process, so a crash, a
`sys.exit`, a segfault or an OOM kill fails that trial only. A worker is started with its
`CUDA_VISIBLE_DEVICES` in its environment, before the user's code is imported, and is reused
only for a trial with the same GPU assignment. Workers stay alive between trials (the objective
imported once; `reuse_workers=False` gives each trial a fresh process, started ahead of time),
so a short trial does not pay for an interpreter start. Stop, pause and timeouts kill the
worker's whole process tree at once (SIGKILL); the next trial takes another worker or starts
one. `backends.processes` starts and ends workers, so they also die with the tuner, and a
resumed experiment ends what a killed one left (their records lie in `trials/.workers/`). A
paused trial resumes from its checkpoint through the same helpers as scripts
(`hpo_core.report`). Reports reach the
tuner as they happen, over a pipe read by one thread per worker; a report returns in the trial
once the tuner has acted on it (the next `poll()`), so a trial paused at a report resumes from
the checkpoint it saved before that report, and no report is lost to a pause.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends import processes
from backends.local import (
    _cpu_count,
    _gpu_setup,
    _non_negative,
    _positive_or_none,
    _signal_name,
    _write_json,
    copy_checkpoint,
    stderr_tail,
)
from backends.objectives import Objective, objective_from
from hpo_core.backend import TrialBackend, TrialContext
from hpo_core.report import DISTRIBUTED_ENV
from hpo_core.secrets import resolve
from hpo_core.trial import EventKind, Trial, TrialEvent

logger = logging.getLogger(__name__)

WORKER_MODULE = "backends.function_worker"
#: Set in every worker: `tunesmith.tune` refuses to run inside one.
WORKER_ENV = "TUNESMITH_WORKER"
#: Under the trial root: the workers' process records (they belong to no one trial).
WORKERS_DIR = ".workers"
_ROOT = str(Path(__file__).resolve().parent.parent)  # the folder holding `backends`


@dataclass(eq=False)
class _Worker:
    """One worker process (the root of its process tree) and its pipes."""

    tree: processes.ProcessTree
    to_worker: int  # fd: trials go in
    gpus: str | None  # its CUDA_VISIBLE_DEVICES (None: inherited)
    run: _Run | None = None  # the trial run it is busy with
    killed: bool = False
    dead: threading.Event = field(default_factory=threading.Event)  # exited and reaped
    thread: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.tree.pid


@dataclass(eq=False)
class _Run:
    """One segment of a trial (a start or a resume) on one worker."""

    token: int
    trial_id: int
    worker: _Worker
    started: float  # monotonic: sent to the worker, then taken up by it
    deadline: float | None  # from the launch, then from when the worker took it up
    stderr_offset: int
    gpu_key: tuple[int, int] | None
    num_reports: int = 0
    cancelled: bool = False  # stopped, paused or timed out: later events are dropped
    ended: bool = False


class FunctionBackend(TrialBackend):
    """Runs a Python objective's trials in worker processes (see the module docstring).

    Args:
        entry_point: `"pkg.module:objective"`, `"path/to/file.py:objective"`, or the function
            or class itself.
        metric: the metric an objective's returned number is reported as.
        gpus, gpus_per_trial, timeout, env, python, poll_interval: as for
            `backends.local.LocalBackend`.
        reuse_workers: run later trials in the same worker (False: a fresh process per trial).
    """

    def __init__(
        self,
        entry_point: Any,
        metric: str | None = None,
        gpus: str | Sequence[int | str] | None = "auto",
        gpus_per_trial: int = 1,
        timeout: float | None = None,
        env: Mapping[str, Any] | None = None,
        python: str | None = None,
        poll_interval: float = 0.1,
        reuse_workers: bool = True,
    ):
        super().__init__()
        self.objective: Objective = objective_from(entry_point)
        self.metric = metric
        self.python = python or sys.executable
        self.timeout = _positive_or_none(timeout, "timeout")
        self.poll_interval = _non_negative(poll_interval, "poll_interval")
        self.reuse_workers = bool(reuse_workers)
        if env is not None and not isinstance(env, Mapping):
            raise ValueError(f"backend_options.env: must be a mapping of names to values, got {env!r}")
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.rotation, self.hide_gpus = _gpu_setup(gpus, gpus_per_trial)
        self._t0 = time.monotonic()
        self._queue: queue.SimpleQueue[tuple[str, Any, Any, float]] = queue.SimpleQueue()
        self._workers: set[_Worker] = set()  # every worker not yet reaped
        self._idle: list[_Worker] = []  # oldest first
        self._active: dict[int, _Run] = {}  # the current run of each running trial
        self._runs: dict[int, _Run] = {}  # runs by token, until their worker reports their end
        self._pending: dict[int, Trial] = {}
        self._reported: dict[int, int] = {}
        self._elapsed: dict[int, float] = {}
        self._early: list[TrialEvent] = []
        self._unacknowledged: list[_Run] = []  # one entry per report returned by poll()
        self._tokens = 0
        self._peak = 1  # most trials running at once: the pool's size

    # -- contract ------------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self._t0

    def default_n_workers(self) -> int:
        """One trial per GPU slot when there are GPUs, else one per CPU."""
        if self.rotation is not None and self.rotation.num_slots > 0:
            return self.rotation.num_slots
        return _cpu_count()

    def _context(self) -> TrialContext:
        if self.context is None:
            self.set_trial_root(Path(tempfile.mkdtemp(prefix="tunesmith-trials-")))
            logger.info("no trial root set: trial files go to %s", self.trial_root)
        return super()._context()

    def start(self, trial: Trial) -> None:
        checkpoint = self.checkpoint_dir(trial.trial_id)
        if trial.checkpoint_from is not None:
            source = self.checkpoint_dir(trial.checkpoint_from)
            copy_checkpoint(source, checkpoint, trial.checkpoint_from)
        config_path = self.trial_dir(trial.trial_id) / "config.json"
        if not config_path.exists():
            _write_json(config_path, trial.config)
        self._launch_when_ready(trial)

    def resume(self, trial: Trial) -> None:
        _write_json(self.trial_dir(trial.trial_id) / "config.json", trial.config)
        tid = trial.trial_id
        self._reported[tid] = max(self._reported.get(tid, 0), trial.num_results)
        self._launch_when_ready(trial)

    def pause(self, trial_id: int) -> None:
        """Kill the trial's worker; its checkpoint folder stays for `resume`."""
        self.stop(trial_id)

    def stop(self, trial_id: int) -> None:
        self._pending.pop(trial_id, None)
        run = self._active.pop(trial_id, None)
        if run is not None:
            self._cancel(run)

    def poll(self) -> list[TrialEvent]:
        self._acknowledge()
        events, self._early = self._early, []
        self._check_timeouts(events)
        items = []
        try:
            items.append(self._queue.get(timeout=0 if events else self.poll_interval))
            while True:
                items.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        for kind, worker, payload, t in items:
            if kind == "report":
                self._on_report(worker, payload, t, events)
            elif kind == "started":
                self._on_started(payload)
            elif kind == "end":
                self._on_end(worker, payload, t, events)
            elif kind == "exit":
                self._on_exit(worker, payload, t, events)
        self._launch_pending()
        events.sort(key=lambda e: e.time)
        return events

    def wake(self) -> None:
        self._queue.put(("wake", None, None, 0.0))

    def close(self) -> None:
        """Kill every worker (running trials and whatever they started included), wait until
        they are gone and remove their process records."""
        self._pending.clear()
        for run in self._active.values():
            run.cancelled = True
        self._active.clear()
        workers = list(self._workers)
        for worker in workers:
            self._kill(worker)
        deadline = time.monotonic() + 5.0
        for worker in workers:
            worker.dead.wait(max(0.0, deadline - time.monotonic()))
            worker.tree.end(grace=0)
            if worker.run is not None:
                self._release_gpus(worker.run)
        self._workers.clear()
        self._idle.clear()

    def set_context(self, context: TrialContext) -> None:
        """Also end what an earlier, killed session of this experiment left running (its
        workers' process records), before any worker starts here."""
        super().set_context(context)
        ended = processes.reconcile(context.root.glob("*/processes/*.json"))
        if ended:
            logger.warning("ended %d trial workers an earlier session left", len(ended))

    def state_dict(self) -> dict[str, Any]:
        """Run time per trial (for timeouts); live workers are in their process records."""
        return {"elapsed": {str(k): v for k, v in self._elapsed.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore run times."""
        self._elapsed = {int(k): float(v) for k, v in state.get("elapsed", {}).items()}

    # -- workers -------------------------------------------------------------------------------
    def _spawn(self, gpus: str | None) -> _Worker:
        """Start a worker (returns at once; it imports the objective while we go on)."""
        env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV}
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(self.env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
        env[WORKER_ENV] = "1"
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpus
        into_r, into_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            tree = processes.launch(
                [self.python, "-m", WORKER_MODULE, str(into_r), str(out_w)], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(into_r, out_w),
                record_dir=self._context().root / WORKERS_DIR / "processes",
                label="function worker")
        except OSError:
            for fd in (into_r, into_w, out_r, out_w):
                os.close(fd)
            raise
        os.close(into_r)
        os.close(out_w)
        worker = _Worker(tree, into_w, gpus)
        worker.thread = threading.Thread(target=self._read, args=(worker, out_r),
                                         name=f"function-worker-{tree.pid}", daemon=True)
        worker.thread.start()
        self._workers.add(worker)
        self._send(worker, {"objective": self.objective.payload(), "metric": self.metric})
        return worker

    def _take(self, gpus: str | None) -> _Worker:
        """An idle worker with these GPUs, else a new one."""
        for worker in self._idle:
            if worker.gpus == gpus and not worker.dead.is_set():
                self._idle.remove(worker)
                return worker
        return self._spawn(gpus)

    def _to_pool(self, worker: _Worker) -> None:
        """An idle worker joins the pool; the oldest idle ones beyond the pool's size go (the
        pool: as many workers as trials ran at once; without reuse, that many spares)."""
        self._idle.append(worker)
        busy = 0
        if self.reuse_workers:
            busy = sum(1 for w in self._workers if w.run is not None and not w.killed)
        while self._idle and len(self._idle) + busy > self._peak:
            self._retire(self._idle.pop(0))

    def _retire(self, worker: _Worker) -> None:
        """Let an idle worker exit (its input closes)."""
        try:
            os.close(worker.to_worker)
        except OSError:
            pass
        worker.to_worker = -1

    def _kill(self, worker: _Worker) -> None:
        """SIGKILL to the worker's whole tree (its process group and whatever carries its
        token, `setsid` children included)."""
        worker.killed = True
        if worker in self._idle:
            self._idle.remove(worker)
        worker.tree.kill()
        if worker.to_worker >= 0:
            self._retire(worker)

    def _send(self, worker: _Worker, message: Mapping[str, Any]) -> None:
        data = (json.dumps(message, allow_nan=True) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(worker.to_worker, view):]

    def _read(self, worker: _Worker, fd: int) -> None:
        """The reader thread: the worker's messages onto the queue; then reap it."""
        put = self._queue.put
        with open(fd, "rb", buffering=0) as stream:
            buffer = b""
            while True:
                chunk = stream.read(1 << 16)
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    try:
                        message = json.loads(line)
                    except ValueError:
                        continue
                    if "report" in message:
                        kind = "report"
                    else:
                        kind = "started" if "started" in message.get("msg", {}) else "end"
                    put((kind, worker, message, self.now()))
        returncode = worker.tree.popen.wait()
        worker.dead.set()
        put(("exit", worker, returncode, self.now()))

    # -- runs ----------------------------------------------------------------------------------
    def _launch(self, trial: Trial) -> None:
        tid = trial.trial_id
        folder = self.trial_dir(tid)
        gpu_key, gpus = None, None
        if self.hide_gpus:
            gpus = ""
        elif self.rotation is not None:
            self._tokens += 1
            gpu_key = (tid, self._tokens)
            gpus = ",".join(self.rotation.acquire(gpu_key))
        stderr = folder / "stderr"
        offset = stderr.stat().st_size if stderr.exists() else 0
        self._tokens += 1
        message = {"run": self._tokens, "trial_id": tid,
                   "config": resolve(trial.config, "config"),  # secret references: this trial only
                   "trial_dir": str(folder), "checkpoint_dir": str(self.checkpoint_dir(tid)),
                   "config_path": str(folder / "config.json")}
        for attempt in range(2):  # an idle worker may have died since it joined the pool
            try:
                worker = self._take(gpus)
                self._send(worker, message)
                break
            except OSError as err:
                if attempt == 1:
                    if gpu_key is not None:
                        self.rotation.release(gpu_key)  # type: ignore[union-attr]
                    self._early.append(TrialEvent(EventKind.FAILED, tid, self.now(),
                                                  reason=f"could not start a worker: {err}"))
                    return
        now = time.monotonic()
        deadline = None  # set again when the worker takes the run up
        if self.timeout is not None:
            deadline = now + max(0.0, self.timeout - self._elapsed.get(tid, 0.0))
        run = _Run(self._tokens, tid, worker, now, deadline, offset, gpu_key)
        worker.run = run
        self._runs[run.token] = run
        self._active[tid] = run
        self._peak = max(self._peak, len(self._active))
        if not self.reuse_workers and not any(w.gpus == gpus for w in self._idle):
            self._to_pool(self._spawn(gpus))  # the next trial's fresh process, started now
        if gpus:
            logger.info("trial %s started on GPU %s (worker %s)", tid, gpus, worker.pid)

    def _launch_when_ready(self, trial: Trial) -> None:
        if self._ready(trial.trial_id):
            self._launch(trial)
        else:
            self._pending[trial.trial_id] = trial

    def _ready(self, trial_id: int) -> bool:
        """The trial's previous worker is gone, and no GPU is held by a killed worker that
        is still exiting (unless more trials than GPU slots run anyway)."""
        if any(w.killed and not w.dead.is_set() and w.run is not None
               and w.run.trial_id == trial_id for w in self._workers):
            return False
        rotation = self.rotation
        if rotation is None or rotation.free_slots() > 0 or len(self._active) >= rotation.num_slots:
            return True
        return not any(w.killed and not w.dead.is_set() and w.run is not None
                       and w.run.gpu_key is not None for w in self._workers)

    def _launch_pending(self) -> None:
        for tid, trial in list(self._pending.items()):
            if self._ready(tid):
                del self._pending[tid]
                self._launch(trial)

    def _cancel(self, run: _Run) -> None:
        """End a run at once: kill its worker (the next trial takes or starts another)."""
        run.cancelled = True
        self._kill(run.worker)

    def _on_started(self, message: dict) -> None:
        """The worker took the run up: its time and timeout count from now, not from a new
        worker's start (a worker that hangs importing the objective still times out, counted
        from the launch)."""
        run = self._runs.get(message.get("run", -1))
        if run is None:
            return
        run.started = time.monotonic()
        if self.timeout is not None:
            remaining = max(0.0, self.timeout - self._elapsed.get(run.trial_id, 0.0))
            run.deadline = run.started + remaining

    def _on_report(self, worker: _Worker, message: dict, t: float,
                   events: list[TrialEvent]) -> None:
        run = self._runs.get(message.get("run", -1))
        if run is None or run.cancelled or not isinstance(message.get("report"), dict):
            return
        run.num_reports += 1
        self._unacknowledged.append(run)
        events.append(TrialEvent(EventKind.RESULT, run.trial_id, t, metrics=message["report"]))

    def _acknowledge(self) -> None:
        """Let the workers go on past the reports the last `poll()` returned: the tuner has
        acted on them (a run it paused or stopped meanwhile is killed, never acknowledged)."""
        runs, self._unacknowledged = self._unacknowledged, []
        for run in runs:
            if not run.cancelled and not run.ended:
                try:
                    self._send(run.worker, {"ack": run.token})
                except OSError:
                    pass  # the worker died: its exit is on the queue

    def _on_end(self, worker: _Worker, message: dict, t: float,
                events: list[TrialEvent]) -> None:
        run = self._runs.get(message.get("run", -1))
        if run is None:
            return
        body = message.get("msg") or {}
        self._end_run(run, events, t, body.get("end"), body.get("reason"))
        worker.run = None
        if worker.killed:
            return
        if self.reuse_workers:
            self._to_pool(worker)
        else:
            self._retire(worker)

    def _on_exit(self, worker: _Worker, returncode: int, t: float,
                 events: list[TrialEvent]) -> None:
        worker.tree.end(grace=0)  # what it left running; its record goes
        self._workers.discard(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        run = worker.run
        worker.run = None
        if run is not None and not run.ended:
            if returncode < 0:
                how = f"killed by signal {_signal_name(-returncode)}"
            else:
                how = f"exited with code {returncode}"
            self._end_run(run, events, t, "failed", f"the trial's worker process {how}"
                          + self._stderr_tail(run))
        if returncode != 0 and not worker.killed and run is None:
            logger.warning("idle trial worker %s exited with code %s", worker.pid, returncode)

    def _end_run(self, run: _Run, events: list[TrialEvent], t: float, status: str | None,
                 reason: str | None) -> None:
        run.ended = True
        self._runs.pop(run.token, None)
        tid = run.trial_id
        self._elapsed[tid] = self._elapsed.get(tid, 0.0) + time.monotonic() - run.started
        self._reported[tid] = self._reported.get(tid, 0) + run.num_reports
        self._release_gpus(run)
        if run.cancelled or self._active.get(tid) is not run:
            return
        del self._active[tid]
        if status == "completed" and self._reported[tid] > 0:
            events.append(TrialEvent(EventKind.COMPLETED, tid, t))
            return
        if status == "completed":
            reason = "returned without reporting"
        events.append(TrialEvent(EventKind.FAILED, tid, t, reason=reason or "unknown failure"))

    def _release_gpus(self, run: _Run) -> None:
        if self.rotation is not None and run.gpu_key is not None:
            self.rotation.release(run.gpu_key)
            run.gpu_key = None

    def _check_timeouts(self, events: list[TrialEvent]) -> None:
        now = time.monotonic()
        for tid, run in list(self._active.items()):
            if run.deadline is not None and now >= run.deadline:
                del self._active[tid]
                self._cancel(run)
                events.append(TrialEvent(EventKind.FAILED, tid, self.now(),
                                         reason=f"timed out after {self.timeout:g}s"))

    def _stderr_tail(self, run: _Run) -> str:
        return stderr_tail(self.trial_dir(run.trial_id) / "stderr", run.stderr_offset)
