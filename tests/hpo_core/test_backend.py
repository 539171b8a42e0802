"""The TrialBackend contract's defaults and the trial context the store hands to a backend."""

from __future__ import annotations

import os

import pytest

from hpo_core.backend import ClockKind, TrialBackend, TrialContext
from hpo_core.registry import build_scheduler
from hpo_core.stopping import StoppingCriterion
from hpo_core.store import ExperimentStore
from hpo_core.trial import EventKind, Trial, TrialEvent
from hpo_core.tuner import Tuner


class OneReportBackend(TrialBackend):
    """Each trial reports once and completes; declares nothing beyond the calls."""

    def __init__(self) -> None:
        self.t = 0.0
        self.queue: list[Trial] = []
        self.configs: list[bool] = []  # whether the trial's config.json existed at its start

    def start(self, trial: Trial) -> None:
        self.configs.append((self.trial_dir(trial.trial_id) / "config.json").is_file())
        self.queue.append(trial)

    resume = start

    def pause(self, trial_id: int) -> None: ...
    def stop(self, trial_id: int) -> None: ...

    def poll(self) -> list[TrialEvent]:
        if not self.queue:
            return []
        trial = self.queue.pop(0)
        self.t += 1.0
        return [TrialEvent(EventKind.RESULT, trial.trial_id, self.t,
                           {"epoch": 1, "loss": trial.config["x"]}),
                TrialEvent(EventKind.COMPLETED, trial.trial_id, self.t)]

    def now(self) -> float:
        return self.t


def test_the_defaults_of_a_backend_that_declares_nothing():
    backend = OneReportBackend()
    assert backend.clock_kind is ClockKind.WALL
    assert not backend.restores_running_trials and not backend.distributed
    assert backend.default_n_workers() == (os.cpu_count() or 1)
    assert backend.max_n_workers() == 256
    assert backend.config_space() is None and backend.fidelity() is None
    assert backend.trial_worker(0) is None
    assert backend.state_dict() == {}
    with pytest.raises(RuntimeError, match="trial context"):
        backend.trial_dir(0)


def test_the_context_holds_the_layout(tmp_path):
    context = TrialContext(tmp_path / "trials", experiment="exp")
    checkpoint = context.checkpoint_dir(4)
    assert checkpoint == tmp_path / "trials" / "4" / "checkpoint"
    assert checkpoint.parent.is_dir() and not checkpoint.exists()  # made when one is saved
    backend = OneReportBackend()
    backend.set_trial_root(tmp_path / "alone")  # a backend used without a store
    assert backend.context == TrialContext(tmp_path / "alone")
    assert backend.trial_dir(2) == tmp_path / "alone" / "2" and backend.trial_root is not None


def test_the_tuner_hands_the_store_context_to_the_backend(tmp_path):
    store = ExperimentStore(tmp_path, "ctx")
    backend = OneReportBackend()
    scheduler = build_scheduler("random", {"x": {"type": "uniform", "lower": 0, "upper": 1}},
                                "loss", "min", 0)
    Tuner(scheduler, backend, StoppingCriterion(max_trials_completed=3), n_workers=1,
          store=store).run()
    assert backend.context == TrialContext(store.trials_path, experiment="ctx")
    assert backend.configs == [True, True, True]  # a wall-clock backend's trials: written first
