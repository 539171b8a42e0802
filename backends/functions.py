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
one. An interrupted tuner's drain sends SIGTERM instead, so a trial that saved a checkpoint
and has not reported it yet makes that report first (`hpo_core.report`).
`backends.processes` starts and ends workers, so they also die with the tuner, and a
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
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends import processes
from backends.objectives import Objective, objective_from
from backends.process_trials import ProcessRun, ProcessTrialBackend, signal_name
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


@dataclass(eq=False, kw_only=True)
class _Run(ProcessRun):
    """One segment of a trial (a start or a resume) on one worker. Its `started` is when it
    was sent to the worker, then when the worker took it up; its deadline likewise."""

    token: int
    worker: _Worker
    ended: bool = False


class FunctionBackend(ProcessTrialBackend[_Run]):
    """Runs a Python objective's trials in worker processes (see the module docstring).

    Args:
        entry_point: `"pkg.module:objective"`, `"path/to/file.py:objective"`, or the function
            or class itself.
        metric: the metric an objective's returned number is reported as.
        gpus, gpus_per_trial, timeout, env, python, poll_interval: see
            `backends.process_trials.ProcessTrialBackend` (`python` runs the workers).
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
        self.objective: Objective = objective_from(entry_point)
        super().__init__(gpus=gpus, gpus_per_trial=gpus_per_trial, timeout=timeout, env=env,
                         python=python, poll_interval=poll_interval)
        self.metric = metric
        self.reuse_workers = bool(reuse_workers)
        self._workers: set[_Worker] = set()  # every worker not yet reaped
        self._idle: list[_Worker] = []  # oldest first
        self._runs: dict[int, _Run] = {}  # runs by token, until their worker reports their end
        self._tokens = 0
        self._peak = 1  # most trials running at once: the pool's size

    # -- contract ------------------------------------------------------------------------------
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
        self._remove_temporary_root()

    # -- workers -------------------------------------------------------------------------------
    def _spawn(self, gpus: str | None) -> _Worker:
        """Start a worker (returns at once; it imports the objective while we go on)."""
        env = self._environment()
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

    def _kill(self, worker: _Worker, graceful: bool = False) -> None:
        """SIGKILL to the worker's whole tree (its process group and whatever carries its
        token, `setsid` children included); SIGTERM if `graceful` (the drain: a trial that
        saved a checkpoint it has not reported yet makes that report first, `hpo_core.report`;
        `close()` kills what is left)."""
        worker.killed = True
        if worker in self._idle:
            self._idle.remove(worker)
        if graceful:
            worker.tree.terminate()
        else:
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
        gpu_key, gpus = self._assign_gpus(tid)
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
                    self._launch_failed(tid, gpu_key, f"could not start a worker: {err}")
                    return
        now = time.monotonic()
        # the deadline is set again when the worker takes the run up
        run = _Run(token=self._tokens, trial_id=tid, worker=worker, started=now,
                   deadline=self._deadline(tid, now), stderr_path=stderr, stderr_offset=offset,
                   gpu_key=gpu_key)
        worker.run = run
        self._runs[run.token] = run
        self._active[tid] = run
        self._peak = max(self._peak, len(self._active))
        if not self.reuse_workers and not any(w.gpus == gpus for w in self._idle):
            self._to_pool(self._spawn(gpus))  # the next trial's fresh process, started now
        if gpus:
            logger.info("trial %s started on GPU %s (worker %s)", tid, gpus, worker.pid)

    def _live_runs(self) -> Iterable[_Run]:
        """The runs of killed workers that have not exited yet."""
        return [w.run for w in self._workers if w.killed and w.run is not None]

    def _over(self, run: _Run) -> bool:
        return run.worker.dead.is_set()

    def _exited(self, run: _Run) -> bool:
        return run.worker.dead.is_set()

    def _end_now(self, run: _Run) -> None:
        """Kill the run's worker at once (the next trial takes or starts another)."""
        self._kill(run.worker)

    def _end_for_drain(self, run: _Run) -> None:
        self._kill(run.worker, graceful=True)

    def _handle(self, kind: str, source: Any, payload: Any, t: float,
                events: list[TrialEvent]) -> None:
        worker: _Worker = source
        if kind == "report":
            self._on_report(worker, payload, t, events)
        elif kind == "started":
            self._on_started(payload)
        elif kind == "end":
            self._on_end(worker, payload, t, events)
        elif kind == "exit":
            self._on_exit(worker, payload, t, events)

    def _on_started(self, message: dict[str, Any]) -> None:
        """The worker took the run up: its time and timeout count from now, not from a new
        worker's start (a worker that hangs importing the objective still times out, counted
        from the launch)."""
        run = self._runs.get(message.get("run", -1))
        if run is None:
            return
        run.started = time.monotonic()
        run.deadline = self._deadline(run.trial_id, run.started)

    def _on_report(self, worker: _Worker, message: dict[str, Any], t: float,
                   events: list[TrialEvent]) -> None:
        run = self._runs.get(message.get("run", -1))
        if run is None or run.cancelled or not isinstance(message.get("report"), dict):
            return
        run.num_reports += 1
        self._reported_by(run, message["report"], t, events)

    def _send_ack(self, run: _Run) -> None:
        if not run.ended:
            try:
                self._send(run.worker, {"ack": run.token})
            except OSError:
                pass  # the worker died: its exit is on the queue

    def _on_end(self, worker: _Worker, message: dict[str, Any], t: float,
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
                how = f"killed by signal {signal_name(-returncode)}"
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
        if not self._run_ended(run):
            return
        tid = run.trial_id
        if status == "completed" and self._ended_complete(tid):
            events.append(TrialEvent(EventKind.COMPLETED, tid, t))
            return
        if status == "completed":
            reason = "returned without reporting"
        events.append(TrialEvent(EventKind.FAILED, tid, t, reason=reason or "unknown failure"))
