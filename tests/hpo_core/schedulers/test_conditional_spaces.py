"""Every registered method runs on a conditional config space (inactive hyperparameters absent,
every config valid)."""

from __future__ import annotations

import numpy as np
import pytest
from sched_sim import MAX_T, run_simulation

from hpo_core.registry import METHODS, build_scheduler, method_names
from hpo_core.space import ConfigSpace, choice, randint, uniform, when

SPACE = ConfigSpace({"opt": choice(["sgd", "adam"]), "momentum": when(uniform(0, 1), opt="sgd"),
                     "beta": when(uniform(0, 1), opt="adam"), "x": uniform(0, 1),
                     "layers": randint(1, 3), "width3": when(choice([8, 16]), layers=3)})
_rng = np.random.default_rng(0)
EARLIER = [{"configs": (configs := [SPACE.sample(_rng) for _ in range(10)]),
            "values": [float(v) for v in _rng.random(len(configs))], "mode": "min"}]


def options_for(name: str) -> dict:
    params = METHODS[name].option_names()
    candidates = {"max_t": MAX_T, "resource_attr": "epoch", "transfer_from": EARLIER,
                  "num_points": 3}
    return {k: v for k, v in candidates.items() if k in params}


@pytest.mark.parametrize("name", method_names())
def test_method_runs_on_a_conditional_space(name):
    metric = ["loss", "loss2"] if METHODS[name].multi_objective else "loss"
    scheduler = build_scheduler(name, SPACE, metric, "min", 0, options_for(name))
    tuner, result, _ = run_simulation(scheduler, max_results=45)
    assert result.reason.startswith("max_results"), result.reason
    for trial in tuner.trials.values():
        SPACE.validate(trial.config)
    if name != "grid":  # the grid enumerates sgd's branch first
        assert {t.config["opt"] for t in tuner.trials.values()} == {"sgd", "adam"}

