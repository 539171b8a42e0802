"""The `retune` flow (warm start from earlier MLflow runs) and the `smoke` flow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from flows.smoke import SmokeTestFailure, check_outcome
from hpo_core.store import load_experiment

pytestmark = pytest.mark.usefixtures("prefect_harness")


def base_spec(root: Path) -> dict[str, Any]:
    return {
        "name": "nightly-base", "metric": "Train/val_cross_entropy", "scheduler": "asha",
        "backend_options": {"blackbox": "lcbench", "task": "blood-transfusion-service-center"},
        "stop": {"max_trials_completed": 10}, "n_workers": 2, "seed": 2,
        "results_root": str(root / "experiments"),
    }


def test_retune_warm_starts_from_the_best_earlier_config(tmp_path: Path) -> None:
    from flows.retune import retune
    from flows.tune import tune

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = tune(base_spec(tmp_path), tracking_uri=uri)
    outcome = retune(base_spec(tmp_path), date="2026-01-02", tracking_uri=uri)

    assert outcome["experiment"] == "nightly-base-2026-01-02" and not outcome["resumed"]
    assert outcome["warm_start_configs"] == [first["best_config"]]
    dated = load_experiment(Path(outcome["store_path"]))
    assert dated.state["trials"]["0"]["config"] == first["best_config"]
    assert outcome["mlflow_experiment_id"] == first["mlflow_experiment_id"]
    assert outcome["mlflow_parent_run_id"] != first["mlflow_parent_run_id"]

    again = retune(base_spec(tmp_path), date="2026-01-02", tracking_uri=uri,
                   transfer="zero_shot")
    assert again["resumed"] and again["mlflow_parent_run_id"] == outcome["mlflow_parent_run_id"]
    # it resumed the day's experiment as it was started: no transfer applied this time
    assert again["transfer"] is None and again["warm_start_configs"] == []


def test_smoke_flow_passes_on_a_healthy_engine(tmp_path: Path) -> None:
    from flows.smoke import smoke

    outcome = smoke(trials=8, results_root=str(tmp_path))
    assert outcome["counts"]["trials"] >= 8
    assert (tmp_path / "smoke" / "results.parquet").exists()


def test_smoke_check_fails_loudly(tmp_path: Path) -> None:
    store = tmp_path / "smoke"
    store.mkdir()
    rows = pd.DataFrame({"trial_id": [0, 0, 1], "epoch": [1, 2, 1], "loss": [0.5, 0.4, 0.6]})
    rows.to_parquet(store / "results.parquet")
    (store / "state.json").write_text(json.dumps({}))
    good = {"counts": {"trials": 2, "results": 3}, "store_path": str(store), "metric": "loss",
            "mode": "min", "best_value": 0.3}
    check_outcome(good, trials=2)
    with pytest.raises(SmokeTestFailure, match="no improvement"):
        check_outcome({**good, "best_value": 0.4}, trials=2)
    with pytest.raises(SmokeTestFailure, match="at least 2 trials"):
        check_outcome({**good, "counts": {"trials": 0, "results": 0}}, trials=2)
    with pytest.raises(SmokeTestFailure, match="holds 3 reports"):
        check_outcome({**good, "counts": {"trials": 2, "results": 5}}, trials=2)
    (store / "results.parquet").unlink()
    with pytest.raises(SmokeTestFailure, match="results.parquet was not written"):
        check_outcome(good, trials=2)


@pytest.mark.slow
def test_retune_stores_its_spec_parameter_with_the_secrets_masked(tmp_path: Path) -> None:
    """The retune flow's `spec` parameter, as Prefect keeps it, holds no secret (as `tune`'s)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    from flows.retune import retune

    canary = "SK-retune-canary-5e2a07"
    script = tmp_path / "train.py"
    script.write_text("from hpo_core.report import get_config, report\n"
                      "config = get_config()\n"
                      "assert config['api_key'] == 'SK-retune-canary-5e2a07'\n"
                      "report(epoch=1, loss=config['x'])\n")
    spec = {
        "name": "retune-secret", "metric": "loss", "mode": "min", "scheduler": "random",
        "config_space": {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0},
                         "api_key": canary},
        "backend": "local",
        "backend_options": {"entry_point": str(script), "gpus": None},
        "stop": {"max_trials_started": 2}, "n_workers": 2, "seed": 0,
        "results_root": str(tmp_path / "experiments"),
    }
    outcome = retune(spec, date="2026-01-03", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert outcome["counts"]["failed"] == 0, outcome["counts"]  # the trials got the value

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(
            name=FlowFilterName(any_=["retune", "tune"])))
    stored = [run.parameters for run in runs if isinstance(run.parameters.get("spec"), dict)]
    names = {p["spec"].get("name") for p in stored}
    assert {"retune-secret", "retune-secret-2026-01-03"} <= names, names  # retune, its tune
    assert canary not in json.dumps(stored)
