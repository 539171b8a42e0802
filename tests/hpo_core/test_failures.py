"""Failures are results: a failed trial is never the best; failed trials are counted."""

from __future__ import annotations

import io

from flows.status import StatusView
from hpo_core.backend import ClockKind, TrialBackend
from hpo_core.registry import build_scheduler
from hpo_core.stopping import StoppingCriterion
from hpo_core.store import ExperimentStore, load_experiment
from hpo_core.trial import EventKind, Trial, TrialEvent
from hpo_core.tuner import Tuner


class ScriptedBackend(TrialBackend):
    """Trial 0 reports the best loss and then fails; trial 1 reports a worse one and completes;
    trial 2 fails before reporting."""

    clock_kind = ClockKind.SIMULATED

    def __init__(self) -> None:
        self.events: list[TrialEvent] = []
        self.t = 0.0

    def start(self, trial: Trial) -> None:
        tid = trial.trial_id
        script = {
            0: [TrialEvent(EventKind.RESULT, 0, 1.0, {"epoch": 1, "loss": 0.1}),
                TrialEvent(EventKind.FAILED, 0, 2.0, reason="Traceback ...\nValueError: boom")],
            1: [TrialEvent(EventKind.RESULT, 1, 1.5, {"epoch": 1, "loss": 0.5}),
                TrialEvent(EventKind.COMPLETED, 1, 3.0)],
            2: [TrialEvent(EventKind.FAILED, 2, 0.5, reason="exited with code 2")],
        }[tid]
        self.events += script
        self.events.sort(key=lambda e: e.time)

    def poll(self) -> list[TrialEvent]:
        if not self.events:
            return []
        event = self.events.pop(0)
        self.t = event.time
        return [event]

    def now(self) -> float:
        return self.t

    def pause(self, trial_id: int) -> None: ...
    def resume(self, trial: Trial) -> None: ...
    def stop(self, trial_id: int) -> None: ...
    def close(self) -> None: ...


def test_a_failed_trial_is_never_the_best(tmp_path) -> None:
    scheduler = build_scheduler("random", {"x": {"type": "uniform", "lower": 0, "upper": 1}},
                                "loss", "min", 0)
    store = ExperimentStore(tmp_path, "failures")
    stream = io.StringIO()
    tuner = Tuner(scheduler, ScriptedBackend(), StoppingCriterion(max_trials_started=3),
                  n_workers=3, store=store, callbacks=[StatusView(top=3, stream=stream)])
    result = tuner.run()
    assert result.best_trial_id == 1 and result.best_value == 0.5
    assert tuner.status.num_trials_failed == 2
    final = stream.getvalue().split("== Status (final) ==")[-1]
    assert "best loss (min): 0.5 (trial 1, report 1)" in final  # the status view, too
    rows = [line.split()[:2] for line in final.splitlines()[-2:]]
    assert rows == [["1", "completed"], ["0", "failed"]]  # its table lists failed trials last

    experiment = load_experiment(store.path)
    assert experiment.best_trial_id() == 1 and experiment.best_value() == 0.5
    assert set(experiment.trajectory()["trial_id"]) == {1}
    trials = experiment.trials().set_index("trial_id")
    assert list(trials.index) == [0, 1, 2]  # trial 2 never reported, and is still counted
    assert list(trials["status"]) == ["failed", "completed", "failed"]
    assert trials.at[2, "num_reports"] == 0
    assert trials.at[0, "failure_reason"] == "Traceback ...\nValueError: boom"


def test_an_experiment_without_reports_has_an_empty_trajectory_and_a_plot(tmp_path) -> None:
    store = ExperimentStore(tmp_path, "silent")
    store.create()
    store.write_spec({"name": "silent", "metric": "loss", "mode": "min"})
    experiment = load_experiment(store.path)
    assert experiment.trajectory().empty and experiment.best_config() is None
    assert experiment.plot_trajectory().exists()
