"""backends.processes with real processes: trees ended whole, nothing outlives a killed tuner,
records reconciled by a later session."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest

from backends import processes

# Starts a child that leaves the session (setsid) and a double-forked grandchild, both marked
# by argv; prints their pids as JSON, then sleeps.
SPAWNS = textwrap.dedent("""\
    import json, os, subprocess, sys, time
    marker = sys.argv[1]
    loose = subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(600)",
                              marker], stdout=subprocess.DEVNULL)
    if os.fork() == 0:  # double fork: the grandchild's parent exits at once
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", marker])
        os._exit(0)
    print(json.dumps({"pid": os.getpid()}), flush=True)
    time.sleep(600)
    """)


def marked(marker: str) -> list[psutil.Process]:
    """Live processes with `marker` in their argv."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if marker in (proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def marker() -> str:
    """A unique argv word; whatever still carries it at the end is killed (and fails the test
    that checks for it)."""
    word = f"tunesmith-test-{uuid.uuid4().hex[:8]}"
    yield word
    for proc in marked(word):
        proc.kill()


def test_a_tree_is_ended_whole_setsid_and_double_forks_included(tmp_path, marker):
    tree = processes.launch([sys.executable, "-c", SPAWNS, marker], stdout=subprocess.PIPE,
                            record_dir=tmp_path / "records")
    json.loads(tree.popen.stdout.readline())
    wait_for(lambda: len(marked(marker)) == 3  # and the middle of the double fork is gone:
             and sum(SPAWNS in p.info["cmdline"] for p in marked(marker)) == 1)
    record = processes.ProcessRecord.read(tmp_path / "records" / f"{tree.token}.json")
    assert (record.pid, record.pgid, record.owner_pid) == (tree.pid, tree.pid, os.getpid())
    assert {p.pid for p in tree.members()} == {p.pid for p in marked(marker)} - {tree.pid}
    tree.end(grace=1.0)
    assert marked(marker) == []
    assert not tree.alive() and tree.popen.returncode is not None
    assert list((tmp_path / "records").iterdir()) == []
    with pytest.raises(TypeError):
        processes.launch("sleep 1; rm -rf /")  # type: ignore[arg-type]


TUNER = textwrap.dedent("""\
    import sys, threading, time
    from pathlib import Path
    from backends import processes
    spawns, marker, records = sys.argv[1:4]
    def start():  # from a thread that ends at once, as a Prefect task thread may
        processes.launch([sys.executable, "-c", spawns, marker], record_dir=Path(records))
    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    (processes.private_dir() / "config.json").write_text("a resolved secret")
    print(processes.private_dir(), flush=True)
    time.sleep(600)
    """)


def start_tuner(tmp_path: Path, marker: str) -> tuple[subprocess.Popen, Path]:
    """A tuner that launched a tree and put a file in its private folder; that folder."""
    tuner = subprocess.Popen([sys.executable, "-c", TUNER, SPAWNS, marker, str(tmp_path / "rec")],
                             stdout=subprocess.PIPE)
    private = Path(tuner.stdout.readline().decode().strip())
    assert (private / "config.json").is_file() and private.stat().st_mode & 0o077 == 0
    wait_for(lambda: len(marked(marker)) == 4)  # the tuner (marker in its argv too) and three
    return tuner, private


def watchdog_of(tuner: subprocess.Popen) -> psutil.Process:
    return next(p for p in psutil.Process(tuner.pid).children()
                if any("_watchdog.py" in a for a in p.cmdline()))


@pytest.mark.slow
def test_nothing_outlives_a_sigkilled_tuner(tmp_path, marker):
    tuner, private = start_tuner(tmp_path, marker)
    time.sleep(0.5)  # the launching thread has ended: the trial must still run
    assert len(marked(marker)) == 4
    tuner.kill()
    tuner.wait()
    wait_for(lambda: marked(marker) == [], timeout=5.0)
    wait_for(lambda: not private.exists(), timeout=5.0)  # nor its private files


@pytest.mark.slow
def test_without_its_watchdog_the_main_process_still_dies_and_a_new_session_ends_the_rest(
        tmp_path, marker):
    tuner, private = start_tuner(tmp_path, marker)
    shutil.rmtree(private)  # the watchdog is what removes it
    trial = next(p for p in psutil.Process(tuner.pid).children() if SPAWNS in p.cmdline())
    watchdog_of(tuner).kill()
    tuner.kill()
    tuner.wait()
    wait_for(lambda: not psutil.pid_exists(trial.pid) or not trial.is_running()
             or trial.status() == psutil.STATUS_ZOMBIE, timeout=5.0)  # PR_SET_PDEATHSIG
    assert len(marked(marker)) == 2  # its setsid and double-forked children remain
    # A pid reused by another process (same pid, other create time) is never touched.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        fake = processes.ProcessRecord(bystander.pid, 1.0, bystander.pid, processes._state.host,
                                       "gone.0", 1, 1.0)
        fake.write(tmp_path / "rec" / "gone.0.json")
        ended = processes.reconcile(sorted((tmp_path / "rec").glob("*.json")))
        assert len(ended) == 2  # the setsid and double-forked children, not the bystander
        assert bystander.pid not in ended
        wait_for(lambda: marked(marker) == [], timeout=5.0)
        assert bystander.poll() is None
        assert list((tmp_path / "rec").iterdir()) == []
    finally:
        bystander.kill()
        bystander.wait()


def test_records_of_live_trees_are_left_alone(tmp_path, marker):
    tree = processes.launch([sys.executable, "-c", "import time; time.sleep(600)", marker],
                            record_dir=tmp_path)
    try:
        assert processes.reconcile(tmp_path.glob("*.json")) == []  # managed here
        live = processes.ProcessRecord(tree.pid, tree.record.create_time, tree.pid,
                                       tree.record.host, "other.0", os.getppid(),
                                       psutil.Process(os.getppid()).create_time())
        live.write(tmp_path / "other.0.json")  # owned by a live process: another session
        assert processes.reconcile([tmp_path / "other.0.json"]) == []
        assert tree.alive() and (tmp_path / "other.0.json").exists()
    finally:
        tree.end(grace=0)
    assert not (tmp_path / f"{tree.token}.json").exists()


def test_the_watchdog_ends_its_session_when_its_pipe_closes(marker, tmp_path):
    read_fd, write_fd = os.pipe()
    session = uuid.uuid4().hex[:16]
    env = {**os.environ, processes.TOKEN_ENV: f"{session}.0"}
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", marker],
                              env=env, start_new_session=True)
    private = tmp_path / f"tunesmith-{session}-abc"
    private.mkdir()
    (private / "config.json").write_text("a resolved secret")
    other = tmp_path / "tunesmith-othersession-abc"
    other.mkdir()
    watchdog = subprocess.Popen(
        [sys.executable, "-I", "-S", str(Path(processes.__file__).with_name("_watchdog.py")),
         session, str(tmp_path)], stdin=read_fd)
    os.close(read_fd)
    time.sleep(0.3)
    assert victim.poll() is None and private.exists()
    os.close(write_fd)
    assert watchdog.wait(timeout=10) == 0
    assert victim.wait(timeout=5) == -signal.SIGKILL
    assert not private.exists() and other.exists()  # its session's private folders only


def test_records_whose_processes_are_gone_end_nothing_and_are_removed(tmp_path):
    """What `resume` says it ended counts processes it ended, not records (it said it ended
    2 processes when they had died with the killed tuner)."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    created = psutil.Process(done.pid).create_time()
    done.wait()
    gone = processes.ProcessRecord(done.pid, created, done.pid, processes._state.host,
                                   "gone-session.0", done.pid, created)  # its owner is gone too
    gone.write(tmp_path / "gone-session.0.json")
    assert processes.reconcile([tmp_path / "gone-session.0.json"]) == []
    assert not (tmp_path / "gone-session.0.json").exists()
