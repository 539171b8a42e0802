"""Processes that open one new SQLite MLflow database at the same moment all get a working
client (MLflow's own first-use creation collides: `duplicate column name`, alembic errors)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Imports MLflow, says "ready" and waits for a line on stdin, so that the processes open the
# database together; prints "ok" once it could create an experiment in it.
OPENER = textwrap.dedent("""
    import sys
    from mlflow import MlflowClient
    from flows.mlflow_client import open_client

    uri, name = sys.argv[1], sys.argv[2]
    print("ready", flush=True)
    sys.stdin.readline()
    open_client(uri).create_experiment(name)
    print("ok", flush=True)
""")


@pytest.mark.slow
def test_processes_opening_a_new_database_at_once_all_get_a_client(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    for attempt in range(2):
        uri = f"sqlite:///{tmp_path / f'mlflow-{attempt}.db'}"
        procs = [subprocess.Popen([sys.executable, "-c", OPENER, uri, f"e{i}"], cwd=repo,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for i in range(3)]
        try:
            for proc in procs:
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            for proc in procs:  # all go at once
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            outputs = [proc.communicate(timeout=120) for proc in procs]
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
        for proc, (out, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0 and out.strip() == "ok", err[-2000:]
