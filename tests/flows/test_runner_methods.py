"""Every registered method runs from a spec, by name, on the simulated LCBench benchmark."""

from __future__ import annotations

import pytest

from flows.runner import build_tuner
from hpo_core.methods import METHODS
from hpo_core.spec import ExperimentSpec


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_runs_from_a_spec(name, tmp_path):
    multi = METHODS[name].multi_objective
    spec = ExperimentSpec.from_dict({
        "name": f"spec-{name}",
        "metric": ["Train/val_cross_entropy", "elapsed_time"] if multi
        else "Train/val_cross_entropy",
        "mode": "min",
        "scheduler": name,
        "backend": "simulated",
        "backend_options": {"blackbox": "lcbench", "task": "blood-transfusion-service-center"},
        "stop": {"max_results": 150},
        "n_workers": 4,
        "results_root": str(tmp_path),
    })
    tuner = build_tuner(spec)
    result = tuner.run()
    assert tuner.status.num_results > 0
    assert result.best_config is not None
    assert (tmp_path / spec.name / "results.parquet").exists()
