"""The `compare` flow: methods x seeds on the simulated LCBench blackbox."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_compare_aggregates_methods_over_seeds(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from flows.compare import compare

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    outcome = compare(methods=["random", "asha"], seeds=[0, 1],
                      stop={"max_trials_completed": 8}, n_workers=2, name="cmp",
                      results_root=str(tmp_path), tracking_uri=uri)

    table = {row["method"]: row for row in outcome["table"]}
    assert set(table) == {"random", "asha"}
    assert all(row["count"] == 2 and row["mean"] > 0 for row in table.values())
    assert (tmp_path / "cmp-summary" / "comparison.png").stat().st_size > 1000
    for method in ("random", "asha"):
        for seed in (0, 1):
            assert (tmp_path / f"cmp-{method}-s{seed}" / "results.parquet").exists()
    client = MlflowClient(uri)
    run = client.get_run(outcome["mlflow_run_id"])
    assert run.data.metrics["asha_mean"] == pytest.approx(table["asha"]["mean"])
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == \
        {"comparison.png", "comparison.csv"}
