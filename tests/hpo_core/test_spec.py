"""ExperimentSpec: bad input is an error that names the field."""

from __future__ import annotations

import json

import pytest

from hpo_core.spec import ExperimentSpec, SpecError

GOOD = {
    "name": "spec-test",
    "metric": "loss",
    "config_space": {"lr": {"type": "loguniform", "lower": 1e-4, "upper": 1e-1},
                     "act": {"type": "choice", "categories": ["relu", "tanh"]}},
    "scheduler": "asha",
    "scheduler_options": {"max_t": 9, "grace_period": 1},
    "backend": "local",
    "stop": {"max_trials_started": 10},
}


def spec(**changes):
    data = {**GOOD, **changes}
    return ExperimentSpec.from_dict({k: v for k, v in data.items() if v is not ...})


def test_a_good_spec_round_trips(tmp_path):
    s = spec()
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(s.to_dict()))
    assert ExperimentSpec.from_file(path) == s
    yaml_path = tmp_path / "spec.yaml"
    yaml_path.write_text("name: y\nmetric: [a, b]\nmode: [min, max]\nbackend: simulated\n"
                         "scheduler: moasha\nscheduler_options: {max_t: 5}\nstop: {max_time: 60}\n")
    loaded = ExperimentSpec.coerce(str(yaml_path))
    assert loaded.metric == ["a", "b"] and loaded.mode == ["min", "max"]


@pytest.mark.parametrize("changes, field", [
    ({"config_space": {"lr": {"type": "gaussian", "lower": 0, "upper": 1}}},
     "spec.config_space.lr: unknown domain type 'gaussian'"),
    ({"config_space": {"act": {"type": "choice", "categories": []}}},
     "spec.config_space.act: 'categories' is empty"),
    ({"config_space": {"lr": {"type": "uniform", "lower": 1.0, "upper": 0.1}}},
     "spec.config_space.lr: lower bound 1.0 is above the upper bound 0.1"),
    ({"metric": ...}, "spec.metric: missing"),
    ({"metric": ""}, "spec.metric: missing"),
    ({"metric": ["a", 3]}, "spec.metric"),
    ({"mode": "maximize"}, "spec.mode"),
    ({"mode": ["min", "max"]}, "spec.mode"),
    # a second objective a single-objective method would ignore; a multi-objective method
    # with one
    ({"metric": ["loss", "latency"], "mode": ["min", "min"]},
     "spec.metric: 'asha' optimizes one metric, got 2 .*the multi-objective methods are "),
    ({"scheduler": "moasha"}, "spec.metric: 'moasha' optimizes several metrics"),
    ({"metric": ["loss", "loss"], "mode": ["min", "min"], "scheduler": "moasha"},
     "spec.metric: 'loss' is given more than once"),
    # a transfer method takes the metrics of the method it runs
    ({"metric": ["loss", "latency"], "mode": ["min", "min"], "scheduler": "bounding_box",
      "scheduler_options": {"transfer_from": ["earlier"], "scheduler": "bo"}},
     "spec.metric: 'bo' optimizes one metric, got 2 "),
    ({"metric": ["loss", "latency"], "mode": ["min", "min"], "scheduler": "bounding_box",
      "scheduler_options": {"transfer_from": ["earlier"]}},
     "spec.metric: 'random' optimizes one metric, got 2 "),
    ({"scheduler": "bounding_box",
      "scheduler_options": {"transfer_from": ["earlier"], "scheduler": "ehvi"}},
     "spec.metric: 'ehvi' optimizes several metrics"),
    ({"metric": ["loss", "latency"], "mode": ["min", "min"], "scheduler": "zero_shot",
      "scheduler_options": {"transfer_from": ["earlier"]}},
     "spec.metric: 'zero_shot' optimizes one metric, got 2 "),
    ({"name": ...}, "spec.name: missing"),
    ({"name": "../up"}, "spec.name"),
    ({"scheduler": "nope"}, "spec.scheduler: unknown method 'nope'"),
    ({"scheduler_options": {"max_t": 9, "grace": 2}}, "spec.scheduler_options.grace: unknown option"),
    ({"scheduler_options": {"seed": 2}}, "spec.scheduler_options.seed: set at the top"),
    ({"scheduler_options": [1]}, "spec.scheduler_options: must be a mapping"),
    ({"backend": "cloud"}, "spec.backend: unknown backend 'cloud'"),
    ({"backend": "lokal", "config_space": {}}, "spec.backend: unknown backend 'lokal'"),
    ({"stop": {"max_tim": 5}}, "spec.stop: unknown keys \\['max_tim'\\]"),
    ({"stop": {"max_time": -1}}, "spec.stop.max_time: must be positive"),
    ({"stop": {"max_time": float("nan")}}, "spec.stop.max_time: must be a finite number"),
    ({"stop": {"metric_threshold": float("nan")}}, "spec.stop.metric_threshold: must be a fin"),
    ({"stop": {"max_trials_started": float("inf")}}, "spec.stop.max_trials_started: must be a"),
    ({"name": "exp1\n"}, "spec.name"),
    ({"seed": -1}, "spec.seed: must be a non-negative integer"),
    ({"results_root": 5}, "spec.results_root: must be a folder path"),
    ({"results_root": __file__}, "spec.results_root: .* is not a folder"),
    ({"tracking_uri": 5}, "spec.tracking_uri: must be an MLflow tracking URI"),
    ({"n_workers": 0}, "spec.n_workers"),
    ({"seed": "0"}, "spec.seed"),
    ({"max_failures": 0}, "spec.max_failures"),
    ({"config_space": {}}, "spec.config_space: required unless"),
    ({"colour": "red"}, "spec: unknown fields \\['colour'\\]"),
])
def test_bad_input_names_the_field(changes, field):
    with pytest.raises(SpecError, match=field):
        spec(**changes)


def test_a_transfer_method_takes_as_many_metrics_as_the_method_it_runs():
    spec(metric=["loss", "latency"], mode=["min", "min"], scheduler="bounding_box",
         scheduler_options={"transfer_from": ["earlier"], "scheduler": "ehvi"})
    spec(scheduler="bounding_box", scheduler_options={"transfer_from": ["earlier"],
                                                      "scheduler": "bo"})


def test_unbounded_stop_is_rejected_for_methods_that_never_end():
    with pytest.raises(SpecError, match="spec.stop: set at least one limit"):
        spec(scheduler="random", scheduler_options={}, stop={})


def test_from_dict_needs_a_mapping():
    with pytest.raises(SpecError, match="spec: must be a mapping"):
        ExperimentSpec.from_dict([1])  # type: ignore[arg-type]
