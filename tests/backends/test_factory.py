"""From a spec to a backend, its config space and the fidelity options of the scheduler."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from backends import factory
from backends.blackbox import blackbox_from_dataframe
from backends.factory import build_backend
from backends.simulated import SimulatedBackend
from flows.experiment import default_scheduler_options, resolve_config_space
from hpo_core.backend import ClockKind
from hpo_core.registry import build_scheduler
from hpo_core.spec import ExperimentSpec, SpecError
from hpo_core.store import ExperimentStore
from hpo_core.tuner import Tuner

TASK = "blood-transfusion-service-center"
METRIC = "Train/val_cross_entropy"


def spec(**fields) -> ExperimentSpec:
    base = {"name": "f", "metric": METRIC, "scheduler": "random", "stop": {"max_time": 300}}
    return ExperimentSpec.from_dict({**base, **fields})


def test_default_simulated_backend_replays_the_bundled_lcbench():
    backend = build_backend(spec(seed=5))
    assert isinstance(backend, SimulatedBackend) and backend.clock_kind is ClockKind.SIMULATED
    assert backend.blackbox.metadata["task"] == TASK and backend.seed == 5
    named = build_backend(spec(backend_options={"blackbox": "lcbench", "task": TASK,
                                                "max_fidelity": 20}))
    assert named.blackbox is backend.blackbox and named.max_fidelity == 20


def test_a_saved_blackbox_folder_by_path(tmp_path):
    frame = pd.DataFrame({"x": [1, 1, 2, 2], "epoch": [1, 2, 1, 2], "loss": [3.0, 2, 4, 1],
                          "time": [1.0, 2, 1, 2]})
    blackbox_from_dataframe(frame, ["x"], "epoch", ["loss"], "time").save(tmp_path / "bb")
    backend = build_backend(spec(metric="loss", backend_options={"path": str(tmp_path / "bb")}))
    assert backend.blackbox.objective_names == ["loss", "elapsed_time"]
    assert resolve_config_space(spec(metric="loss"), backend).names == ["x"]


@pytest.mark.parametrize("options, match", [
    ({"speed": 2}, r"spec.backend_options.speed: unknown option"),
    ({"blackbox": "nasbench"}, r"unknown name 'nasbench'.*lcbench"),
    ({"blackbox": "lcbench", "task": "segment"}, r"no task 'segment'"),
    ({"path": "/nonexistent/bb"}, r"no blackbox at /nonexistent/bb"),
    ({"path": "/x", "blackbox": "lcbench"}, r"either 'path' or 'blackbox'"),
    ({"blackbox": "yahpo-lcbench", "task": "1"}, r"no task '1'.*3945"),
    ({"start_delay": -1}, r"start_delay: must be a number of seconds >= 0"),
    ({"surrogate": "gp"}, r"surrogate: must be one of"),
])
def test_bad_backend_options_name_the_option(options, match):
    with pytest.raises(SpecError, match=match):
        build_backend(spec(backend_options=options))


def test_a_metric_the_blackbox_does_not_report_is_an_error():
    with pytest.raises(SpecError, match=r"spec.metric: 'val_loss' is not reported.*Train/loss"):
        build_backend(spec(metric="val_loss"))


def test_real_backends_are_imported_lazily(monkeypatch):
    monkeypatch.setitem(factory.REAL_BACKENDS, "sagemaker", ("backends._not_written_yet", "X"))
    with pytest.raises(SpecError, match=r"needs the module backends._not_written_yet"):
        build_backend(spec(backend="sagemaker", config_space={"x": 1}))


def test_options_of_a_real_backend_are_checked_against_its_signature(monkeypatch):
    monkeypatch.setitem(factory.REAL_BACKENDS, "local", ("backends.simulated", "SimulatedBackend"))
    with pytest.raises(SpecError, match=r"spec.backend_options.blackbox: required"):
        build_backend(spec(backend="local", config_space={"x": 1}))
    with pytest.raises(SpecError, match=r"spec.backend_options.gpus: unknown option"):
        build_backend(spec(backend="local", config_space={"x": 1},
                           backend_options={"blackbox": None, "gpus": 2}))


def test_config_space_comes_from_the_spec_or_the_blackbox():
    backend = build_backend(spec())
    assert resolve_config_space(spec(), backend) is backend.blackbox.config_space
    own = spec(config_space={"learning_rate": {"type": "loguniform", "lower": 1e-3, "upper": 0.1},
                             "batch_size": 64, "max_dropout": 0.0, "max_units": 128,
                             "momentum": 0.9, "weight_decay": 1e-4, "num_layers": 2})
    assert resolve_config_space(own, backend).names == ["learning_rate"]
    partial = spec(config_space={"learning_rate": 0.01})
    with pytest.raises(SpecError, match=r"spec.config_space: .*needs values for \['batch_size'"):
        resolve_config_space(partial, backend)


def test_fidelity_options_are_filled_for_multi_fidelity_methods():
    backend = build_backend(spec(backend_options={"max_fidelity": 27}))
    filled = default_scheduler_options(spec(scheduler="asha"), backend)
    assert filled == {"resource_attr": "epoch", "max_t": 27, "grace_period": 1}
    kept = default_scheduler_options(
        spec(scheduler="asha", scheduler_options={"max_t": 9, "reduction_factor": 2}), backend)
    assert kept == {"max_t": 9, "reduction_factor": 2, "resource_attr": "epoch", "grace_period": 1}
    assert default_scheduler_options(spec(scheduler="random"), backend) == {}


def test_a_spec_runs_end_to_end_on_the_simulated_backend(tmp_path):
    s = spec(scheduler="asha", stop={"max_time": 600}, results_root=str(tmp_path), seed=1)
    backend = build_backend(s)
    scheduler = build_scheduler(s.scheduler, resolve_config_space(s, backend), s.metric, s.mode,
                                s.seed, default_scheduler_options(s, backend))
    result = Tuner(scheduler, backend, s.stopping_criterion, n_workers=s.n_workers,
                   store=ExperimentStore(tmp_path, s.name)).run()
    assert result.best_value is not None
    table = backend.blackbox.objectives[..., backend.blackbox.objective_index(METRIC)]
    assert result.best_value >= float(table.min()) - 1e-6  # nothing better than the table
    assert backend.now() >= 600


@pytest.mark.parametrize("option, value", [
    ("reuse_workers", "false"), ("reuse_workers", 0), ("syne_tune_compat", "no")])
def test_a_flag_option_takes_nothing_but_true_or_false(tmp_path, option, value):
    script = tmp_path / "train.py"
    script.write_text("def objective(config):\n    return {'loss': config['x']}\n")
    entry = f"{script}:objective" if option == "reuse_workers" else str(script)
    with pytest.raises(SpecError, match=rf"^spec.backend_options.{option}: must be true or "
                                        rf"false, got {value!r}$"):
        build_backend(spec(backend="local", config_space={"x": 1},
                           backend_options={"entry_point": entry, option: value}))


@pytest.mark.parametrize("backend", ["local", "dask"])
@pytest.mark.parametrize("value", [0, -0.1, float("nan"), float("inf"), "1", True])
def test_a_poll_interval_must_be_a_positive_number_of_seconds(tmp_path, backend, value):
    """0 made the tuner's loop spin on empty polls (a core busy for the whole experiment)."""
    script = tmp_path / "train.py"
    script.write_text("def objective(config):\n    return {'loss': config['x']}\n")
    options = {"entry_point": f"{script}:objective", "poll_interval": value}
    if backend == "dask":
        options["address"] = "tcp://127.0.0.1:9"  # checked before it is reached
    with pytest.raises(ValueError, match=r"^backend_options.poll_interval: must be a number of "
                                         r"seconds > 0 \(0 would keep a core busy polling\), "
                                         rf"got {re.escape(repr(value))}$"):
        build_backend(spec(backend=backend, config_space={"x": 1}, backend_options=options))


@pytest.mark.parametrize("scheduler, options", [
    ("cbo", {}), ("bo", {"constraint_attr": "memory"}),
    ("asha", {"searcher": "gp", "searcher_options": {"constraint_attr": "memory"}})])
def test_a_constraint_the_blackbox_does_not_report_is_an_error(scheduler, options):
    # constrained BO would take every config as infeasible, and learn nothing
    with pytest.raises(SpecError, match=r"^spec.scheduler_options.constraint_attr: "
                                        r"'(constraint|memory)' is not reported by blackbox "
                                        r"'lcbench'"):
        build_backend(spec(scheduler=scheduler, scheduler_options=options))
