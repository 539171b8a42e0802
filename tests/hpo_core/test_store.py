"""The experiment store and its analysis."""

from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd
import pytest

from hpo_core.store import ExperimentStore, load_experiment, pareto_mask, validate_name
from hpo_core.store.config_columns import ConfigColumns
from hpo_core.trial import Trial, TrialStatus


def _store_with_rows(tmp_path, mode="min"):
    store = ExperimentStore(tmp_path, "exp-1")
    store.create()
    store.write_spec({"name": "exp-1", "metric": "loss", "mode": mode})
    trials = {
        0: Trial(0, {"lr": 0.1, "act": "relu"}, TrialStatus.COMPLETED),
        1: Trial(1, {"lr": 0.01, "act": "tanh"}, TrialStatus.STOPPED),
    }
    rows = [
        (0, 1.0, 1, 0.9), (1, 1.5, 1, 0.8), (0, 2.0, 2, 0.7), (1, 2.5, 2, 0.75), (0, 3.0, 3, 0.5),
    ]
    for trial_id, time, epoch, loss in rows:
        store.record({"trial_id": trial_id, "time": time, "status": "running",
                      "decision": "continue", "epoch": epoch, "loss": loss})
    state = {"trials": {str(k): t.to_dict() for k, t in trials.items()}, "time": 3.0}
    store.save(state, trials)
    return store


def test_the_folder_holds_spec_results_and_state(tmp_path):
    store = _store_with_rows(tmp_path)
    assert {p.name for p in store.path.iterdir()} >= {"spec.json", "results.parquet", "state.json"}
    assert not [p for p in store.path.iterdir() if p.name.startswith(".")], "no temp files left"
    experiment = load_experiment(store.path)
    frame = experiment.results
    assert len(frame) == 5
    assert {"trial_id", "time", "status", "decision", "epoch", "loss", "config_lr",
            "config_act"} <= set(frame.columns)
    assert frame.loc[frame.trial_id == 1, "config_act"].unique().tolist() == ["tanh"]


def _from_dict(configs):
    """The config frame as results_frame built it before ConfigColumns (one dict per trial)."""
    rows = {tid: {f"config_{k}": json.dumps(v) if isinstance(v, list) else v
                  for k, v in c.items()} for tid, c in configs.items()}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "trial_id"
    return frame


@pytest.mark.parametrize("conditional", [False, True])
def test_config_columns_kept_across_snapshots_match_a_fresh_build(conditional):
    """The snapshot writer's config columns: kept from one call to the next as trials are
    added and configs replaced (PBT), always the frame a fresh build gives, dtypes included;
    configs with other names (a conditional space) take the one-dict-per-trial way."""
    rng = np.random.default_rng(0)
    columns, configs = ConfigColumns(), {}
    for step in range(6):
        for tid in range(len(configs), len(configs) + 5):
            config = {"lr": float(rng.random()), "layers": int(rng.integers(1, 4)),
                      "act": str(rng.choice(["relu", "tanh"])), "widths": [1, 2]}
            if conditional and tid % 3 == 0:
                del config["act"]
            configs[tid] = config
        configs[step] = {**configs[step], "lr": 0.5}  # replaced, as PBT does
        pd.testing.assert_frame_equal(columns.frame(configs).sort_index(),
                                      _from_dict(configs).sort_index())
    assert columns._uniform is not conditional
    pd.testing.assert_frame_equal(columns.frame({1: configs[1]}), _from_dict({1: configs[1]}))


def test_best_config_and_trajectory(tmp_path):
    experiment = load_experiment(_store_with_rows(tmp_path).path)
    assert experiment.best_config() == {"lr": 0.1, "act": "relu"}
    assert experiment.best_value() == 0.5
    assert experiment.best_trial_id() == 0
    trajectory = experiment.trajectory()
    assert trajectory["best"].tolist() == [0.9, 0.8, 0.7, 0.5]
    assert trajectory["time"].tolist() == [1.0, 1.5, 2.0, 3.0]
    assert trajectory["trial_id"].tolist() == [0, 1, 0, 0]
    trials = experiment.trials()
    assert trials.set_index("trial_id")["status"].to_dict() == {0: "completed", 1: "stopped"}
    assert trials.set_index("trial_id")["num_reports"].to_dict() == {0: 3, 1: 2}


def test_trajectory_for_mode_max(tmp_path):
    experiment = load_experiment(_store_with_rows(tmp_path, mode="max").path)
    assert experiment.best_value() == 0.9
    assert experiment.trajectory()["best"].tolist() == [0.9]


def test_plot_is_a_png(tmp_path):
    experiment = load_experiment(_store_with_rows(tmp_path).path)
    path = experiment.plot_trajectory()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_load_state_restores_the_rows(tmp_path):
    _store_with_rows(tmp_path)
    again = ExperimentStore(tmp_path, "exp-1")
    state = again.load_state()
    assert state["time"] == 3.0
    assert again.num_rows == 5
    assert again.rows()[0] == {"trial_id": 0, "time": 1.0, "status": "running",
                               "decision": "continue", "epoch": 1, "loss": 0.9}


def test_state_json_is_written_atomically(tmp_path):
    store = _store_with_rows(tmp_path)
    json.loads((store.path / "state.json").read_text())


@pytest.mark.parametrize("bad", ["", "../up", "a/b", ".hidden", "x" * 129, "sp ace", "a..b"])
def test_names_used_in_paths_are_validated(bad, tmp_path):
    with pytest.raises(ValueError, match="not a valid name"):
        ExperimentStore(tmp_path, bad)


def test_valid_names_pass():
    assert validate_name("lcbench-asha_2026.11") == "lcbench-asha_2026.11"


def test_pareto_front(tmp_path):
    values = np.array([[1.0, 5.0], [2.0, 3.0], [3.0, 4.0], [4.0, 1.0], [2.0, 3.0]])
    assert pareto_mask(values).tolist() == [True, True, False, True, True]
    store = ExperimentStore(tmp_path, "mo")
    store.write_spec({"metric": ["err", "latency"], "mode": ["min", "min"]})
    trials = {i: Trial(i, {"x": i}, TrialStatus.COMPLETED) for i in range(4)}
    for i, (err, lat) in enumerate(values[:4]):
        store.record({"trial_id": i, "time": float(i), "status": "completed",
                      "decision": "continue", "err": err, "latency": lat})
    store.save({"trials": {}}, trials)
    front = load_experiment(store.path).pareto_front()
    assert front["trial_id"].tolist() == [0, 1, 3]


@pytest.mark.parametrize("background", [True, False])
def test_snapshots_are_written_by_the_writer_thread_or_the_callers(tmp_path, monkeypatch,
                                                                     background):
    writers = []
    write = ExperimentStore._write_snapshot

    def spy(self, job, writer):
        writers.append(threading.current_thread())
        write(self, job, writer)
    monkeypatch.setattr(ExperimentStore, "_write_snapshot", spy)
    store = ExperimentStore(tmp_path, "writer")
    store.begin(1, background=background)
    trials = {0: Trial(0, {"x": 0.1}, TrialStatus.RUNNING)}
    store.snapshot({"trials": {"0": trials[0].to_dict()}, "time": 0.0}, trials)
    if not background:  # written before snapshot() returns
        assert json.loads((store.path / "state.json").read_text())["time"] == 0.0
    store.close()
    assert len(writers) == 1
    assert (writers[0] is threading.current_thread()) is not background


def test_every_parquet_read_of_the_product_is_without_threads():
    """After a threaded read, pyarrow can abort the interpreter's exit ("terminate called
    without an active exception", apache/arrow#34314): a `tunesmith run` that had printed its
    summary exited -6 in CI. A write-read-exit script aborted 7 times in 60 on a busy machine,
    never in 60 with `use_threads=False`; every read of ours passes it."""
    import ast
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    reads = []
    for package in ("hpo_core", "backends", "flows", "tunesmith"):
        for path in (repo / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                        node.func.attr in ("read_parquet", "read_table"):
                    threads = [k.value for k in node.keywords if k.arg == "use_threads"]
                    reads.append((f"{path.relative_to(repo)}:{node.lineno}",
                                  len(threads) == 1 and isinstance(threads[0], ast.Constant)
                                  and threads[0].value is False))
    assert len(reads) >= 7
    assert [where for where, ok in reads if not ok] == []
