"""A metric no trial reports fails fast, naming the metric and the keys that were reported;
a flow run's final state message says why it failed, or what the best value was."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from flows.cli import main
from hpo_core.store import load_experiment
from hpo_core.tuner import METRIC_CHECK_REPORTS

SCRIPT = """
import time
from hpo_core.report import get_config, report
config = get_config()
for epoch in range(1, 41):
    time.sleep(0.05)
    report(epoch=epoch, val_loss=config["lr"] / epoch, val_accuracy=1 - config["lr"] / epoch)
"""


def local_spec(tmp_path: Path, metric: str, **extra: Any) -> dict[str, Any]:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    return {
        "name": "typo", "metric": metric, "mode": "min", "scheduler": "asha",
        "scheduler_options": {"max_t": 40, "resource_attr": "epoch"},
        "config_space": {"lr": {"type": "uniform", "lower": 0.1, "upper": 1.0}},
        "backend": "local",
        "backend_options": {"entry_point": [sys.executable, str(script)], "gpus": None,
                            "env": {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}},
        "stop": {"max_trials_completed": 6}, "n_workers": 2, "seed": 0,
        "results_root": str(tmp_path / "exp"), **extra,
    }


def test_local_backend_fails_fast_naming_the_metric_and_the_reported_keys(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(local_spec(tmp_path, "val_los")))
    assert main(["run", str(spec), "--no-flow"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("error: spec.metric: no trial reports 'val_los' (did you mean "
                       "'val_loss'?); the reports of trial(s) 0, 1 carry "
                       "['epoch', 'val_loss', 'val_accuracy']"), err
    assert "Traceback" not in "\n".join(err)
    # The check fires at the second report of the later of the first two trials (that report
    # is journaled, and kept: the error came in the middle of handling it, so no snapshot is
    # taken of that state); the earlier one may have reported more meanwhile (a loaded machine
    # starts the later one late) but neither ran its course and no third trial started.
    results = load_experiment(tmp_path / "exp" / "typo").results
    counts = sorted(results.groupby("trial_id").size())
    assert len(counts) == 2 and counts[0] == METRIC_CHECK_REPORTS and counts[1] < 40, counts
    # `show` says why it stopped: a resume as it is would stop the same way
    assert main(["show", "typo", "--results-root", str(tmp_path / "exp")]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[1].startswith("stopped by an error: MetricNotReportedError: spec.metric: no "
                               "trial reports 'val_los'"), shown
    assert shown[1].endswith("; once its cause is fixed, `tunesmith resume typo` continues it "
                             f"(with --results-root {tmp_path / 'exp'})"), shown


def test_simulated_backend_checks_the_metric_before_anything_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({
        "name": "sim-typo", "metric": "Train/val_cross_entropi", "scheduler": "asha",
        "backend_options": {"blackbox": "lcbench", "task": "blood-transfusion-service-center"},
        "stop": {"max_trials_completed": 10}, "results_root": str(tmp_path / "exp")}))
    assert main(["run", str(spec)]) == 2  # the flow mode: fails before Prefect starts
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "error: spec.metric: 'Train/val_cross_entropi' is not reported by blackbox"), err
    assert "'Train/val_cross_entropy'" in err[0]
    store = tmp_path / "exp" / "sim-typo"  # at most the lock's folder: nothing ran
    assert not any((store / name).exists() for name in ("spec.json", "state.json", "trials"))


@pytest.mark.usefixtures("prefect_harness")
def test_flow_run_final_state_says_why_it_failed_or_what_the_best_was(tmp_path: Path) -> None:
    from flows.tune import tune

    failed = tune.with_options(retries=0)(local_spec(tmp_path, "val_los"), track=False,
                                          return_state=True)
    assert failed.is_failed()
    assert "no trial reports 'val_los'" in failed.message
    assert "['epoch', 'val_loss', 'val_accuracy']" in failed.message

    spec = local_spec(tmp_path, "val_loss", name="good", stop={"max_trials_completed": 2})
    done = tune(spec, track=False, return_state=True)
    assert done.is_completed()
    outcome = done.result()
    assert outcome["best_trial_id"] is not None
    assert done.message.startswith(f"best val_loss = {outcome['best_value']:.4g} "
                                   f"(trial {outcome['best_trial_id']}, epoch "
                                   f"{outcome['best_step']}); ")
    assert "ended: max_trials_completed 2 reached" in done.message
    # each trial's task says how the trial ended and what it reported last
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[done.state_details.flow_run_id])))
    messages = [t.state.message for t in tasks]
    completed = [m for m in messages if " completed; last report: epoch=40 val_loss=0.0" in m]
    # a trial stopped when the experiment ended may not have reported yet: no "last report"
    stopped = [m for m in messages
               if re.fullmatch(r"trial \d+ stopped early(; last report: epoch=\d+ .*)?", m)]
    assert completed and len(completed) + len(stopped) == len(messages), messages


def test_a_cost_limit_no_trial_reports_fails_once_a_trial_finished(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.json"  # no trial reports `cost`: max_cost would never be reached
    spec.write_text(json.dumps(local_spec(tmp_path, "val_loss", scheduler="random",
                                          scheduler_options={}, stop={"max_cost": 5})))
    assert main(["run", str(spec), "--no-flow"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert re.fullmatch(r"error: spec\.stop\.cost_attr: max_cost sums the trials' 'cost', and "
                        r"no trial reports it; trial \d finished with reports carrying "
                        r"\['epoch', 'val_loss', 'val_accuracy'\]", err[-1]), err
    assert load_experiment(tmp_path / "exp" / "typo").num_trials() <= 3  # 2 workers


def test_simulated_backend_checks_the_cost_before_anything_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = {"name": "sim-cost", "metric": "Train/val_cross_entropy", "scheduler": "asha",
            "backend_options": {"blackbox": "lcbench", "task": "blood-transfusion-service-center"},
            "stop": {"max_cost": 600}, "results_root": str(tmp_path / "exp")}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    assert main(["run", str(path), "--no-flow"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "error: spec.stop.cost_attr: max_cost sums the trials' 'cost', which blackbox 'lcbench' "
        "does not report; set cost_attr to what it does, e.g. the time a trial ran, "
        "'elapsed_time' (it reports ['epoch', "), err
    # the time each trial ran, summed over trials: the limit is reached
    path.write_text(json.dumps({**spec, "stop": {"max_cost": 600,
                                                 "cost_attr": "elapsed_time"}}))
    assert main(["run", str(path), "--no-flow"]) == 0
    assert "ended: max_cost 600 reached" in capsys.readouterr().out


def test_the_final_message_of_a_run_whose_trials_all_failed_does_not_deny_their_reports(
        ) -> None:
    from flows.tune import _final_message

    outcome = {"best_trial_id": None, "metric": "loss", "reason": "too many failures: 2 ...",
               "counts": {"trials": 2, "failed": 2, "results": 6}}
    # the trials reported loss, then failed: a failed trial is never best
    assert _final_message(outcome).startswith("no trial that did not fail reported loss; "
                                              "2 trials: 2 failed; ended: too many failures")
