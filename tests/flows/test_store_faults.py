"""The experiment store under faults, with real `tunesmith run --no-flow` processes: two runs of
one experiment at once, SIGKILL at random moments (simulated and local backends), a full disk."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from flows.experiment import build_tuner
from hpo_core.spec import ExperimentSpec
from hpo_core.store import load_experiment

TASK = "blood-transfusion-service-center"
METRIC = "Train/val_cross_entropy"
# checkpoints each epoch before reporting it, as the examples do
SCRIPT = """
import time
from hpo_core.report import get_config, load_checkpoint, report, save_checkpoint
config = get_config()
state = load_checkpoint() or {"epoch": 0}
for epoch in range(state["epoch"] + 1, 7):
    time.sleep(0.05)
    save_checkpoint({"epoch": epoch})
    report(epoch=epoch, loss=(config["x"] - 0.3) ** 2 + 1.0 / epoch)
"""


def simulated_spec(root: Path, name: str, stop: dict) -> dict:
    return {"name": name, "metric": METRIC, "scheduler": "asha",
            "scheduler_options": {"reduction_factor": 3},
            "backend_options": {"blackbox": "lcbench", "task": TASK}, "stop": stop,
            "n_workers": 4, "seed": 11, "results_root": str(root)}


def local_spec(root: Path, name: str, script: Path, stop: dict, n_workers: int = 3) -> dict:
    return {"name": name, "metric": "loss", "mode": "min", "scheduler": "asha",
            "scheduler_options": {"grace_period": 1, "reduction_factor": 2, "max_t": 6},
            "config_space": {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}},
            "backend": "local",
            "backend_options": {"entry_point": str(script), "gpus": None,
                                "stop_grace_period": 1.0},
            "stop": stop, "n_workers": n_workers, "seed": 3, "results_root": str(root)}


def start_run(tmp_path: Path, spec: dict, log: str = "run") -> subprocess.Popen:
    """`tunesmith run --no-flow` on `spec` (stdout to <log>.out, stderr to <log>.err)."""
    spec_path = tmp_path / f"{spec['name']}.json"
    spec_path.write_text(json.dumps(spec))
    with open(tmp_path / f"{log}.out", "wb") as out, open(tmp_path / f"{log}.err", "wb") as err:
        return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(spec_path),
                                 "--no-flow"], stdout=out, stderr=err, cwd=tmp_path)


@pytest.fixture
def fork_cli():
    """Starts `tunesmith run --no-flow` in real processes forked from a server that imported
    tunesmith once (a fresh interpreter costs seconds on a busy machine; 20 kills need 20
    starts). Each is SIGKILLable like any process; the server ends with the test."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["flows.cli", "flows.experiment", "backends.factory",
                                "backends.blackbox", "backends.simulated", "backends.local",
                                "hpo_core.progress"])

    def start(spec_path: Path) -> multiprocessing.Process:
        from flows.cli import main

        proc = ctx.Process(target=main, args=(["run", str(spec_path), "--no-flow"],))
        proc.start()
        return proc

    yield start
    from multiprocessing import forkserver

    forkserver._forkserver._stop()


def newest_segment(folder: Path) -> int:
    journal = folder / "journal"
    return max((int(p.stem) for p in journal.glob("*.jsonl")), default=-1) \
        if journal.is_dir() else -1


def kill_at_a_random_moment(proc: multiprocessing.Process, folder: Path, before: int,
                            rng: random.Random, early: bool, work: float) -> None:
    """SIGKILL `proc`: early (while it starts, replays, or just after) or once its session
    has begun (a new journal segment) and worked up to `work` seconds."""
    if early:
        time.sleep(rng.uniform(0.0, 1.0))
    else:
        deadline = time.monotonic() + 60
        while newest_segment(folder) <= before and proc.is_alive():
            assert time.monotonic() < deadline, "the session never began"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, work))
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()


def reports_after_kill(folder: Path) -> pd.DataFrame:
    """The experiment's results as a reader sees them (nothing when killed before it began)."""
    return load_experiment(folder).results if folder.is_dir() else pd.DataFrame()


def report_keys(frame: pd.DataFrame, *columns: str) -> set[tuple]:
    if frame.empty:
        return set()
    return set(zip(*(frame[c] for c in ("trial_id", *columns)), strict=True))


def end_leftovers(script: Path) -> None:
    """Trial processes a SIGKILLed tuner left (they die at their next report anyway)."""
    for proc in psutil.process_iter(["cmdline"]):
        if str(script) in " ".join(proc.info["cmdline"] or []):
            proc.kill()


def test_two_runs_of_one_experiment_one_refuses_at_once_nothing_runs_twice(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    spec = local_spec(tmp_path / "experiments", "race", script, {"max_trials_started": 4}, 2)
    runs = [start_run(tmp_path, spec, "a"), start_run(tmp_path, spec, "b")]
    try:
        for proc in runs:
            proc.wait(timeout=120)
    finally:
        for proc in runs:
            proc.kill()
    codes = {log: proc.returncode for log, proc in zip("ab", runs, strict=True)}
    assert sorted(codes.values()) == [0, 2], codes
    winner = next(p for p in runs if p.returncode == 0)
    loser = next(log for log, code in codes.items() if code == 2)
    error = (tmp_path / f"{loser}.err").read_text().strip().splitlines()
    assert len(error) == 1, error
    assert error[0].startswith("error: experiment 'race' is in use by pid "
                               f"{winner.pid} on host"), error
    assert b"running " not in (tmp_path / f"{loser}.out").read_bytes()  # refused before starting
    trials = tmp_path / "experiments" / "race" / "trials"
    assert sorted(p.name for p in trials.iterdir()) == ["0", "1", "2", "3"]
    results = load_experiment(tmp_path / "experiments" / "race").results
    assert not results.duplicated(subset=["trial_id", "epoch"]).any()
    for folder in trials.iterdir():  # each trial's output shows one run per segment, no twin
        epochs = [json.loads(line.split(":", 1)[1])["epoch"]
                  for line in (folder / "stdout").read_text().splitlines()
                  if line.startswith("[tunesmith]:")]
        assert len(epochs) == len(set(epochs)), (folder.name, epochs)


@pytest.mark.slow
def test_simulated_runs_killed_20_times_lose_nothing_and_equal_the_uninterrupted_run(
        tmp_path, fork_cli):
    """SIGKILL at random moments: after each kill the store loads, holds every report it held
    before, and no (trial, epoch) twice; the run resumed to the end equals, row for row, the
    same experiment run without interruption."""
    rng = random.Random(1)
    root = tmp_path / "experiments"
    spec = simulated_spec(root, "killed", {"max_trials_completed": 10**6})
    spec_path = tmp_path / "killed.json"
    spec_path.write_text(json.dumps(spec))
    seen: set[tuple] = set()
    for i in range(20):
        before = newest_segment(root / "killed")
        kill_at_a_random_moment(fork_cli(spec_path), root / "killed", before, rng,
                                early=i % 4 == 0, work=0.5)
        results = reports_after_kill(root / "killed")
        keys = report_keys(results, "epoch", "time", METRIC)
        assert seen <= keys, f"{len(seen - keys)} journaled reports lost"
        assert results.empty or not results.duplicated(subset=["trial_id", "epoch"]).any()
        seen = keys
    assert len(seen) > 500, "the kills came too early to test anything"

    stop = {"max_results": len(seen) + 200}
    spec_path.write_text(json.dumps({**spec, "stop": stop}))
    finish = fork_cli(spec_path)
    finish.join(timeout=120)
    assert finish.exitcode == 0
    resumed = load_experiment(root / "killed").results
    assert seen <= report_keys(resumed, "epoch", "time", METRIC)

    build_tuner(ExperimentSpec.from_dict(simulated_spec(root, "uninterrupted", stop))).run()
    uninterrupted = load_experiment(root / "uninterrupted").results
    pd.testing.assert_frame_equal(resumed, uninterrupted)


@pytest.mark.slow
def test_local_runs_killed_20_times_keep_every_report_once(tmp_path, fork_cli):
    """The same on the local backend: trials resume from their newest checkpoint; no report
    journaled before a kill is lost or repeated."""
    rng = random.Random(2)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    root = tmp_path / "experiments"
    spec = local_spec(root, "killed", script, {"max_trials_completed": 10**6})
    spec_path = tmp_path / "killed.json"
    spec_path.write_text(json.dumps(spec))
    seen: set[tuple] = set()
    try:
        for i in range(20):
            before = newest_segment(root / "killed")
            kill_at_a_random_moment(fork_cli(spec_path), root / "killed", before, rng,
                                    early=i % 4 == 0, work=1.5)
            results = reports_after_kill(root / "killed")
            keys = report_keys(results, "epoch", "loss")
            assert seen <= keys, f"journaled reports lost: {sorted(seen - keys)[:5]}"
            assert results.empty or not results.duplicated(subset=["trial_id", "epoch"]).any()
            seen = keys
        assert len(seen) > 20, "the kills came too early to test anything"
        done = load_experiment(root / "killed").trials()
        stop = {"max_trials_completed": int((done["status"] == "completed").sum()) + 3}
        spec_path.write_text(json.dumps({**spec, "stop": stop}))
        finish = fork_cli(spec_path)
        finish.join(timeout=120)
        assert finish.exitcode == 0
    finally:
        end_leftovers(script)
    final = load_experiment(root / "killed").results
    assert seen <= report_keys(final, "epoch", "loss")
    assert not final.duplicated(subset=["trial_id", "epoch"]).any()
    for _, rows in final.groupby("trial_id"):  # each trial's epochs in order, none twice
        assert rows["epoch"].is_monotonic_increasing


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs, and a function that gives it room (remount at 64 MiB). Without the right
    to mount, a file-size limit (RLIMIT_FSIZE) on the run stands in for the full disk."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                             capture_output=True).returncode == 0
    limit: list[int | None] = [None if mounted else 300_000]

    def make_room() -> None:
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
        limit[0] = None

    yield mount, make_room, limit
    if mounted:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_ends_the_run_with_one_line_and_the_store_resumes(tmp_path, small_disk):
    import resource

    mount, make_room, limit = small_disk
    root = mount / "experiments"
    spec = simulated_spec(root, "full", {"max_trials_completed": 10**6})
    spec_path = tmp_path / "full.json"
    spec_path.write_text(json.dumps(spec))

    def run(stop: dict) -> subprocess.CompletedProcess:
        spec_path.write_text(json.dumps({**spec, "stop": stop}))

        def cap() -> None:  # only without a tmpfs: writes beyond the limit fail with EFBIG
            if limit[0] is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit[0], limit[0]))

        return subprocess.run([sys.executable, "-m", "flows.cli", "run", str(spec_path),
                               "--no-flow"], capture_output=True, text=True, timeout=120,
                              preexec_fn=cap, cwd=tmp_path)

    full = run(spec["stop"])
    assert full.returncode == 2, full.stderr[-2000:]
    assert full.stderr.strip().splitlines() == [full.stderr.strip()], full.stderr[-2000:]
    assert full.stderr.startswith("error: experiment store: no space left on device")
    kept = report_keys(load_experiment(root / "full").results, "epoch", "time", METRIC)
    assert kept
    assert not [p for p in (root / "full").iterdir() if p.name.startswith(".state.json")]

    make_room()
    stop = {"max_results": len(kept) + 100}
    resumed = run(stop)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    results = load_experiment(root / "full").results
    assert kept <= report_keys(results, "epoch", "time", METRIC)
    build_tuner(ExperimentSpec.from_dict(simulated_spec(tmp_path, "reference", stop))).run()
    pd.testing.assert_frame_equal(results, load_experiment(tmp_path / "reference").results)
