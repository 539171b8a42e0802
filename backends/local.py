"""Trials as subprocesses on this machine: CPUs or GPUs, pause and resume through checkpoints.

Each trial runs the user's entry point (a Python file, run with `python`, or any command such as
`torchrun --nproc_per_node=2 train.py`; never through a shell) with its hyperparameters as
`--name value` arguments, its config as the JSON file named by `TUNESMITH_CONFIG`, and its
checkpoint folder in `TUNESMITH_CHECKPOINT_DIR`. Its stdout and stderr go to
`trials/<id>/stdout` and `stderr`; one reader thread per trial parses stdout as it arrives
(`hpo_core.report.ReportParser`) and puts the reports on a queue that `poll()` waits on, so a
report reaches the tuner at once. Each run gets the read end of a pipe (named, with its inode,
in `TUNESMITH_REPORT_ACK`) on which `poll()` acknowledges each report once the tuner has acted
on it; `hpo_core.report.report` waits for that, so a trial paused at a report is ended there,
as a function trial is (a launcher that closes the pipe, or a line printed by other means,
such as Syne Tune's reporter, does not wait). A run ends when its main process exits: what it
left holding stdout is read for at most `DRAIN_SECONDS` more, then ended; a failed write of its
output
(a full disk) fails the trial with the error as its reason. Processes are started and ended by
`backends.processes`: each trial leads its own process group, dies with the tuner
(PDEATHSIG, a watchdog), and its children, `setsid` ones included, are found by the token they
inherit. Stop, pause, timeouts and `close()` send SIGTERM to the whole tree, and SIGKILL once
`stop_grace_period` has passed (checked in `poll()`, never blocking the tuner). Each run's
process record lies in `trials/<id>/processes/` while it may be alive; `set_context` ends
what the records of a killed session still name, before anything is launched. With GPUs,
each trial gets `gpus_per_trial` of them through `CUDA_VISIBLE_DEVICES` (`backends.gpus`). A
trial started while a stopped or paused trial is still exiting waits for that trial's GPU,
unless the workers outnumber the GPU slots.
"""

from __future__ import annotations

import codecs
import json
import logging
import math
import os
import select
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends import processes
from backends.process_trials import (
    ProcessRun,
    ProcessTrialBackend,
    _cpu_count,
    _json_default,
    _non_negative,
    signal_name,
)
from hpo_core.report import (
    CHECKPOINT_ENV,
    CONFIG_ENV,
    REPORT_ACK_ENV,
    TRIAL_ID_ENV,
    ReportParser,
    config_args,
)
from hpo_core.secrets import resolve
from hpo_core.trial import EventKind, Trial, TrialEvent

logger = logging.getLogger(__name__)

#: seconds stdout is still read after a run's main process exited (a child may hold it open)
DRAIN_SECONDS = 1.0
_READ_SIZE = 1 << 16


@dataclass(eq=False, kw_only=True)
class _Run(ProcessRun):
    """One process of a trial (a trial has one run per start or resume)."""

    tree: processes.ProcessTree
    private_config: Path | None = None  # its config with secrets resolved, removed at its end
    kill_at: float | None = None  # SIGTERM sent; SIGKILL at this monotonic time
    done: threading.Event = field(default_factory=threading.Event)  # output closed, reaped
    thread: threading.Thread | None = None
    error: str | None = None  # why the reader gave up (its output could not be written)
    ack: int = -1  # fd: the write end of its report acknowledgments (-1: closed)

    def close_ack(self) -> None:
        fd, self.ack = self.ack, -1
        if fd >= 0:
            os.close(fd)

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.tree.popen


class LocalBackend(ProcessTrialBackend[_Run]):
    """Runs trials as local subprocesses (see the module docstring).

    Args:
        entry_point: a Python file, or a command (a list, or a string split once with shlex)
            whose first word is a .py file (run with `python`) or an executable on PATH.
        gpus, gpus_per_trial, timeout, env, python, poll_interval: see
            `backends.process_trials.ProcessTrialBackend` (`python` runs Python entry points).
        stop_grace_period: seconds between SIGTERM and SIGKILL when a trial is stopped.
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
        super().__init__(gpus=gpus, gpus_per_trial=gpus_per_trial, timeout=timeout, env=env,
                         python=python, poll_interval=poll_interval)
        self.command = _command(entry_point, self.python)
        self.stop_grace_period = _non_negative(stop_grace_period, "stop_grace_period")
        self.syne_tune_compat = bool(syne_tune_compat)
        self._live: set[_Run] = set()  # runs whose process may still be alive
        self._terminating: set[_Run] = set()  # SIGTERM sent, SIGKILL pending

    # -- contract ------------------------------------------------------------------------------
    def max_n_workers(self) -> int:
        """Processes this machine can hold at once: 8 per CPU (at least 64), or 4 per GPU slot."""
        slots = self.rotation.num_slots if self.rotation is not None else 0
        return max(64, 8 * _cpu_count(), 4 * slots)

    def close(self) -> None:
        """End every trial process still alive (SIGTERM, then SIGKILL after the grace period,
        whatever they started included) and remove their process records."""
        self._pending.clear()
        for run in list(self._live):
            self._cancel(run)
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
            run.close_ack()
        self._live.clear()
        self._terminating.clear()
        self._remove_temporary_root()

    # -- launching -----------------------------------------------------------------------------
    def _launch(self, trial: Trial) -> None:
        tid = trial.trial_id
        folder = self.trial_dir(tid)
        checkpoint = self.checkpoint_dir(tid)
        config = resolve(trial.config, "config")  # secret references: this trial only
        config_file, private_config = folder / "config.json", None
        if config != trial.config:  # the store's config.json keeps the references
            config_file = private_config = _private_json(config)
        args = config_args(config)
        if self.syne_tune_compat:
            args += ["--st_checkpoint_dir", str(checkpoint),
                     "--st_config_json_filename", str(config_file)]
        env = self._environment()
        env[CONFIG_ENV] = str(config_file)
        env[CHECKPOINT_ENV] = str(checkpoint)
        env[TRIAL_ID_ENV] = str(tid)
        gpu_key, gpus = self._assign_gpus(tid)
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpus
        ack_read, ack_write = os.pipe()
        os.set_blocking(ack_write, False)  # a script that never reads them cannot block poll()
        env[REPORT_ACK_ENV] = f"{ack_read}:{os.fstat(ack_read).st_ino}"
        stderr_path = folder / "stderr"
        try:
            with open(stderr_path, "ab") as stderr:
                offset = os.fstat(stderr.fileno()).st_size
                tree = processes.launch([*self.command, *args], env=env, stdout=subprocess.PIPE,
                                        stderr=stderr, pass_fds=(ack_read,),
                                        record_dir=folder / "processes", label=f"trial {tid}")
        except OSError as err:
            os.close(ack_write)
            if private_config is not None:
                private_config.unlink(missing_ok=True)
            self._launch_failed(tid, gpu_key, f"could not start {self.command}: {err}")
            return
        finally:
            os.close(ack_read)
        now = time.monotonic()
        run = _Run(trial_id=tid, tree=tree, started=now, deadline=self._deadline(tid, now),
                   stderr_path=stderr_path, stderr_offset=offset, gpu_key=gpu_key,
                   private_config=private_config, ack=ack_write)
        run.thread = threading.Thread(target=self._read_output, args=(run, folder / "stdout"),
                                      name=f"trial-{tid}-stdout", daemon=True)
        self._active[tid] = run
        self._live.add(run)
        run.thread.start()
        if gpu_key is not None:
            logger.info("trial %s started on GPU %s", tid, gpus)

    def _live_runs(self) -> Iterable[_Run]:
        return self._live

    def _over(self, run: _Run) -> bool:
        return run.done.is_set()

    def _exited(self, run: _Run) -> bool:
        return run.proc.poll() is not None

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
            if run.proc.stdout is not None:  # launched with stdout=PIPE: always
                run.proc.stdout.close()
            returncode = run.proc.wait()
            run.done.set()
            put(("end", run, (returncode, parser.num_malformed), self.now()))

    def _handle(self, kind: str, source: Any, payload: Any, t: float,
                events: list[TrialEvent]) -> None:
        run: _Run = source
        if kind == "result":
            self._reported_by(run, payload, t, events)
        else:
            self._on_run_end(run, payload, t, events)

    def _send_ack(self, run: _Run) -> None:
        if run.ack >= 0:
            try:
                os.write(run.ack, b"\x01")
            except OSError:  # ended meanwhile, or a full pipe (a script that does not wait)
                pass

    # -- ends of runs --------------------------------------------------------------------------
    def _on_run_end(self, run: _Run, payload: tuple[int, int], t: float,
                    events: list[TrialEvent]) -> None:
        returncode, num_malformed = payload
        tid = run.trial_id
        self._live.discard(run)
        run.close_ack()
        if run.private_config is not None:
            run.private_config.unlink(missing_ok=True)
        self._end_now(run)  # children the script left behind
        if not self._run_ended(run):
            return
        if run.error is not None:
            events.append(TrialEvent(EventKind.FAILED, tid, t, reason=run.error))
            return
        if returncode == 0 and self._ended_complete(tid):
            events.append(TrialEvent(EventKind.COMPLETED, tid, t))
            return
        if returncode == 0:
            reason = "exited without reporting"
            if num_malformed:
                reason += f" ({num_malformed} malformed report lines skipped)"
        elif returncode < 0:
            reason = f"killed by signal {signal_name(-returncode)}"
        else:
            reason = f"exited with code {returncode}"
        events.append(TrialEvent(EventKind.FAILED, tid, t, reason=reason + self._stderr_tail(run)))

    def _housekeeping(self, events: list[TrialEvent]) -> None:
        """Timeouts, SIGKILL escalation, and groups whose leader exited but whose output is
        still held open by a child."""
        super()._housekeeping(events)
        now = time.monotonic()
        for run in list(self._active.values()):
            if run.kill_at is None and not run.done.is_set() and run.proc.poll() is not None:
                self._end_now(run)
        for run in list(self._terminating):
            if run.kill_at is not None and now >= run.kill_at:
                run.tree.kill()
                run.kill_at = math.inf  # sent; now wait for the tree to be gone
            if run.done.is_set() and not run.tree.alive():
                self._terminating.discard(run)
                run.tree.forget()

    def _end_now(self, run: _Run) -> None:
        """SIGTERM to the run's process tree now, SIGKILL after the grace period."""
        if run.kill_at is not None:
            return
        run.kill_at = time.monotonic() + self.stop_grace_period
        if run.tree.terminate():
            self._terminating.add(run)
        else:
            run.tree.forget()


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
            where = "" if os.path.isabs(parts[0]) else f" (relative to {os.getcwd()})"
            raise ValueError(f"backend_options.entry_point: no such file {parts[0]!r}{where}")
        return [python, str(path), *parts[1:]]
    if shutil.which(parts[0]) is None:
        where = ("no such executable file" if os.sep in parts[0]
                 else "command not found on PATH:")
        raise ValueError(f"backend_options.entry_point: {where} {parts[0]!r}")
    return parts



def _output(tree: processes.ProcessTree, drain: float) -> Iterator[bytes]:
    """Chunks of the tree's stdout until end-of-file, or until `drain` seconds after its main
    process exited (a child that still holds stdout must not keep the run alive)."""
    stdout = tree.popen.stdout
    assert stdout is not None  # launched with stdout=PIPE
    fd = stdout.fileno()
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


def _private_json(data: Any) -> Path:
    """`data` as a JSON file that only this user can read, outside the experiment store, in a
    folder the session's watchdog removes if the tuner dies before the run ends."""
    fd, name = tempfile.mkstemp(prefix="config-", suffix=".json", dir=processes.private_dir())
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, default=_json_default)
    return Path(name)
