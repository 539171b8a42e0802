"""Failures are results, through `tunesmith run` (the `tune` flow): too many failures and an
experiment whose every trial failed end with one `error:` line, exit code 2, a summary artifact
that says why, no flow retry; `list` and `show` count the failed trials and say why it ended."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.cli import main

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

FAILING = textwrap.dedent("""
    import sys
    from hpo_core.report import get_config
    config = get_config()
    if config.get("silent"):
        sys.exit(0)  # ends without reporting: a failure too
    raise RuntimeError("the data set is missing")
""")


def write_spec(tmp_path: Path, name: str, **changes: Any) -> Path:
    script = tmp_path / "train.py"
    script.write_text(FAILING)
    spec = {
        "name": name, "metric": "loss",
        "config_space": {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}},
        "scheduler": "random", "backend": "local",
        "backend_options": {"entry_point": str(script), "gpus": None},
        "stop": {"max_trials_started": 10}, "n_workers": 1,
        "results_root": str(tmp_path / "exp"),
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", **changes,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def flow_runs(name: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=name)))


def summary(name: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"{name}-summary"])))
    return str(artifact.data)


def without_logging_errors(text: str) -> str:
    """The console without the test harness's own noise: Prefect's console handler may keep
    an earlier test's closed capture stream, and `logging` then prints a '--- Logging error ---'
    block with a traceback of the handler."""
    head, *blocks = text.split("--- Logging error ---")
    return head + "".join(block.split("\nArguments:", 1)[-1] for block in blocks)


def one_error_line(console) -> str:
    out, err = console.readouterr()
    err = without_logging_errors(err)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert "Traceback" not in out + err, err
    return errors[0]


def test_too_many_failures(tmp_path: Path, monkeypatch, prefect_console) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_spec(tmp_path, "too-many", max_failures=2)
    assert main(["run", str(path)]) == 2
    line = one_error_line(prefect_console)
    assert "too many failures: 2 trials failed (max_failures=2)" in line
    assert "RuntimeError: the data set is missing" in line
    (run,) = flow_runs("too-many")
    assert run.state.is_failed() and run.run_count == 1  # a user error is never retried
    assert "ended: too many failures" in summary("too-many")

    assert main(["show", "too-many", "--results-root", "exp"]) == 0
    out = prefect_console.readouterr().out
    assert "2 trials: 2 failed" in out and "raise max_failures" in out
    assert "tunesmith resume" not in out
    assert "last failure: trial 1: exited with code 1" in out
    assert main(["list", "--results-root", "exp"]) == 0
    row = prefect_console.readouterr().out.splitlines()[1].split()
    assert row[0] == "too-many" and row[1] == "2" and row[3] == "yes" and row[5] == "2"


def test_every_trial_failed_without_a_report(tmp_path: Path, monkeypatch, prefect_console) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_spec(tmp_path, "all-failed", max_failures=None,
                      stop={"max_trials_started": 2},
                      config_space={"x": {"type": "uniform", "lower": 0, "upper": 1},
                                    "silent": True})
    assert main(["run", str(path)]) == 2
    line = one_error_line(prefect_console)
    assert "all 2 trials of all-failed failed" in line and "exited without reporting" in line
    (run,) = flow_runs("all-failed")
    assert run.state.is_failed() and run.run_count == 1
    text = summary("all-failed")
    assert "No trial reported loss." in text and "2 failed" in text
