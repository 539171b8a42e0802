"""Function trials end to end: `module:function` through the `tune` flow into MLflow, and the
Python API (`tunesmith.tune`) writing experiments that the CLI lists, shows and resumes."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_deployments import PREFECT, prefect_server, stop, wait_for  # noqa: F401 (a fixture)

from flows.cli import main
from hpo_core.store import load_experiment

OBJECTIVE = """\
from hpo_core.report import report


def objective(config):
    if config["x"] > 0.9:
        raise ValueError(f"x={config['x']} is too large, token=hunter2-secret")
    for epoch in range(1, 4):
        report(epoch=epoch, loss=(config["x"] - 0.3) ** 2 + 1 / epoch)


def leaky(config):
    report(epoch=1, loss=config["x"])
    if config["x"] > 0.5:
        raise PermissionError(f"the service refused token {config['api_token']}")


def scaled(config, scale):
    for epoch in range(1, 3):
        report(epoch=epoch, loss=scale * config["x"] + 1 / epoch)
"""


@pytest.fixture
def objective_module(tmp_path, monkeypatch):
    (tmp_path / "fn_trials.py").write_text(OBJECTIVE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "fn_trials"


def test_module_function_through_the_tune_flow_into_mlflow(tmp_path, objective_module,
                                                           prefect_harness):
    from mlflow import MlflowClient

    from flows.tune import tune

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = {
        "name": "fn-flow", "metric": "loss", "mode": "min", "scheduler": "asha",
        "scheduler_options": {"max_t": 3, "grace_period": 1, "reduction_factor": 3,
                              "points_to_evaluate": [{"x": 0.95}]},  # this one raises
        "config_space": {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}},
        "backend": "local",
        "backend_options": {"entry_point": "fn_trials:objective", "gpus": None},
        "stop": {"max_trials_started": 6}, "n_workers": 2, "seed": 0,
        "results_root": str(tmp_path / "experiments"),
    }
    outcome = tune(spec, tracking_uri=uri)
    assert outcome["counts"]["trials"] == 6 and outcome["counts"]["failed"] == 1
    assert outcome["mlflow_error"] is None

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("fn-flow")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    children = {r.data.tags["mlflow.runName"]: r for r in runs
                if "mlflow.parentRunId" in r.data.tags}
    assert len(children) == 6
    failed = children["trial-0"]
    reason = failed.data.tags["tunesmith.failure_reason"]
    assert "raised ValueError: x=0.95 is too large" in reason
    assert "fn_trials.py" in reason and "Traceback" in reason
    stderr = Path(client.download_artifacts(failed.info.run_id, "logs/stderr.txt", str(tmp_path)))
    assert 'raise ValueError(f"x={config' in stderr.read_text()
    best = children[f"trial-{outcome['best_trial_id']}"]
    assert [m.step for m in client.get_metric_history(best.info.run_id, "loss")][:1] == [1]
    frame = load_experiment(outcome["store_path"]).results
    assert set(frame["epoch"]) <= {1, 2, 3} and len(frame) >= 5


def test_the_python_api_writes_an_experiment_the_cli_understands(tmp_path, objective_module,
                                                                 capsys):
    import fn_trials

    from tunesmith import tune, uniform

    root = tmp_path / "experiments"
    result = tune(fn_trials.objective, {"x": uniform(0.0, 0.8)}, metric="loss", method="random",
                  stop={"max_trials_started": 4}, n_workers=2, name="api-fn",
                  results_root=root, flow=False)
    assert result.path == root / "api-fn"
    assert len(result.results) == 4 * 3 and result.best_value == pytest.approx(
        result.results["loss"].min())
    assert set(result.best_config) == {"x"} and result.plot().is_file()
    spec = result.experiment.spec
    assert spec["backend_options"]["entry_point"] == "fn_trials:objective"

    assert main(["list", "--results-root", str(root)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["api-fn", "4"]
    assert main(["show", "api-fn", "--results-root", str(root)]) == 0
    assert "\nended: " in capsys.readouterr().out
    # resume with a larger budget, from the spec alone (as `tunesmith run` would)
    data = json.loads((root / "api-fn" / "spec.json").read_text())
    data["stop"] = {"max_trials_started": 6}
    (tmp_path / "more.json").write_text(json.dumps(data))
    assert main(["run", str(tmp_path / "more.json"), "--no-flow"]) == 0
    assert len(load_experiment(root / "api-fn").trials()) >= 6


def test_the_python_api_with_a_pickled_objective_and_a_scheduler_object(tmp_path,
                                                                        objective_module,
                                                                        prefect_harness):
    """Both objects go through the `tune` flow as they are (flow parameters in this process)."""
    import fn_trials

    from hpo_core.registry import build_scheduler
    from tunesmith import tune

    space = {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}}
    scheduler = build_scheduler("asha", space, "loss", "min", seed=3,
                                options={"max_t": 2, "grace_period": 1})
    result = tune(functools.partial(fn_trials.scaled, scale=2.0), space, metric="loss",
                  method=scheduler, stop={"max_trials_completed": 3}, n_workers=2,
                  results_root=tmp_path / "experiments",
                  tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert result.outcome["counts"]["failed"] == 0 and result.outcome["scheduler"] == "asha"
    assert result.experiment.spec["scheduler"] == "asha"
    assert result.experiment.spec["backend_options"]["entry_point"].startswith("python-object:")
    assert len(result.trials) >= 3
    with pytest.raises(ValueError, match="cannot be sent to a trial worker"):
        tune(lambda config: 1.0, space, metric="loss", stop={"max_trials_completed": 1},
             flow=False, results_root=tmp_path / "experiments")
    assert main(["resume", result.path.name, "--results-root", str(tmp_path / "experiments"),
                 "--no-flow"]) == 2  # the objective was an object: resume it from Python


def test_tune_refuses_to_run_inside_a_worker(monkeypatch):
    from tunesmith import tune

    monkeypatch.setenv("TUNESMITH_WORKER", "x")
    with pytest.raises(RuntimeError, match='if __name__ == "__main__":'):
        tune("x.py:f", {}, metric="loss")


@pytest.mark.slow
def test_a_function_entry_point_in_a_deployment_run(tmp_path, objective_module, request):
    """A served `tune` deployment, run with a spec whose entry point is `module:function`
    (the module in the serve process's working directory, as in a repository checkout)."""
    env = request.getfixturevalue("prefect_server")  # a real `prefect server start`
    spec = {
        "name": "fn-deployed", "metric": "loss", "scheduler": "random",
        "config_space": {"x": {"type": "uniform", "lower": 0.0, "upper": 0.8}},
        "backend": "local", "backend_options": {"entry_point": "fn_trials:objective", "gpus": None},
        "stop": {"max_trials_completed": 3}, "n_workers": 2,
        "results_root": str(tmp_path / "experiments"),
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    with open(tmp_path / "serve.log", "wb") as log:
        serve = subprocess.Popen(
            [sys.executable, "-c", "from flows.tune import tune; tune.serve(name='fn')"],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(f"{env['PREFECT_API_URL']}/deployments/name/tune/fn", 120, serve)
        run = subprocess.run(
            [str(PREFECT), "deployment", "run", "tune/fn", "--param", f"spec={json.dumps(spec)}",
             "--watch", "--watch-timeout", "240"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0 and "Completed" in run.stdout, \
            run.stdout[-3000:] + run.stderr[-3000:]
    finally:
        stop(serve)
    experiment = load_experiment(tmp_path / "experiments" / "fn-deployed")
    assert len(experiment.trials()) >= 3 and len(experiment.results) >= 9


def test_the_python_api_runs_a_training_script_too(tmp_path):
    from tunesmith import tune, uniform

    script = tmp_path / "train.py"
    script.write_text("from hpo_core.report import get_config, report\n"
                      "config = get_config()\n"
                      "for epoch in (1, 2):\n"
                      "    report(epoch=epoch, loss=config['x'] / epoch)\n")
    result = tune(script, {"x": uniform(0.0, 1.0)}, metric="loss", method="random",
                  stop={"max_trials_started": 3}, n_workers=2, backend_options={"gpus": None},
                  results_root=tmp_path / "experiments", flow=False)
    assert result.path.name.startswith("train-")
    assert result.experiment.spec["backend_options"]["entry_point"] == str(script)
    assert len(result.results) == 6 and result.best_value == result.results["loss"].min()


def test_the_python_api_bare_raises_when_every_trial_failed(tmp_path):
    """As the flow and the CLI do (before, `flow=False` returned a result with no best)."""
    from flows.failures import AllTrialsFailed
    from tunesmith import tune, uniform

    script = tmp_path / "crash.py"
    script.write_text("raise SystemExit('no data')\n")
    with pytest.raises(AllTrialsFailed, match=r"^all 2 trials of crash-.* failed; last failure: "
                                              r"trial \d: exited with code 1"):
        tune(script, {"x": uniform(0.0, 1.0)}, metric="loss", method="random",
             stop={"max_trials_started": 2}, n_workers=2, backend_options={"gpus": None},
             results_root=tmp_path / "experiments", flow=False, max_failures=None)


def test_a_failed_trials_traceback_is_masked_in_its_record_and_mlflow(tmp_path, objective_module,
                                                                       monkeypatch,
                                                                       prefect_harness):
    from mlflow import MlflowClient

    from flows.tune import tune

    token = "tok-5f8e2c91d7a4"
    monkeypatch.setenv("FN_SERVICE_TOKEN", token)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = {
        "name": "fn-masked", "metric": "loss", "scheduler": "random",
        "scheduler_options": {"points_to_evaluate": [{"x": 0.9}, {"x": 0.1}]},
        "config_space": {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0},
                         "api_token": {"secret": "env:FN_SERVICE_TOKEN"}},
        "backend": "local", "backend_options": {"entry_point": "fn_trials:leaky", "gpus": None},
        "stop": {"max_trials_started": 2}, "n_workers": 1,
        "results_root": str(tmp_path / "experiments"),
    }
    outcome = tune(spec, tracking_uri=uri)
    state = json.loads((Path(outcome["store_path"]) / "state.json").read_text())
    (reason,) = [t["failure_reason"] for t in state["trials"].values() if t["failure_reason"]]
    assert "PermissionError: the service refused token" in reason and "fn_trials.py" in reason
    assert token not in reason and "[redacted]" in reason
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("fn-masked")
    (failed,) = [r for r in client.search_runs([exp.experiment_id])
                 if "tunesmith.failure_reason" in r.data.tags]
    assert token not in failed.data.tags["tunesmith.failure_reason"]
    assert "PermissionError" in failed.data.tags["tunesmith.failure_reason"]
