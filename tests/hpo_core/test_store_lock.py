"""One owner per experiment: the lock file, live and dead holders, takeover races."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpo_core.store import ExperimentLockedError, ExperimentStore, experiment_lock, load_experiment
from hpo_core.store.lock import LOCK_FILE, STALE_SECONDS, holder_is_alive, process_start_time

HOLD = """
import sys, time
from hpo_core.store import experiment_lock
lock = experiment_lock(sys.argv[1])
try:
    lock.acquire()
except Exception as err:
    print("refused", err, flush=True)
    sys.exit(2)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
lock.release()
"""


def hold(folder: Path, seconds: float) -> subprocess.Popen:
    """A real process that takes the lock of `folder` and holds it for `seconds`."""
    return subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)],
                            stdout=subprocess.PIPE, text=True)


def wait_held(proc: subprocess.Popen) -> None:
    assert proc.stdout.readline().strip() == "held"


def test_a_live_holder_makes_another_process_refuse_naming_it(tmp_path):
    folder = tmp_path / "exp"
    holder = hold(folder, 30)
    try:
        wait_held(holder)
        info = json.loads((folder / LOCK_FILE).read_text())
        assert info["pid"] == holder.pid and info["host"] == socket.gethostname()
        assert info["start_time"] == process_start_time(holder.pid)
        with pytest.raises(ExperimentLockedError, match=f"in use by pid {holder.pid} on host"):
            experiment_lock(folder).acquire()
        assert load_experiment(folder).results.empty  # readers never need the lock
    finally:
        holder.kill()
        holder.wait()


def test_a_dead_holders_lock_is_taken_over(tmp_path):
    folder = tmp_path / "exp"
    holder = hold(folder, 30)
    wait_held(holder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    lock = experiment_lock(folder)
    lock.acquire()
    try:
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    finally:
        lock.release()
    assert not (folder / LOCK_FILE).exists()


def test_a_reused_pid_or_a_stale_remote_heartbeat_is_a_dead_holder():
    me = {"host": socket.gethostname(), "pid": os.getpid(),
          "start_time": process_start_time(os.getpid()), "heartbeat": time.time()}
    assert holder_is_alive(me)
    assert not holder_is_alive({**me, "start_time": me["start_time"] - 100})  # pid reused
    assert not holder_is_alive({**me, "boot_id": "another-boot"})  # the host rebooted
    remote = {"host": "elsewhere", "pid": 1, "heartbeat": time.time() - 5}
    assert holder_is_alive(remote)
    assert not holder_is_alive({**remote, "heartbeat": time.time() - STALE_SECONDS - 1})


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    store = ExperimentStore(tmp_path, "exp")
    lock = experiment_lock(store.path)
    lock.acquire()
    store.lock()  # the flow inside the CLI takes it again
    store.unlock()
    assert (store.path / LOCK_FILE).exists()
    lock.release()
    assert not (store.path / LOCK_FILE).exists()


def test_two_takers_of_a_dead_holders_lock_never_both_win(tmp_path):
    """Eight processes race for a lock whose holder was SIGKILLed: exactly one wins."""
    folder = tmp_path / "exp"
    holder = hold(folder, 30)
    wait_held(holder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    takers = [hold(folder, 60) for _ in range(8)]
    outcomes = []
    for proc in takers:
        outcomes.append(proc.stdout.readline().split()[0])
    for proc in takers:
        proc.kill()
        proc.wait()
    assert sorted(outcomes) == ["held"] + ["refused"] * 7


def test_a_run_whose_lock_was_taken_over_stops_writing(tmp_path, monkeypatch):
    """Judged dead (say its host's heartbeats stopped reaching the shared filesystem) while it
    still runs: once its heartbeat sees another owner, the store refuses every write."""
    from hpo_core.store import StoreError
    from hpo_core.store import lock as lock_module

    monkeypatch.setattr(lock_module, "HEARTBEAT_SECONDS", 0.05)
    store = ExperimentStore(tmp_path, "exp")
    store.lock()
    try:
        other = {"host": "elsewhere", "boot_id": "", "pid": 1, "start_time": None,
                 "token": "theirs", "heartbeat": time.time()}
        (store.path / LOCK_FILE).write_text(json.dumps(other))
        deadline = time.monotonic() + 10
        while not experiment_lock(store.path).lost:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with pytest.raises(StoreError, match="taken over by pid 1 on host elsewhere"):
            store.check()
    finally:
        store.unlock()
    assert json.loads((store.path / LOCK_FILE).read_text())["token"] == "theirs"  # left alone
