"""YAHPO Gym surrogates read with onnxruntime: the official package's rows, the repository, specs
and deterministic replays."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from backends.blackbox import BlackboxError, available_blackboxes, load_blackbox
from backends.blackbox.repository import BUNDLED_ROOT, ROOT_ENV
from backends.blackbox.yahpo import YahpoBlackbox
from backends.simulated import SimulatedBackend
from flows.experiment import build_tuner
from hpo_core.spec import ExperimentSpec
from hpo_core.trial import EventKind, Trial

REFERENCE = Path(__file__).parent / "data" / "yahpo_lcbench_reference.json"
FOLDER = BUNDLED_ROOT / "yahpo-lcbench"
OUTPUT = {"time": "elapsed_time"}  # YAHPO's name -> ours


def reference_rows() -> list[dict]:
    return json.loads(REFERENCE.read_text())["rows"]


def test_single_rows_reproduce_the_official_package_exactly():
    rows = reference_rows()
    assert len(rows) == 60
    for row in rows:
        config = dict(row["config"])
        blackbox = load_blackbox("yahpo-lcbench", task=config.pop("OpenML_task_id"))
        epoch = config.pop("epoch")
        predicted = blackbox.predict([config], [epoch])[0]
        for name, expected in row["output"].items():
            got = predicted[blackbox.objective_index(OUTPUT.get(name, name))]
            assert got == np.float32(expected), (row["config"], name)


def test_whole_curves_in_one_call_match_to_float32_arithmetic():
    """A curve is predicted in one batched call; onnxruntime's batched kernel sums in another
    order, which moves the last float32 digits (measured: at most 3.1e-4 relative)."""
    for row in reference_rows():
        config = dict(row["config"])
        blackbox = load_blackbox("yahpo-lcbench", task=config.pop("OpenML_task_id"))
        epoch = config.pop("epoch")
        curve = blackbox.curve(config)
        assert curve.shape == (52, 6)
        position = int(np.searchsorted(blackbox.fidelity_values, epoch))
        for name, expected in row["output"].items():
            got = curve[position, blackbox.objective_index(OUTPUT.get(name, name))]
            assert got == pytest.approx(expected, rel=5e-4), (row["config"], name)


def test_the_bundled_scenario_is_in_the_repository_with_34_tasks():
    tasks = available_blackboxes()["yahpo-lcbench"]
    assert len(tasks) == 34 and "3945" in tasks and "189909" in tasks
    blackbox = load_blackbox("yahpo-lcbench", task="3945")
    assert isinstance(blackbox, YahpoBlackbox)
    assert blackbox.config_space.names == ["batch_size", "learning_rate", "max_dropout",
                                           "max_units", "momentum", "num_layers", "weight_decay"]
    assert blackbox.config_space.domains["batch_size"].to_json() == {
        "type": "lograndint", "lower": 16, "upper": 512}
    assert blackbox.fidelity_values.tolist() == list(range(1, 53))
    assert blackbox.time_attr == "elapsed_time" and blackbox.modes["val_accuracy"] == "max"
    assert load_blackbox("yahpo-lcbench", task="3945") is blackbox  # cached
    for required in ("README.md", "LICENSE-2.0.txt", "model.onnx", "scenario.json"):
        assert (FOLDER / required).exists()
    with pytest.raises(BlackboxError, match=r"no task '42'"):
        load_blackbox("yahpo-lcbench", task="42")


def test_another_scenario_folder_loads_by_name(tmp_path, monkeypatch):
    folder = tmp_path / "my-scenario"
    shutil.copytree(FOLDER, folder)
    scenario = json.loads((folder / "scenario.json").read_text())
    scenario["rename"] = {"time": "runtime", "val_accuracy": "acc"}
    scenario["default_metric"] = "val_accuracy"
    (folder / "scenario.json").write_text(json.dumps(scenario))
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    blackbox = load_blackbox("my-scenario", task="7593")
    assert blackbox.objective_names[:2] == ["runtime", "acc"]
    assert blackbox.default_metric == "acc" and blackbox.time_attr == "runtime"
    (folder / "scenario.json").write_text(json.dumps({**scenario, "cont_inputs": ["nope"]}))
    with pytest.raises(BlackboxError, match=r"inputs \['nope'\] are not in config_space.json"):
        YahpoBlackbox(folder, "7593")


def test_the_simulated_backend_replays_predicted_curves_with_a_non_decreasing_time():
    blackbox = load_blackbox("yahpo-lcbench", task="3945")
    backend = SimulatedBackend(blackbox, objectives=["val_accuracy"])
    config = blackbox.config_space.sample(np.random.default_rng(0))
    backend.start(Trial(0, config))
    events = []
    while batch := backend.poll():
        events += batch
    results = [e for e in events if e.kind == EventKind.RESULT]
    assert [e.metrics["epoch"] for e in results] == list(range(1, 53))
    assert events[-1].kind == EventKind.COMPLETED
    times = [e.time for e in results]
    assert times == sorted(times) and times[0] > 0
    assert set(results[0].metrics) == {"epoch", "val_accuracy", "elapsed_time"}


def spec(root: Path, seed: int) -> ExperimentSpec:
    return ExperimentSpec.from_dict({
        "name": "yahpo-asha", "metric": "val_accuracy", "mode": "max", "scheduler": "asha",
        "backend": "simulated",
        "backend_options": {"blackbox": "yahpo-lcbench", "task": "3945", "start_delay": 2.0},
        "stop": {"max_time": 1800}, "n_workers": 4, "seed": seed, "results_root": str(root),
    })


def test_a_surrogate_experiment_is_deterministic_for_a_seed(tmp_path):
    files = []
    for root, seed in (("a", 3), ("b", 3), ("c", 4)):
        tuner = build_tuner(spec(tmp_path / root, seed))
        tuner.run()
        files.append((tuner.store.path / "results.parquet").read_bytes())
        assert len(tuner.trials) > 20
    assert files[0] == files[1]
    assert files[0] != files[2]
