"""Trials as subprocesses on this machine: CPUs or GPUs, pause and resume through checkpoints.

Each trial runs the user's entry point (a Python file, run with `python`, or any command such as
`torchrun --nproc_per_node=2 train.py`; never through a shell) with its hyperparameters as
`--name value` arguments, its config as the JSON file named by `TUNESMITH_CONFIG`, and its
checkpoint folder in `TUNESMITH_CHECKPOINT_DIR`. Its stdout and stderr go to
`trials/<id>/stdout` and `stderr`; one reader thread per trial parses stdout as it arrives
(`hpo_core.report.ReportParser`) and puts the reports on a queue that `poll()` waits on, so a
report reaches the tuner at once. A run ends when its main process exits: what it left holding
stdout is read for at most `DRAIN_SECONDS` more, then ended; a failed write of its output
(a full disk) fails the trial with the error as its reason. Processes are started and ended by
`backends.processes`: each trial leads its own process group, dies with the tuner
(PDEATHSIG, a watchdog), and its children, `setsid` ones included, are found by the token they
inherit. Stop, pause, timeouts and `close()` send SIGTERM to the whole tree, and SIGKILL once
`stop_grace_period` has passed (checked in `poll()`, never blocking the tuner). Each run's
process record lies in `trials/<id>/processes/` while it may be alive; `set_context` ends
what the records of a killed session still name, before anything is launched. With GPUs, each trial gets `gpus_per_trial` of them
through `CUDA_VISIBLE_DEVICES` (`backends.gpus`). A trial started while a stopped or paused
trial is still exiting waits for that trial's GPU, unless the workers outnumber the GPU slots.
"""

from __future__ import annotations

import codecs
import json
import logging
import math
import os
import queue
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends import processes
from backends.checkpoints import settled_copy
from backends.gpus import GpuRotation, detect_gpus
from hpo_core.backend import TrialBackend, TrialContext
from hpo_core.report import (
    CHECKPOINT_ENV,
    CONFIG_ENV,
    DISTRIBUTED_ENV,
    TRIAL_ID_ENV,
    ReportParser,
    config_args,
)
from hpo_core.secrets import is_reference, resolve
from hpo_core.trial import EventKind, Trial, TrialEvent

logger = logging.getLogger(__name__)

STDERR_TAIL_LINES = 10
#: seconds stdout is still read after a run's main process exited (a child may hold it open)
DRAIN_SECONDS = 1.0
_READ_SIZE = 1 << 16


@dataclass(eq=False)
class _Run:
    """One process of a trial (a trial has one run per start or resume)."""

    trial_id: int
    tree: processes.ProcessTree
    started: float  # monotonic
    deadline: float | None  # monotonic time after which the run has timed out
    stderr_path: Path
    stderr_offset: int
    gpu_key: tuple[int, int] | None = None  # its assignment in the GPU rotation
    private_config: Path | None = None  # its config with secrets resolved, removed at its end
    num_reports: int = 0
    cancelled: bool = False  # stopped, paused or timed out: its later events are dropped
    kill_at: float | None = None  # SIGTERM sent; SIGKILL at this monotonic time
    done: threading.Event = field(default_factory=threading.Event)  # output closed, reaped
    thread: threading.Thread | None = None
    error: str | None = None  # why the reader gave up (its output could not be written)

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.tree.popen


class LocalBackend(TrialBackend):
    """Runs trials as local subprocesses (see the module docstring).

    Args:
        entry_point: a Python file, or a command (a list, or a string split once with shlex)
            whose first word is a .py file (run with `python`) or an executable on PATH.
        gpus: "auto" (detect with nvidia-smi; none found: CPU only), a list of GPU ids (or a
            string "0,2,3") to rotate over, [] to hide all GPUs (CUDA_VISIBLE_DEVICES=""), or
            None to leave CUDA_VISIBLE_DEVICES alone.
        gpus_per_trial: GPUs given to each trial, always the least busy ones.
        timeout: seconds a trial may run in all (its runs summed); then it fails.
        stop_grace_period: seconds between SIGTERM and SIGKILL when a trial is stopped.
        env: extra environment variables for the trials.
        python: interpreter for Python entry points (default: the current one).
        poll_interval: longest wait of `poll()` when nothing happens.
        syne_tune_compat: also pass `--st_checkpoint_dir <checkpoint dir>` and
            `--st_config_json_filename <config.json>`, as Syne Tune does (scripts that use
            `syne_tune.utils.load_config_json` read their config from that file).
    """

    def __init__(
        self,
        entry_point: str | Sequence[str],
        gpus: str | Sequence[int | str] | None = "auto",
        gpus_per_trial: int = 1,
        timeout: float | None = None,
        stop_grace_period: float = 5.0,
        env: Mapping[str, Any] | None = None,
        python: str | None = None,
        poll_interval: float = 0.1,
        syne_tune_compat: bool = False,
    ):
        super().__init__()
        self.python = python or sys.executable
        self.command = _command(entry_point, self.python)
        self.timeout = _positive_or_none(timeout, "timeout")
        self.stop_grace_period = _non_negative(stop_grace_period, "stop_grace_period")
        self.poll_interval = _non_negative(poll_interval, "poll_interval")
        self.syne_tune_compat = bool(syne_tune_compat)
        if env is not None and not isinstance(env, Mapping):
            raise ValueError(f"backend_options.env: must be a mapping of names to values, got {env!r}")
        self.env = {str(k): v if is_reference(v) else str(v) for k, v in (env or {}).items()}
        self.rotation, self.hide_gpus = _gpu_setup(gpus, gpus_per_trial)
        self._t0 = time.monotonic()
        self._queue: queue.SimpleQueue[tuple[str, _Run, Any, float]] = queue.SimpleQueue()
        self._active: dict[int, _Run] = {}  # the current run of each running trial
        self._live: set[_Run] = set()  # runs whose process may still be alive
        self._terminating: set[_Run] = set()  # SIGTERM sent, SIGKILL pending
        self._pending: dict[int, Trial] = {}  # resumes waiting for the old run to end
        self._reported: dict[int, int] = {}  # reports per trial over all its runs
        self._elapsed: dict[int, float] = {}  # seconds run per trial, ended runs
        self._early: list[TrialEvent] = []  # events raised outside poll (failed launches)
        self._launches = 0

    # -- contract ------------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self._t0

    def default_n_workers(self) -> int:
        """Trials to run at once: one per GPU slot when there are GPUs, else one per CPU."""
        if self.rotation is not None and self.rotation.num_slots > 0:
            return self.rotation.num_slots
        return _cpu_count()

    def max_n_workers(self) -> int:
        """Processes this machine can hold at once: 8 per CPU (at least 64), or 4 per GPU slot."""
        slots = self.rotation.num_slots if self.rotation is not None else 0
        return max(64, 8 * _cpu_count(), 4 * slots)

    def start(self, trial: Trial) -> None:
        checkpoint = self.checkpoint_dir(trial.trial_id)
        if trial.checkpoint_from is not None:
            self._copy_checkpoint(trial.checkpoint_from, checkpoint)
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
        """Stop the trial's processes; its checkpoint folder stays for `resume`."""
        self.stop(trial_id)

    def stop(self, trial_id: int) -> None:
        self._pending.pop(trial_id, None)
        run = self._active.pop(trial_id, None)
        if run is not None:
            run.cancelled = True
            self._terminate(run)

    def poll(self) -> list[TrialEvent]:
        events, self._early = self._early, []
        self._housekeeping(events)
        items = []
        try:
            items.append(self._queue.get(timeout=0 if events else self.poll_interval))
            while True:
                items.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        for kind, run, payload, t in items:
            if kind == "wake":
                continue
            if kind == "result":
                if not run.cancelled:
                    events.append(TrialEvent(EventKind.RESULT, run.trial_id, t, metrics=payload))
            else:
                self._on_run_end(run, payload, t, events)
        self._launch_pending()
        events.sort(key=lambda e: e.time)
        return events

    def wake(self) -> None:
        self._queue.put(("wake", None, None, 0.0))  # type: ignore[arg-type]

    def close(self) -> None:
        """End every trial process still alive (SIGTERM, then SIGKILL after the grace period,
        whatever they started included) and remove their process records."""
        self._pending.clear()
        for run in list(self._live):
            run.cancelled = True
            self._terminate(run)
        self._active.clear()
        deadline = time.monotonic() + self.stop_grace_period
        runs = list(self._live | self._terminating)
        for run in runs:
            run.done.wait(max(0.0, deadline - time.monotonic()))
        for run in runs:
            run.tree.end(grace=max(0.0, deadline - time.monotonic()))
        deadline = time.monotonic() + DRAIN_SECONDS + 1.0
        for run in runs:
            if run.thread is not None:
                run.thread.join(timeout=max(0.0, deadline - time.monotonic()))
            self._release_gpus(run)
        self._live.clear()
        self._terminating.clear()

    def set_context(self, context: TrialContext) -> None:
        """Also end what an earlier, killed session of this experiment left running (found
        through its process records), before any trial is launched here."""
        super().set_context(context)
        ended = processes.reconcile(context.root.glob("*/processes/*.json"))
        if ended:
            logger.warning("ended the processes of %d trial runs an earlier session left",
                           len(ended))

    def state_dict(self) -> dict[str, Any]:
        """Run time per trial (for timeouts); live processes are in their records instead."""
        return {"elapsed": {str(k): v for k, v in self._elapsed.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore run times."""
        self._elapsed = {int(k): float(v) for k, v in state.get("elapsed", {}).items()}

    def _context(self) -> TrialContext:
        if self.context is None:
            self.set_trial_root(Path(tempfile.mkdtemp(prefix="tunesmith-trials-")))
            logger.info("no trial root set: trial files go to %s", self.trial_root)
        return super()._context()

    # -- launching -----------------------------------------------------------------------------
    def _launch(self, trial: Trial) -> None:
        tid = trial.trial_id
        folder = self.trial_dir(tid)
        checkpoint = self.checkpoint_dir(tid)
        config = resolve(trial.config, "config")  # secret references: this trial only
        args = config_args(config)
        if self.syne_tune_compat:
            args += ["--st_checkpoint_dir", str(checkpoint),
                     "--st_config_json_filename", str(folder / "config.json")]
        env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV}
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(resolve(self.env, "backend_options.env"))
        env[CONFIG_ENV] = str(folder / "config.json")
        private_config = None
        if config != trial.config:  # the store's config.json keeps the references
            private_config = _private_json(config)
            env[CONFIG_ENV] = str(private_config)
        env[CHECKPOINT_ENV] = str(checkpoint)
        env[TRIAL_ID_ENV] = str(tid)
        gpu_key = None
        if self.hide_gpus:
            env["CUDA_VISIBLE_DEVICES"] = ""
        elif self.rotation is not None:
            self._launches += 1
            gpu_key = (tid, self._launches)
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.rotation.acquire(gpu_key))
        stderr_path = folder / "stderr"
        with open(stderr_path, "ab") as stderr:
            offset = os.fstat(stderr.fileno()).st_size
            try:
                tree = processes.launch([*self.command, *args], env=env, stdout=subprocess.PIPE,
                                        stderr=stderr, record_dir=folder / "processes",
                                        label=f"trial {tid}")
            except OSError as err:
                if private_config is not None:
                    private_config.unlink(missing_ok=True)
                if gpu_key is not None:
                    self.rotation.release(gpu_key)  # type: ignore[union-attr]
                self._early.append(TrialEvent(EventKind.FAILED, tid, self.now(),
                                              reason=f"could not start {self.command}: {err}"))
                return
        now = time.monotonic()
        deadline = None
        if self.timeout is not None:
            deadline = now + max(0.0, self.timeout - self._elapsed.get(tid, 0.0))
        run = _Run(tid, tree, now, deadline, stderr_path, offset, gpu_key, private_config)
        run.thread = threading.Thread(target=self._read_output, args=(run, folder / "stdout"),
                                      name=f"trial-{tid}-stdout", daemon=True)
        self._active[tid] = run
        self._live.add(run)
        run.thread.start()
        if gpu_key is not None:
            logger.info("trial %s started on GPU %s", tid, env["CUDA_VISIBLE_DEVICES"])

    def _launch_when_ready(self, trial: Trial) -> None:
        """Launch now, or from `poll()` once the trial's previous run has ended and a GPU is
        free."""
        if self._ready(trial.trial_id):
            self._launch(trial)
            return
        self._pending[trial.trial_id] = trial
        if self._waits_for_gpu():
            logger.info("trial %s waits for the GPU of a stopped or paused trial", trial.trial_id)

    def _ready(self, trial_id: int) -> bool:
        old = self._latest_run(trial_id)
        return (old is None or old.done.is_set()) and not self._waits_for_gpu()

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
        for run in self._live:
            if run.cancelled and run.gpu_key is not None:
                if run.proc.poll() is None:
                    exiting = True
                else:
                    self._release_gpus(run)
        return exiting and rotation.free_slots() == 0 and len(self._active) < rotation.num_slots

    def _launch_pending(self) -> None:
        for tid, trial in list(self._pending.items()):
            if self._ready(tid):
                del self._pending[tid]
                self._launch(trial)

    def _latest_run(self, trial_id: int) -> _Run | None:
        runs = [r for r in self._live if r.trial_id == trial_id]
        return max(runs, key=lambda r: r.started) if runs else None

    def _copy_checkpoint(self, source_id: int, target: Path) -> None:
        copy_checkpoint(self.checkpoint_dir(source_id), target, source_id)

    # -- the reader thread ---------------------------------------------------------------------
    def _read_output(self, run: _Run, stdout_path: Path) -> None:
        """Copy the run's stdout to its file and queue its reports; then reap the process.
        Whatever happens, the run's end is queued (a reader that died silently would leave
        the trial running for ever)."""
        parser = ReportParser(f"trial {run.trial_id}")
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        put = self._queue.put
        returncode = None
        try:
            with open(stdout_path, "ab", buffering=0) as log:
                for chunk in _output(run.tree, DRAIN_SECONDS):
                    try:
                        log.write(chunk)
                    except OSError as err:
                        run.error = f"could not write {stdout_path}: {err}"
                        break
                    for metrics in parser.feed(decoder.decode(chunk)):
                        run.num_reports += 1
                        put(("result", run, metrics, self.now()))
            if run.error is None:
                for metrics in parser.feed(decoder.decode(b"", final=True)) + parser.flush():
                    run.num_reports += 1
                    put(("result", run, metrics, self.now()))
        except BaseException as err:  # noqa: BLE001 - reported as the run's end below
            run.error = run.error or f"reading its output failed: {type(err).__name__}: {err}"
        finally:
            if run.error is not None:
                logger.error("trial %s: %s; ending it", run.trial_id, run.error)
                run.tree.kill()
            run.proc.stdout.close()  # type: ignore[union-attr]
            returncode = run.proc.wait()
            run.done.set()
            put(("end", run, (returncode, parser.num_malformed), self.now()))

    # -- ends of runs --------------------------------------------------------------------------
    def _on_run_end(self, run: _Run, payload: tuple[int, int], t: float,
                    events: list[TrialEvent]) -> None:
        returncode, num_malformed = payload
        tid = run.trial_id
        self._live.discard(run)
        self._elapsed[tid] = self._elapsed.get(tid, 0.0) + time.monotonic() - run.started
        self._reported[tid] = self._reported.get(tid, 0) + run.num_reports
        self._release_gpus(run)
        if run.private_config is not None:
            run.private_config.unlink(missing_ok=True)
        self._terminate(run)  # children the script left behind
        if run.cancelled or self._active.get(tid) is not run:
            return
        del self._active[tid]
        if run.error is not None:
            events.append(TrialEvent(EventKind.FAILED, tid, t, reason=run.error))
            return
        if returncode == 0 and self._reported[tid] > 0:
            events.append(TrialEvent(EventKind.COMPLETED, tid, t))
            return
        if returncode == 0:
            reason = "exited without reporting"
            if num_malformed:
                reason += f" ({num_malformed} malformed report lines skipped)"
        elif returncode < 0:
            reason = f"killed by signal {_signal_name(-returncode)}"
        else:
            reason = f"exited with code {returncode}"
        events.append(TrialEvent(EventKind.FAILED, tid, t, reason=reason + self._stderr_tail(run)))

    def _release_gpus(self, run: _Run) -> None:
        """Once per run (its end may come after `_waits_for_gpu` released them)."""
        if self.rotation is not None and run.gpu_key is not None:
            self.rotation.release(run.gpu_key)
            run.gpu_key = None

    def _housekeeping(self, events: list[TrialEvent]) -> None:
        """Timeouts, SIGKILL escalation, and groups whose leader exited but whose output is
        still held open by a child."""
        now = time.monotonic()
        for tid, run in list(self._active.items()):
            if run.deadline is not None and now >= run.deadline:
                del self._active[tid]
                run.cancelled = True
                self._terminate(run)
                reason = f"timed out after {self.timeout:g}s" + self._stderr_tail(run)
                events.append(TrialEvent(EventKind.FAILED, tid, self.now(), reason=reason))
            elif run.kill_at is None and not run.done.is_set() and run.proc.poll() is not None:
                self._terminate(run)
        for run in list(self._terminating):
            if run.kill_at is not None and now >= run.kill_at:
                run.tree.kill()
                run.kill_at = math.inf  # sent; now wait for the tree to be gone
            if run.done.is_set() and not run.tree.alive():
                self._terminating.discard(run)
                run.tree.forget()

    def _terminate(self, run: _Run) -> None:
        """SIGTERM to the run's process tree now, SIGKILL after the grace period."""
        if run.kill_at is not None:
            return
        run.kill_at = time.monotonic() + self.stop_grace_period
        if run.tree.terminate():
            self._terminating.add(run)
        else:
            run.tree.forget()

    def _stderr_tail(self, run: _Run) -> str:
        return stderr_tail(run.stderr_path, run.stderr_offset)


# -- helpers (the function backend shares them) ----------------------------------------------------
def copy_checkpoint(source: Path, target: Path, source_id: int) -> None:
    """Copy trial `source_id`'s checkpoint folder into `target` (PBT), half-written files left
    out; without one, the trial starts fresh."""
    if not settled_copy(source, target):  # waits for a checkpoint being written in place
        logger.warning("trial %s has no checkpoint to copy; starting fresh", source_id)


def stderr_tail(path: Path, offset: int) -> str:
    """The last `STDERR_TAIL_LINES` non-empty lines a run wrote to its stderr file after
    `offset`, for a failure reason."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(offset, size - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if line.strip()][-STDERR_TAIL_LINES:]
    return "; stderr:\n" + "\n".join(lines) if lines else " (stderr empty)"

def _command(entry_point: str | Sequence[str], python: str) -> list[str]:
    if isinstance(entry_point, str):
        parts = shlex.split(entry_point)
    elif isinstance(entry_point, Sequence) and all(isinstance(p, str | os.PathLike) for p in entry_point):
        parts = [os.fspath(p) for p in entry_point]
    else:
        raise ValueError(f"backend_options.entry_point: must be a path or a command, got {entry_point!r}")
    if not parts:
        raise ValueError("backend_options.entry_point: is empty")
    if parts[0].endswith(".py"):
        path = Path(parts[0]).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"backend_options.entry_point: no such file {parts[0]!r} "
                             f"(relative to {os.getcwd()})")
        return [python, str(path), *parts[1:]]
    if shutil.which(parts[0]) is None:
        raise ValueError(f"backend_options.entry_point: command {parts[0]!r} not found on PATH")
    return parts


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
    if not isinstance(gpus, Sequence) or not all(
            isinstance(g, int | str) and not isinstance(g, bool) for g in gpus):
        raise ValueError(f"backend_options.gpus: must be 'auto', a list of GPU ids or null, got {gpus!r}")
    if not gpus:
        return None, True
    ids = [str(g) for g in gpus]
    stats = {g.index: g for g in detect_gpus()}
    try:
        rotation = GpuRotation([stats.get(i, i) for i in ids], gpus_per_trial)
    except ValueError as err:
        raise ValueError(f"backend_options.{err}") from None
    return rotation, False


def _output(tree: processes.ProcessTree, drain: float) -> Iterator[bytes]:
    """Chunks of the tree's stdout until end-of-file, or until `drain` seconds after its main
    process exited (a child that still holds stdout must not keep the run alive)."""
    fd = tree.popen.stdout.fileno()  # type: ignore[union-attr]
    stop_at = None
    while True:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, _READ_SIZE)
            if not chunk:
                return
            yield chunk
        if stop_at is None:
            if tree.exited():
                stop_at = time.monotonic() + drain
        elif time.monotonic() >= stop_at:
            logger.info("process %d exited; its children still hold its output: ending them",
                        tree.pid)
            return


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _private_json(data: Any) -> Path:
    """`data` as a JSON file that only this user can read, outside the experiment store."""
    fd, name = tempfile.mkstemp(prefix="tunesmith-config-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, default=_json_default)
    return Path(name)


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
