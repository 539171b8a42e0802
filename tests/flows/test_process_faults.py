"""`tunesmith run` (bare and through the flow) ended by Ctrl-C, SIGTERM or SIGKILL leaves no
process: no trial, no child of a trial (one that called setsid included), no Prefect server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

MARKER_ENV = "TUNESMITH_TEST_MARKER"

# Reports every 0.2 s for two minutes; its child leaves the session and sleeps.
SCRIPT = """\
import os, subprocess, sys, time
from hpo_core.report import report
subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(600)"])
for epoch in range(1, 600):
    report(epoch=epoch, loss=1.0 / epoch)
    time.sleep(0.2)
"""


def marked(marker: str) -> list[psutil.Process]:
    """Live processes whose environment carries the marker (the CLI and all it started)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if (proc.environ().get(MARKER_ENV) == marker
                    and proc.status() != psutil.STATUS_ZOMBIE):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:  # exited meanwhile
        return []


def wait_for(condition, timeout: float, what, log: Path | None = None) -> None:
    """Wait until `condition()`; else fail with `what` (a string, or a callable giving one)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            message = what() if callable(what) else what
            pytest.fail(f"{message}; " + (log.read_text()[-3000:] if log else ""))
        time.sleep(0.1)


# The CLI as a terminal's foreground job gets it: with Ctrl-C's default action. A test run
# started in the background of a non-interactive shell (`make test &`) inherits SIGINT ignored,
# and Python then keeps it ignored (as `nohup` wants): the SIGINT cases would wait forever.
AS_A_TERMINAL_JOB = [
    sys.executable, "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])",
]


def start_cli(tmp_path: Path, marker: str, *options: str) -> subprocess.Popen:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    spec = {
        "name": "faults", "metric": "loss", "mode": "min", "scheduler": "random",
        "config_space": {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}},
        "backend": "local", "backend_options": {"entry_point": str(script), "gpus": None},
        "stop": {"max_trials_started": 2}, "n_workers": 2, "seed": 0,
        "results_root": str(tmp_path / "experiments"),
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, MARKER_ENV: marker}
    env.pop("PREFECT_API_URL", None)  # the CLI starts its own Prefect server
    with open(tmp_path / "cli.log", "wb") as log:
        return subprocess.Popen(
            [*AS_A_TERMINAL_JOB, "-m", "flows.cli", "run", str(tmp_path / "spec.json"), *options],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)


def trials_running(cli: subprocess.Popen, script: Path) -> int:
    """Trial processes of `cli` that run `script`, past their launch."""
    try:
        return sum(str(script) in cmdline(p)[1:2]
                   for p in psutil.Process(cli.pid).children(recursive=True))
    except psutil.Error:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("flow", [False, True], ids=["bare", "flow"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_a_signalled_run_leaves_no_process(tmp_path: Path, sig: int, flow: bool) -> None:
    marker = uuid.uuid4().hex
    log = tmp_path / "cli.log"
    cli = start_cli(tmp_path, marker, *([] if flow else ["--no-flow"]))
    try:
        wait_for(lambda: trials_running(cli, tmp_path / "train.py") == 2, 150,
                 "the trials never started", log)
        if flow:
            servers = [p for p in marked(marker) if "server" in cmdline(p)]
            assert len(servers) == 1, "no Prefect server of the run's own"
        cli.send_signal(sig)
        cli.wait(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    wait_for(lambda: not marked(marker), 15,
             lambda: f"left running: {[cmdline(p) for p in marked(marker)]}", log)
    if sig != signal.SIGKILL:
        assert cli.returncode == 128 + sig, log.read_text()[-3000:]
        assert f"interrupted by {signal.Signals(sig).name}" in log.read_text()
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
        records = list((tmp_path / "experiments" / "faults" / "trials").glob("*/processes/*"))
        assert records == []  # every tree ended and forgotten
