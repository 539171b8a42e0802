"""The blackbox format, the LCBench importer, the bundled benchmark, the surrogate, from_dataframe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backends.blackbox import (
    Blackbox,
    BlackboxError,
    NearestNeighbourSurrogate,
    available_blackboxes,
    blackbox_from_dataframe,
    load_blackbox,
)
from backends.blackbox.lcbench import import_lcbench, main
from backends.blackbox.repository import BUNDLED_ROOT
from hpo_core.space import Categorical, Float, Integer

TASK = "blood-transfusion-service-center"
SHARED_LCBENCH = Path("/work/shared/data/lcbench") / TASK


def write_lcbench_task(folder: Path, num_configs: int = 4, num_epochs: int = 3) -> Path:
    """A tiny task folder in LCBenchLite's layout (epoch 0 = evaluation before training)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    configs = pd.DataFrame({
        "batch_size": rng.integers(16, 513, num_configs),
        "learning_rate": rng.uniform(1e-4, 1e-1, num_configs),
        "momentum": rng.uniform(0.1, 0.99, num_configs),
        "weight_decay": rng.uniform(1e-5, 1e-1, num_configs),
        "num_layers": np.arange(num_configs) % 4 + 1,
        "max_units": rng.integers(64, 1025, num_configs),
        "max_dropout": rng.uniform(0, 1, num_configs),
        "optimizer": ["sgd"] * num_configs,
        "cosine_annealing_eta_min": [1e-8] * num_configs,
    }, index=pd.Index(range(num_configs), name="trial"))
    configs.to_parquet(folder / "config.parquet.gzip", compression="gzip")
    index = pd.MultiIndex.from_product([range(num_configs), range(num_epochs + 1)],
                                       names=["trial", "epoch"])
    trial = index.get_level_values("trial").to_numpy()
    epoch = index.get_level_values("epoch").to_numpy()
    metrics = pd.DataFrame({
        "Train/loss": 1.0 / (1 + epoch) + trial,
        "Train/val_accuracy": 50.0 + epoch + trial,
        "Train/val_balanced_accuracy": 0.5 + 0.01 * epoch,
        "Train/val_cross_entropy": 0.7 - 0.01 * epoch - 0.1 * trial,
        "Train/test_result": 40.0 + epoch,
        "Train/test_balanced_accuracy": 0.4 + 0.01 * epoch,
        "Train/lr": 0.1,
        "time": epoch * (trial + 1.0) + 0.001,
    }, index=index)
    metrics.to_parquet(folder / "metrics.parquet.gzip", compression="gzip")
    results = pd.DataFrame({"OpenML_task_id": [7] * num_configs, "instances": 100},
                           index=configs.index)
    results.to_parquet(folder / "results.parquet.gzip", compression="gzip")
    return folder


# -- LCBench importer ------------------------------------------------------------------------------
def test_import_lcbench_drops_epoch_zero_and_keeps_the_curves(tmp_path):
    task = write_lcbench_task(tmp_path / "tiny-task")
    bb = import_lcbench(task)
    assert bb.fidelity_name == "epoch"
    assert bb.fidelity_values.tolist() == [1, 2, 3]
    assert bb.objectives.shape == (4, 1, 3, 7)
    assert bb.time_attr == "elapsed_time" and "time" not in bb.objective_names
    assert bb.default_metric == "Train/val_cross_entropy"
    assert bb.modes["Train/val_accuracy"] == "max" and bb.modes["Train/loss"] == "min"
    # trial 2 at epoch 3: time = 3 * 3 + 0.001, accuracy 50 + 3 + 2
    curve = bb.curve(2)
    assert curve[2, bb.objective_index("elapsed_time")] == pytest.approx(9.001)
    assert curve[2, bb.objective_index("Train/val_accuracy")] == pytest.approx(55.0)
    assert bb.objectives.dtype == np.float32
    assert bb.metadata["task"] == "tiny-task" and bb.metadata["openml_task_id"] == 7
    assert bb.metadata["fixed_hyperparameters"] == {"optimizer": "sgd",
                                                    "cosine_annealing_eta_min": 1e-8}


def test_import_lcbench_uses_the_published_domains(tmp_path):
    bb = import_lcbench(write_lcbench_task(tmp_path / "t"))
    space = bb.config_space
    assert sorted(space.names) == sorted(["batch_size", "learning_rate", "momentum",
                                          "weight_decay", "num_layers", "max_units",
                                          "max_dropout"])
    assert isinstance(space.domains["learning_rate"], Float) and space.domains["learning_rate"].log
    assert isinstance(space.domains["batch_size"], Integer) and space.domains["batch_size"].log
    assert isinstance(space.domains["num_layers"], Integer) and not space.domains["num_layers"].log
    assert (space.domains["max_units"].lower, space.domains["max_units"].upper) == (64, 1024)
    assert "optimizer" not in space  # constant columns are metadata, not hyperparameters


def test_import_lcbench_rejects_values_outside_the_domain(tmp_path):
    task = write_lcbench_task(tmp_path / "t")
    configs = pd.read_parquet(task / "config.parquet.gzip")
    configs.loc[0, "learning_rate"] = 5.0
    configs.to_parquet(task / "config.parquet.gzip", compression="gzip")
    with pytest.raises(BlackboxError, match="learning_rate"):
        import_lcbench(task)


def test_import_lcbench_needs_a_task_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an LCBench task folder"):
        import_lcbench(tmp_path)


def test_lcbench_command_imports_one_task_or_every_task(tmp_path, capsys):
    write_lcbench_task(tmp_path / "src" / "task-a")
    write_lcbench_task(tmp_path / "src" / "task-b", num_configs=3)
    main([str(tmp_path / "src" / "task-a"), str(tmp_path / "one")])
    assert (tmp_path / "one" / "task-a" / "meta.json").exists()
    main([str(tmp_path / "src"), str(tmp_path / "all" / "lcbench")])
    assert Blackbox.load(tmp_path / "all" / "lcbench" / "task-b").num_configs == 3
    assert "task-b" in capsys.readouterr().out
    # an imported root is found by name
    assert load_blackbox("lcbench", "task-a", root=tmp_path / "all").num_configs == 4
    assert available_blackboxes(tmp_path / "all")["lcbench"] == sorted(["task-a", "task-b", TASK])


@pytest.mark.skipif(not SHARED_LCBENCH.exists(), reason="LCBench source files not present")
def test_import_of_the_real_task_matches_the_bundled_blackbox():
    imported = import_lcbench(SHARED_LCBENCH)
    bundled = load_blackbox("lcbench", TASK)
    np.testing.assert_array_equal(imported.objectives, bundled.objectives)
    assert imported.config_space == bundled.config_space


# -- save / load -----------------------------------------------------------------------------------
def test_save_and_load_round_trip_with_seeds_and_gaps(tmp_path):
    frame = curves_frame(seeds=2)
    frame = frame[~((frame["lr"] == 0.1) & (frame["epoch"] == 4))]  # one curve stops early
    bb = blackbox_from_dataframe(frame, ["lr", "layers", "act"], "epoch", ["loss", "acc"],
                                 "time", seed_column="seed", modes={"acc": "max"})
    loaded = Blackbox.load(bb.save(tmp_path / "bb"))
    np.testing.assert_array_equal(loaded.objectives, bb.objectives)
    assert np.isnan(loaded.objectives).any()
    assert loaded.config_space == bb.config_space
    assert loaded.modes == bb.modes and loaded.num_seeds == 2
    assert loaded.configs.equals(bb.configs)
    with pytest.raises(FileNotFoundError, match="missing meta.json"):
        Blackbox.load(tmp_path / "nothing")


# -- the bundled benchmark -------------------------------------------------------------------------
def test_bundled_lcbench_loads_by_name():
    bb = load_blackbox("lcbench", task=TASK)
    assert bb.num_configs == 2000 and bb.num_seeds == 1
    assert bb.fidelity_values.tolist() == list(range(1, 52))
    assert bb.default_metric in bb.objective_names and bb.time_attr == "elapsed_time"
    times = bb.objectives[:, 0, :, bb.objective_index("elapsed_time")]
    assert (np.diff(times, axis=1) >= 0).all()  # cumulative
    accuracy = bb.values("Train/val_accuracy")
    assert bb.best_value("Train/val_accuracy") == pytest.approx(float(accuracy.max()))
    assert bb.best_value() == pytest.approx(float(bb.values(bb.default_metric).min()))
    assert load_blackbox("lcbench", task=TASK) is bb  # cached


def test_bundled_files_carry_source_and_license():
    folder = BUNDLED_ROOT / "lcbench" / TASK
    readme = (folder / "README.md").read_text()
    assert "42ea3c2f1138920d62a089fefd793490a801233e" in readme and "Zimmer" in readme
    assert "Apache License" in (folder / "LICENSE").read_text()


def test_unknown_blackbox_or_task_names_what_exists():
    with pytest.raises(BlackboxError, match=f"unknown name 'nope'.*lcbench: .*{TASK}"):
        load_blackbox("nope")
    with pytest.raises(BlackboxError, match=f"no task 'segment'.*{TASK}"):
        load_blackbox("lcbench", task="segment")


# -- nearest-neighbour surrogate -------------------------------------------------------------------
def test_surrogate_hits_tabulated_configs_exactly():
    bb = load_blackbox("lcbench", task=TASK)
    surrogate = NearestNeighbourSurrogate(bb)
    for row in (0, 17, 1999):
        assert surrogate.neighbours(bb.config(row)) == (row,)
        np.testing.assert_array_equal(surrogate.curve(bb.config(row)), bb.curve(row))


def test_surrogate_gives_an_off_grid_config_its_nearest_curve():
    bb = load_blackbox("lcbench", task=TASK)
    surrogate = NearestNeighbourSurrogate(bb)
    config = bb.config(42)
    config["learning_rate"] *= 1.001
    config["max_dropout"] = min(1.0, config["max_dropout"] + 1e-4)
    assert bb.index_of(config) is None
    assert surrogate.neighbours(config) == (42,)
    assert surrogate.neighbours(config) is surrogate.neighbours(config)  # cached


def test_surrogate_scan_finds_the_kd_trees_neighbour():
    """The small-table scan (one matrix-vector product) and the KD-tree agree on every
    off-grid config; a tie (two tabulated configs equally near) is left to the tree."""
    bb = load_blackbox("lcbench", task=TASK)
    surrogate = NearestNeighbourSurrogate(bb)
    assert surrogate._scan is not None  # 2000 x 7 values: scanned
    rng = np.random.default_rng(3)
    configs = [bb.config_space.sample(rng) for _ in range(2000)]
    encoded = bb.config_space.encode_many(configs)
    _, expected = surrogate._tree.query(encoded, k=1)
    assert [surrogate.neighbours(c) for c in configs] == [(int(i),) for i in expected]
    tied = (surrogate._tree.data[0] + surrogate._tree.data[1]) / 2  # equidistant from 0 and 1
    assert surrogate._nearest(tied) == (int(surrogate._tree.query(tied, k=1)[1]),)


def test_surrogate_with_k_neighbours_averages_their_curves():
    bb = blackbox_from_dataframe(curves_frame(), ["lr", "layers", "act"], "epoch",
                                 ["loss"], "time")
    surrogate = NearestNeighbourSurrogate(bb, k=2)
    off_grid = {"lr": 0.02, "layers": 2, "act": "relu"}
    rows = surrogate.neighbours(off_grid)
    assert len(rows) == 2
    np.testing.assert_allclose(surrogate.curve(off_grid),
                               bb.objectives[list(rows), 0].mean(axis=0), rtol=1e-6)
    assert surrogate.neighbours(bb.config(1)) == (1,)  # exact hits stay exact
    with pytest.raises(BlackboxError, match=r"needs the hyperparameters \['act'\]"):
        surrogate.neighbours({"lr": 0.02, "layers": 2})


# -- blackbox_from_dataframe -----------------------------------------------------------------------
def curves_frame(seeds: int = 1) -> pd.DataFrame:
    rows = []
    configs = [(0.001, 1, "relu"), (0.01, 2, "tanh"), (0.1, 4, "relu")]
    for c, (lr, layers, act) in enumerate(configs):
        for seed in range(seeds):
            for epoch in range(1, 5):
                rows.append({"lr": lr, "layers": layers, "act": act, "seed": seed,
                             "epoch": epoch, "loss": 1.0 / epoch + c + seed,
                             "acc": 0.1 * epoch, "time": 2.0 * epoch * (c + 1), "note": "x"})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # any row order


def test_from_dataframe_builds_a_dense_table_and_infers_the_space():
    bb = blackbox_from_dataframe(curves_frame(seeds=2), ["lr", "layers", "act"], "epoch",
                                 ["loss", "acc"], "time", seed_column="seed",
                                 modes={"acc": "max"})
    assert bb.objectives.shape == (3, 2, 4, 3)
    assert bb.objective_names == ["loss", "acc", "elapsed_time"]  # 'time' is the tuner's
    assert bb.time_attr == "elapsed_time" and bb.default_metric == "loss"
    row = bb.index_of({"lr": 0.01, "layers": 2, "act": "tanh"})
    # config 1, seed 1, epoch 3: loss 1/3 + 1 + 1, acc 0.3, time 2 * 3 * 2
    assert bb.curve(row, seed=1)[2].tolist() == pytest.approx([1 / 3 + 2, 0.3, 12.0])
    space = bb.config_space
    assert isinstance(space.domains["lr"], Float) and space.domains["lr"].log
    assert isinstance(space.domains["layers"], Integer)
    assert isinstance(space.domains["act"], Categorical)
    assert bb.best_value("acc") == pytest.approx(0.4)


def test_from_dataframe_sums_per_step_times():
    frame = curves_frame()
    frame["step_time"] = 1.5
    bb = blackbox_from_dataframe(frame, ["lr", "layers", "act"], "epoch", ["loss"],
                                 "step_time", time_is_cumulative=False)
    assert bb.time_attr == "step_time"
    assert bb.curve(0)[:, 1].tolist() == [1.5, 3.0, 4.5, 6.0]


def test_from_dataframe_keeps_a_given_space_and_checks_values_against_it():
    space = {"lr": {"type": "loguniform", "lower": 1e-4, "upper": 1.0},
             "layers": {"type": "randint", "lower": 1, "upper": 8},
             "act": {"type": "choice", "categories": ["relu", "tanh", "gelu"]}}
    bb = blackbox_from_dataframe(curves_frame(), ["lr", "layers", "act"], "epoch", ["loss"],
                                 "time", config_space=space)
    assert bb.config_space.domains["layers"].upper == 8
    space["layers"] = {"type": "randint", "lower": 1, "upper": 3}
    with pytest.raises(BlackboxError, match=r"config_space.layers: column 'layers' holds 4"):
        blackbox_from_dataframe(curves_frame(), ["lr", "layers", "act"], "epoch", ["loss"],
                                "time", config_space=space)


@pytest.mark.parametrize("change, kwargs, match", [
    (None, {"objective_columns": ["loss", "nope"]}, r"objective_columns: column 'nope'"),
    (None, {"fidelity_column": "step"}, r"fidelity_column: column 'step'"),
    (None, {"config_columns": ["lr", "epoch"]}, r"more than one role"),
    ("duplicate", {}, r"more than one row for the same config"),
    ("decreasing", {}, r"time_column: 'time' decreases"),
    ("text", {}, r"column 'loss' is not numeric"),
    ("missing", {}, r"lr: has missing values"),
    (None, {"seed_column": "rep"}, r"seed_column: column 'rep'"),
])
def test_from_dataframe_errors_name_the_column(change, kwargs, match):
    frame = curves_frame().reset_index(drop=True)
    if change == "duplicate":
        frame = pd.concat([frame, frame.iloc[:1]])
    elif change == "decreasing":
        frame.loc[frame["epoch"] == 4, "time"] = 0.5
    elif change == "text":
        frame["loss"] = frame["loss"].astype(str) + "!"
    elif change == "missing":
        frame.loc[3, "lr"] = np.nan
    args = {"config_columns": ["lr", "layers", "act"], "fidelity_column": "epoch",
            "objective_columns": ["loss"], "time_column": "time", **kwargs}
    with pytest.raises(BlackboxError, match=match):
        blackbox_from_dataframe(frame, **args)


def test_blackbox_rejects_reserved_objective_names():
    with pytest.raises(BlackboxError, match="tuner's own result columns"):
        Blackbox(pd.DataFrame({"x": [1, 2]}), np.zeros((2, 1, 1, 2)),
                 {"x": {"type": "randint", "lower": 1, "upper": 2}}, "epoch", [1],
                 ["status", "elapsed"], "elapsed")
