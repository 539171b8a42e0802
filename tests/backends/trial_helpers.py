"""What the tests of process-run trials share (scripts, function workers, GPUs): writing a
trial's script, polling a backend until its events say enough, checking that processes are
gone, and a fake `nvidia-smi` on PATH."""

from __future__ import annotations

import os
import stat
import textwrap
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import psutil
import pytest

from hpo_core.trial import EventKind, Trial, TrialEvent, TrialStatus

#: four GPUs as `nvidia-smi --query-gpu=index,memory.used,utilization.gpu` lists them
FOUR_GPUS = "0, 1200, 35\n1, 100, 0\n2, 100, 5\n3, 80000, [N/A]\n"


#: a trial (a function; call it at the end of a script) that saves each epoch's checkpoint,
#: writes the epoch to the file $SAVED, evaluates for 0.5 s, then reports the epoch
SAVE_EVALUATE_REPORT = """
import os, time
from hpo_core.report import load_checkpoint, report, save_checkpoint


def save_evaluate_report(config=None):
    first = (load_checkpoint() or {"epoch": 0})["epoch"] + 1
    for epoch in range(first, 100):
        save_checkpoint({"epoch": epoch})
        with open(os.environ["SAVED"], "w") as f:
            f.write(str(epoch))
        time.sleep(0.5)  # an evaluation between the save and the report
        report(epoch=epoch)
"""


def drained_after_a_save(backend: Any, saved: Path) -> list[TrialEvent]:
    """Start SAVE_EVALUATE_REPORT as trial 0, and drain the backend (an interrupted tuner) once
    epoch 1's checkpoint is saved, before its report: what the drain hands over."""
    backend.start(Trial(0, {}))
    deadline = time.monotonic() + 20
    while not saved.exists():
        assert time.monotonic() < deadline, "the trial never saved a checkpoint"
        time.sleep(0.01)
    return backend.drain()


def write(folder: Path, name: str, text: str) -> Path:
    """`text` (dedented) as the file `folder / name`."""
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def collect(backend: Any, until: Callable[[list[TrialEvent]], bool],
            timeout: float = 20.0) -> list[TrialEvent]:
    """Poll until `until(events)` holds; all events so far."""
    events: list[TrialEvent] = []
    deadline = time.monotonic() + timeout
    while not until(events):
        assert time.monotonic() < deadline, f"timed out; events so far: {events}"
        events += backend.poll()
    return events


def resumed_exactly(frame: Any) -> int:
    """Check exact pauses in a results frame whose reports carry `epoch` and `start` (the
    first epoch of the run): every trial's epochs are 1..n, and each resumed run starts right
    after the trial's last report before it. Returns how many runs were resumed."""
    resumed = 0
    for tid, rows in frame.groupby("trial_id"):
        epochs, starts = rows["epoch"].tolist(), rows["start"].tolist()
        assert epochs == list(range(1, len(epochs) + 1)), f"trial {tid}: {epochs}"
        assert starts[0] == 1, f"trial {tid}: runs start at {starts}"
        for start in sorted(set(starts))[1:]:
            last = max(e for e, s in zip(epochs, starts, strict=True) if s < start)
            assert start == last + 1, f"trial {tid}: a run starts at {start} after {last}"
            resumed += 1
    return resumed


def kinds(events: list[TrialEvent], trial_id: int) -> list[EventKind]:
    return [e.kind for e in events if e.trial_id == trial_id]


def ended(*trial_ids: int) -> Callable[[list[TrialEvent]], bool]:
    """`until` for `collect`: all these trials completed or failed."""
    final = (EventKind.COMPLETED, EventKind.FAILED)
    return lambda events: {e.trial_id for e in events if e.kind in final} >= set(trial_ids)


def assert_failed_with(trials: Mapping[str, Trial], expected: Mapping[str, list[str]]) -> None:
    """Each named trial failed, and its reason holds each of the given parts."""
    for name, parts in expected.items():
        trial = trials[name]
        assert trial.status == TrialStatus.FAILED, name
        for part in parts:
            assert trial.failure_reason is not None and part in trial.failure_reason, (
                name, trial.failure_reason)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # exited (and reaped) meanwhile
        return False


def wait_gone(pids: Iterable[int], backend: Any = None, timeout: float = 5.0) -> bool:
    """Whether all these processes are gone within `timeout` seconds (polling `backend`
    meanwhile, which is what escalates SIGTERM to SIGKILL)."""
    pids = list(pids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        if backend is not None:
            backend.poll()
        else:
            time.sleep(0.02)
    return False


def fake_nvidia_smi(folder: Path, monkeypatch: pytest.MonkeyPatch, listing: str = FOUR_GPUS) -> Path:
    """An `nvidia-smi` in `folder` (first on PATH) that prints `listing` and records its
    arguments in `folder / "args"`; CUDA_VISIBLE_DEVICES unset."""
    folder.mkdir()
    exe = folder / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\necho \"$@\" > {folder}/args\nprintf '{listing}'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return folder
