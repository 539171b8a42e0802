"""Every registered method runs from a spec, by name, on the simulated LCBench benchmark."""

from __future__ import annotations

from typing import Any

import pytest

from flows.experiment import build_tuner
from hpo_core.registry import METHODS
from hpo_core.spec import ExperimentSpec


def lcbench_spec(name: str, scheduler: str, root: Any, options: dict[str, Any] | None = None,
                 max_results: int = 150) -> ExperimentSpec:
    multi = METHODS[scheduler].multi_objective
    return ExperimentSpec.from_dict({
        "name": name,
        "metric": ["Train/val_cross_entropy", "elapsed_time"] if multi
        else "Train/val_cross_entropy",
        "mode": "min",
        "scheduler": scheduler,
        "scheduler_options": options or {},
        "backend": "simulated",
        "backend_options": {"blackbox": "lcbench", "task": "blood-transfusion-service-center"},
        "stop": {"max_results": max_results},
        "n_workers": 4,
        "results_root": str(root),
    })


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_runs_from_a_spec(name, tmp_path):
    options = {}
    if METHODS[name].transfer:
        # transfer methods learn from an earlier experiment in the store
        build_tuner(lcbench_spec("earlier", "random", tmp_path, max_results=60)).run()
        options = {"transfer_from": [str(tmp_path / "earlier")]}
    if name == "cbo":  # its constraint must be a metric the blackbox reports
        options = {"constraint_attr": "Train/loss"}
    spec = lcbench_spec(f"spec-{name}", name, tmp_path, options)
    tuner = build_tuner(spec)
    result = tuner.run()
    assert tuner.status.num_results > 0
    if name == "cbo":  # a loss is never <= 0: no report meets the constraint, none is the best
        assert result.best_config is None and tuner.status.best_value is None
    else:
        assert result.best_config is not None
    assert (tmp_path / spec.name / "results.parquet").exists()
