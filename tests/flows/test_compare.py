"""`tunesmith compare` and the `compare` flow: methods x tasks x seeds on simulated benchmarks,
with tables, plots, Prefect artifacts and an MLflow run; a method that runs out of configs on a
finite space ends with a reason the comparison shows."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import pandas as pd
import psutil
import pytest

from backends.blackbox import blackbox_from_dataframe
from backends.blackbox.repository import ROOT_ENV
from flows.cli import main

ARGS = ["--methods", "random,asha", "--tasks", "3945,7593", "--seeds", "2", "--max-time", "300",
        "--workers", "2", "--processes", "2", "--name", "cmp"]


def test_tunesmith_compare_2_methods_2_tasks_2_seeds_through_the_flow(
        tmp_path: Path, prefect_console, prefect_harness) -> None:
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["compare", *ARGS, "--results-root", str(tmp_path), "--tracking-uri", uri]) == 0
    out, err = prefect_console.readouterr()
    # the table once, on stdout; the flow's log has a one-line summary
    assert (out + err).count("area (95% CI)") == 1 and "area (95% CI)" in out
    assert re.search(r"cmp: 2 methods x 2 tasks x 2 seeds, .*; best: (asha|random) \(area "
                     r"\d\.\d{4}, final \d\.\d{4}, rank \d\.\d\d\); tables, plots and report: ",
                     err), err
    # the table: both methods with area, final regret and rank as mean [95% interval]
    rows = {line.split()[0]: line for line in out.splitlines()
            if line.startswith(("random ", "asha "))}
    assert set(rows) == {"random", "asha"}
    assert all(len(re.findall(r"\d\.\d+ \[-?\d\.\d+, \d\.\d+\]", r)) == 3 for r in rows.values())
    assert re.search(r"Paired over 4 \(task, seed\) runs, \w+ - \w+ area: [+-]\d\.\d+ \[", out)

    folder = tmp_path / "cmp-summary"
    summary = pd.read_csv(folder / "summary.csv")
    assert set(summary["method"]) == {"random", "asha"} and (summary["runs"] == 4).all()
    assert summary["area"].between(0, 1).all() and summary["rank"].between(1, 2).all()
    per_task = pd.read_csv(folder / "per_task.csv")
    assert sorted(per_task["task"].astype(str).unique()) == ["3945", "7593"]
    runs = pd.read_csv(folder / "runs.csv")
    assert len(runs) == 8 and runs.groupby(["task", "seed"])["rank"].sum().eq(3).all()
    for plot in ("regret.png", "ranks.png"):
        assert (folder / plot).stat().st_size > 10_000
    assert "## Task 3945" in (folder / "report.md").read_text()
    for method in ("random", "asha"):  # every run is an experiment of its own
        assert (tmp_path / f"cmp-{method}-t7593-s1" / "results.parquet").exists()

    flow_run_id = re.search(r"prefect run\s+(\S+)", out).group(1)
    runs_filter = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
    with get_client(sync_client=True) as client:
        artifacts = {a.key: a for a in client.read_artifacts(flow_run_filter=runs_filter)}
        task_runs = client.read_task_runs(flow_run_filter=runs_filter)
    assert {"cmp-comparison", "cmp-comparison-report"} <= set(artifacts)
    assert "data:image/png;base64," in artifacts["cmp-comparison-report"].data
    assert len(task_runs) == 8 and all(t.state.is_completed() for t in task_runs)

    client = MlflowClient(uri)
    run_id = re.search(r"mlflow run\s+(\S+)", out).group(1)
    run = client.get_run(run_id)
    area = summary.set_index("method")["area"]
    assert run.data.metrics["asha.area"] == pytest.approx(area["asha"])
    assert run.data.params["tasks"] == "3945,7593"
    assert {a.path for a in client.list_artifacts(run_id)} == {
        "runs.csv", "per_task.csv", "summary.csv", "regret.png", "ranks.png", "report.md"}
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def finite_blackbox(root: Path) -> None:
    """A 6-config table: methods that never repeat a config run out of them quickly."""
    rows = [{"x": x, "epoch": e, "loss": (x - 2.5) ** 2 + 1.0 / e, "elapsed": 10.0 * e}
            for x in range(6) for e in range(1, 10)]
    blackbox = blackbox_from_dataframe(pd.DataFrame(rows), ["x"], "epoch", ["loss"], "elapsed",
                                       name="tiny", config_space={"x": {"type": "choice",
                                                                        "categories": list(range(6))}})
    blackbox.save(root / "tiny" / "six")


def test_a_method_that_runs_out_of_configs_ends_with_a_reason_the_comparison_shows(
        tmp_path: Path, capsys, monkeypatch) -> None:
    finite_blackbox(tmp_path / "bb")
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "bb"))
    assert main(["compare", "--blackbox", "tiny", "--tasks", "six", "--metric", "loss",
                 "--mode", "min", "--methods", "pasha,random", "--seeds", "2",
                 "--max-time", "3600", "--workers", "2", "--processes", "1", "--name", "fin",
                 "--results-root", str(tmp_path / "exp"), "--no-flow"]) == 0
    out = capsys.readouterr().out
    summary = pd.read_csv(tmp_path / "exp" / "fin-summary" / "summary.csv")
    assert (summary["ended_early"] == 2).all()
    assert summary["end_note"].str.contains(
        r"2/2 ended before the budget .*scheduler has nothing to start").all()
    assert "ended before the budget" in out
    runs = pd.read_csv(tmp_path / "exp" / "fin-summary" / "runs.csv")
    assert (runs["end_time"] < 3600).all()
    assert (runs[runs.method == "random"]["final"] == 0).all()  # all 6 configs, to the end


BUNDLED_DEFAULTS = {  # blackbox -> the tasks and metric a comparison on it uses by default
    "lcbench": (["blood-transfusion-service-center"], "Train/val_cross_entropy", "min"),
    "yahpo-lcbench": (["3945", "7593"], "val_accuracy", "max"),
}


def test_the_bundled_blackboxes_are_the_ones_with_defaults_here(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from backends.blackbox import available_blackboxes

    monkeypatch.delenv(ROOT_ENV, raising=False)
    assert set(available_blackboxes()) == set(BUNDLED_DEFAULTS)


@pytest.mark.parametrize("blackbox", sorted(BUNDLED_DEFAULTS))
def test_compare_on_any_bundled_blackbox_needs_no_tasks_metric_or_mode(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        blackbox: str) -> None:
    monkeypatch.delenv(ROOT_ENV, raising=False)
    code = main(["compare", "--methods", "asha", "--blackbox", blackbox, "--seeds", "1",
                 "--max-time", "100", "--workers", "2", "--processes", "1", "--name", "cmpbb",
                 "--results-root", str(tmp_path), "--no-flow"])
    assert code == 0, capsys.readouterr().err
    tasks, metric, mode = BUNDLED_DEFAULTS[blackbox]
    per_task = pd.read_csv(tmp_path / "cmpbb-summary" / "per_task.csv")
    assert sorted(per_task["task"].astype(str).unique()) == tasks
    spec = json.loads((tmp_path / f"cmpbb-asha-t{tasks[0]}-s0" / "spec.json").read_text())
    assert (spec["metric"], spec["mode"]) == (metric, mode)


def test_a_blackbox_of_ones_own_defaults_to_its_first_tasks_and_its_default_metric(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.comparison import comparison_defaults

    finite_blackbox(tmp_path / "bb")
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "bb"))
    assert comparison_defaults("tiny") == (["six"], "loss", "min")
    assert comparison_defaults("tiny", ["six"], "loss", "max") == (["six"], "loss", "max")
    with pytest.raises(ValueError, match=r"blackbox: unknown name 'nope'"):
        comparison_defaults("nope")


@pytest.mark.parametrize("argv, message", [
    (["--methods", "asha,nope"], r"error: spec.scheduler: unknown .*'nope'"),
    (["--tasks", "3945,1"], r"error: spec.backend_options: task: .*no task '1'"),
    (["--seeds", "0"], r"error: --seeds: a count must be at least 1"),
    (["--max-time", "0"], r"error: max_time: must be > 0"),
    (["--methods", "moasha,asha"],  # before: "spec.metric: give a list", which compare cannot
     r"error: methods: a comparison ranks methods on one metric; \['moasha'\] optimize several"),
])
def test_bad_compare_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    assert main(["compare", "--no-flow", "--results-root", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1, err


def test_bad_compare_input_fails_before_the_flow_starts(tmp_path, capsys):
    # the flow mode: nothing of Prefect (no server, no flow run, no traceback in its log)
    assert main(["compare", "--results-root", str(tmp_path), "--methods", "nope"]) == 2
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert "unknown method 'nope'" in captured.err and "prefect" not in captured.out.lower()


def test_the_compare_deployment_names_the_flow_with_valid_parameters() -> None:
    import yaml

    from flows.compare import compare

    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "deployments" /
                             "prefect.yaml").read_text())
    deployment = {d["name"]: d for d in config["deployments"]}["yahpo-lcbench"]
    assert deployment["entrypoint"] == "flows/compare.py:compare"
    compare.validate_parameters(deployment["parameters"])


def _start_two_long_runs(root: Path, name: str) -> subprocess.Popen[str]:
    """`tunesmith compare` of two long simulated runs in two worker processes (no flow), once
    both runs are going."""
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "compare", "--blackbox", "lcbench", "--methods",
         "asha,random", "--seeds", "1", "--max-time", "40000000", "--no-flow", "--processes",
         "2", "--results-root", str(root), "--name", name],
        cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while len(list(root.glob(f"{name}-*/state.json"))) < 2:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(proc.communicate())
        time.sleep(0.2)
    return proc


def _assert_runs_interrupted(root: Path, name: str) -> None:
    """Both runs know they were interrupted (as by a Ctrl-C), so the same comparison resumes
    them."""
    from hpo_core.store import load_experiment

    runs = [f for f in root.glob(f"{name}-*") if (f / "spec.json").exists()]
    assert len(runs) == 2
    for folder in runs:
        assert load_experiment(folder).last_exit == ("KeyboardInterrupt", False), folder


def test_ctrl_c_to_compare_alone_interrupts_its_runs_and_says_how_to_go_on(tmp_path) -> None:
    """SIGINT to the `tunesmith compare` process only (its worker processes do not get it):
    the runs are interrupted (not waited for), they save their state, one line, exit 130."""
    proc = _start_two_long_runs(tmp_path, "c")
    try:
        workers = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("interrupted by SIGINT: the runs saved "
                                                   "their state"), err
    assert "Traceback" not in err
    assert not psutil.wait_procs(workers, timeout=10)[1]  # no worker left
    _assert_runs_interrupted(tmp_path, "c")


def test_a_sigkill_of_compare_ends_its_workers_runs_which_can_resume(tmp_path) -> None:
    """The workers of a SIGKILLed `tunesmith compare` are interrupted as by a Ctrl-C (their
    runs save their state) and end (before: they ran their runs on to the end)."""
    proc = _start_two_long_runs(tmp_path, "k")
    workers: list[psutil.Process] = []
    try:
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert len(workers) >= 2
        proc.kill()
        proc.communicate(timeout=10)
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, [w.cmdline() for w in alive]
    finally:
        for worker in workers:
            if worker.is_running():
                worker.kill()
    _assert_runs_interrupted(tmp_path, "k")
