"""MO-ASHA on the simulated backend, pinned: for a fixed seed the trial sequence (every
started trial's config, every report's decision) is the one recorded before the hot path was
optimized (issue 17). A speed-up that changes a single decision or config fails here."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

import pytest

from backends.blackbox import load_blackbox
from backends.simulated import SimulatedBackend
from hpo_core.registry import build_scheduler
from hpo_core.stopping import StoppingCriterion
from hpo_core.store import ExperimentStore
from hpo_core.trial import Decision, Trial, TrialResult
from hpo_core.tuner import Tuner, TunerCallback

TASK = "blood-transfusion-service-center"
METRICS = ["Train/val_cross_entropy", "elapsed_time"]


class _Record(TunerCallback):
    def __init__(self) -> None:
        self.sequence: list[list[Any]] = []

    def on_trial_start(self, trial: Trial) -> None:
        self.sequence.append(["start", trial.trial_id, sorted(trial.config.items())])

    def on_trial_result(self, trial: Trial, result: TrialResult, decision: Decision) -> None:
        self.sequence.append(["result", trial.trial_id, result.metrics["epoch"],
                              decision.value])


def _run(tmp_path, rank_by: str, budget: float) -> list[list[Any]]:
    blackbox = load_blackbox("lcbench", TASK)
    fidelities = blackbox.fidelity_values
    options = {"resource_attr": blackbox.fidelity_name, "max_t": int(fidelities[-1]),
               "grace_period": int(fidelities[0]), "reduction_factor": 3, "rank_by": rank_by}
    scheduler = build_scheduler("moasha", blackbox.config_space, METRICS, ["min", "min"], 0,
                                options)
    record = _Record()
    Tuner(scheduler, SimulatedBackend(blackbox, seed=0, objectives=METRICS),
          StoppingCriterion(max_time=budget), n_workers=4, callbacks=[record],
          store=ExperimentStore(tmp_path, f"moasha-{rank_by}")).run()
    return record.sequence


@pytest.mark.parametrize(("rank_by", "budget", "expected"), [
    ("epsnet", 900.0, {"trials": 1081, "continue": 3119, "stop": 1078, "sha256":
                       "d15ef50bc21c4df6e09c201618655cbe39665057582e03bc9b5082c71aba25c7"}),
    ("nsga2", 300.0, {"trials": 320, "continue": 1067, "stop": 316, "sha256":
                      "52e22c32e158fa1d06a62b3f8d8943f6b05a7ad6eec3530e69ed9e323023df8f"}),
])
def test_moasha_trial_sequence_is_pinned(tmp_path, rank_by, budget, expected):
    sequence = _run(tmp_path, rank_by, budget)
    decisions = Counter(step[3] for step in sequence if step[0] == "result")
    digest = hashlib.sha256(json.dumps(sequence).encode()).hexdigest()
    got = {"trials": sum(step[0] == "start" for step in sequence),
           "continue": decisions["continue"], "stop": decisions["stop"], "sha256": digest}
    assert got == expected
