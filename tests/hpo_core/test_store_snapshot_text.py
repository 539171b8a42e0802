"""state.json's text: what `json.dumps` gives, though ended trials are encoded only once."""

from __future__ import annotations

import json

import numpy as np

from hpo_core.store import ExperimentStore
from hpo_core.store.files import json_default
from hpo_core.trial import Trial, TrialStatus


def _state(trials: dict[int, Trial]) -> dict:
    return {"version": 1, "trials": {str(t): trial.to_dict() for t, trial in trials.items()},
            "scheduler": {"x": np.float64(0.5), "ü": [1, float("nan")]}, "end_reason": None}


def test_the_state_text_is_json_dumps_while_trials_end_and_change(tmp_path):
    store = ExperimentStore(tmp_path, "e")
    trials = {i: Trial(i, {"lr": 0.1 * i, "act": "relu"}, TrialStatus.RUNNING) for i in range(4)}
    for step in range(4):
        trials[step].status = TrialStatus.STOPPED if step % 2 else TrialStatus.COMPLETED
        trials[step].end_time = float(step)
        for running in list(trials.values())[step + 1:]:
            running.num_results += 1
            running.last_result = {"loss": 1.0 / running.num_results, "epoch": running.num_results}
        state = _state(trials)
        expected = json.dumps({**state, "store": {"segment": step, "num_rows": 3 * step}},
                              default=json_default, separators=(",", ":"))
        assert store._state_text(state, 3 * step, step) == expected
    assert sorted(store._ended_trials) == ["0", "1", "2", "3"]
    state = {"version": 1, "trials": ["not", "a", "mapping"]}
    assert store._state_text(state, 0, 0) == json.dumps(
        {**state, "store": {"segment": 0, "num_rows": 0}}, separators=(",", ":"))
