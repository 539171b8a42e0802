"""The status view as text (not a terminal) and the per-trial log lines."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flows.experiment import build_tuner
from flows.status import StatusView, TrialLogLines
from hpo_core.backend import ClockKind, TrialBackend
from hpo_core.registry import build_scheduler
from hpo_core.spec import ExperimentSpec
from hpo_core.stopping import StoppingCriterion
from hpo_core.store import ExperimentStore, load_experiment
from hpo_core.trial import EventKind, Trial, TrialEvent
from hpo_core.trial_value import format_value
from hpo_core.tuner import Tuner

METRIC = "Train/val_cross_entropy"


def _spec(tmp_path: Path) -> ExperimentSpec:
    return ExperimentSpec.from_dict({
        "name": "status", "metric": METRIC, "scheduler": "asha",
        "backend_options": {"blackbox": "lcbench", "task": "blood-transfusion-service-center",
                            "max_fidelity": 9},
        "stop": {"max_trials_completed": 20}, "n_workers": 3, "seed": 2,
        "results_root": str(tmp_path)})


@contextmanager
def logged_lines(name: str) -> Iterator[tuple[logging.Logger, list[str]]]:
    """A logger and the messages it logs while the block runs."""
    records: list[str] = []
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        yield logger, records
    finally:
        logger.removeHandler(handler)


def test_status_view_prints_plain_blocks_when_not_on_a_terminal(tmp_path: Path) -> None:
    stream = io.StringIO()
    view = StatusView(top=3, interval=0.0, stream=stream)
    assert not view.live
    with logged_lines("test-trial-lines") as (logger, records):
        tuner = build_tuner(_spec(tmp_path), callbacks=[view, TrialLogLines(logger)])
        tuner.run()

    text = stream.getvalue()
    assert "\x1b[" not in text  # no cursor or colour codes in logs
    blocks = text.split("== Status")
    assert len(blocks) > 5  # printed as it went, not only at the end
    final = blocks[-1].splitlines()
    experiment = load_experiment(tmp_path / "status")
    trials = experiment.trials()
    counts = trials["status"].value_counts()
    best_id = experiment.best_trial_id()
    assert final[0] == " (final) =="
    assert final[1].startswith(f"{len(trials)} trials: {counts['completed']} completed, "
                               f"{counts['stopped']} stopped early; {len(experiment.results)} "
                               "reports; experiment time ")
    assert final[1].endswith("ended: max_trials_completed 20 reached")
    best_step = format_value(trials.set_index("trial_id").at[best_id, "best_step"])
    assert final[2] == (f"best {METRIC} (min): {format_value(experiment.best_value())} "
                        f"(trial {best_id}, epoch {best_step})")
    header = final[3].split()
    assert header[:7] == ["trial", "status", METRIC, "at", "epoch", "last", "epoch"]
    assert "learning_rate" in header
    rows = [line.split() for line in final[4:7]]
    top = experiment.ranked().head(3)
    assert [r[0] for r in rows] == [str(t) for t in top["trial_id"]]
    assert [r[2] for r in rows] == [format_value(v) for v in top[METRIC]]
    assert len(final) == 7

    # one log line per ended trial segment: decision, step, value (and its best when earlier)
    assert len(records) == len(trials)
    pattern = re.compile(rf"trial \d+ (completed \(ran to the end\)|stopped early) at epoch \d+: "
                         rf"{re.escape(METRIC)}=[0-9.e-]+( \(best [0-9.e-]+ at epoch \d+\))?$")
    assert all(pattern.match(r) for r in records), records[:5]
    assert any(r.startswith("trial ") and "completed (ran to the end) at epoch 9" in r
               for r in records)


def test_the_final_status_of_an_interrupted_run_says_its_running_trials_were_interrupted(
        tmp_path: Path) -> None:
    stream = io.StringIO()
    tuner = build_tuner(_spec(tmp_path), callbacks=[StatusView(top=50, stream=stream)])
    add = tuner.scheduler.on_trial_add

    def interrupt(trial: Trial) -> None:
        if trial.trial_id == 12:  # as Ctrl-C would, with trials running
            raise KeyboardInterrupt
        add(trial)

    tuner.scheduler.on_trial_add = interrupt  # type: ignore[method-assign]
    try:
        tuner.run()
    except KeyboardInterrupt:
        pass
    running = [t for t in tuner.trials.values() if t.status.value == "running"]
    assert running  # kept as running in the state: a resume relaunches them
    final = stream.getvalue().split("== Status (final) ==")[1].splitlines()
    assert f"{len(running)} interrupted" in final[1] and "running" not in final[1]
    statuses = {line.split()[0]: line.split()[1] for line in final[4:] if line.strip()}
    assert all(statuses.get(str(t.trial_id), "interrupted") == "interrupted" for t in running)
    assert "running" not in statuses.values()
    # the Prefect progress artifact's last description says so too
    from flows.artifacts import ProgressArtifact

    assert f"{len(running)} interrupted" in ProgressArtifact._description(tuner, ended=True)


def test_with_several_objectives_the_status_shows_the_pareto_front_as_show_does(
        tmp_path: Path) -> None:
    metrics = [METRIC, "elapsed_time"]
    spec = ExperimentSpec.from_dict({
        "name": "mo-status", "metric": metrics, "mode": ["min", "min"], "scheduler": "moasha",
        "backend_options": {"blackbox": "lcbench", "task": "blood-transfusion-service-center",
                            "max_fidelity": 9, "objectives": metrics},
        "stop": {"max_trials_completed": 30}, "n_workers": 3, "seed": 4,
        "results_root": str(tmp_path)})
    stream = io.StringIO()
    with logged_lines("test-mo-trial-lines") as (logger, records):
        lines = TrialLogLines(logger)
        build_tuner(spec, callbacks=[StatusView(top=4, interval=0.0, stream=stream),
                                     lines]).run()
    assert not lines._new, "the log lines keep no report for a front they never show"

    front = load_experiment(tmp_path / "mo-status").pareto_front()
    assert len(front) >= 3
    final = stream.getvalue().split("== Status (final) ==")[1].splitlines()
    assert final[2] == (f"Pareto front of {METRIC} (min), elapsed_time (min): {len(front)} "
                        f"reports of {front['trial_id'].nunique()} trials")
    assert final[3].split()[:4] == ["trial", "status", METRIC, "elapsed_time"]
    rows = [line.split() for line in final[4:]]
    assert [(r[0], r[2], r[3], r[4]) for r in rows] == [
        (str(t), format_value(a), format_value(b), format_value(e))
        for t, a, b, e in front[["trial_id", METRIC, "elapsed_time", "epoch"]].head(4)
        .itertuples(index=False)]
    pattern = re.compile(rf"trial \d+ (completed \(ran to the end\)|stopped early) at epoch \d+: "
                         rf"{re.escape(METRIC)}=[0-9.e-]+, elapsed_time=[0-9.e-]+$")
    reported = [r for r in records if not r.endswith("before its first report")]
    assert len(reported) >= 25 and all(pattern.match(r) for r in reported), reported[:5]


class ScriptedBackend(TrialBackend):
    """Trial i reports SCRIPT[i] (a report, or "fail") one per time unit, starting at
    0.5 * i; then it completes."""

    clock_kind = ClockKind.SIMULATED
    SCRIPT = {0: [{"a": 1.0, "b": 1.0}, "fail"], 1: [{"a": 2.0, "b": 2.0}] * 3,
              2: [{"a": 3.0, "b": 0.5}]}

    def __init__(self) -> None:
        self.t = 0.0
        self.events: list[tuple[float, int, int]] = []  # (time, trial, report index)

    def start(self, trial: Trial) -> None:
        self.events.append((self.t + 1.0 + 0.5 * trial.trial_id, trial.trial_id, 0))

    def poll(self) -> list[TrialEvent]:
        if not self.events:
            return []
        self.events.sort()
        time_, tid, index = self.events.pop(0)
        self.t = time_
        script = self.SCRIPT[tid]
        if index == len(script):
            return [TrialEvent(EventKind.COMPLETED, tid, time_)]
        if script[index] == "fail":
            return [TrialEvent(EventKind.FAILED, tid, time_, reason="crashed")]
        self.events.append((time_ + 1.0, tid, index + 1))
        return [TrialEvent(EventKind.RESULT, tid, time_, {"epoch": index + 1, **script[index]})]

    def stop(self, trial_id: int) -> None:
        self.events = [e for e in self.events if e[1] != trial_id]

    def pause(self, trial_id: int) -> None:
        self.stop(trial_id)

    def resume(self, trial: Trial) -> None:
        raise NotImplementedError

    def now(self) -> float:
        return self.t

    def close(self) -> None:
        self.events = []


def test_the_status_front_gets_back_what_only_a_trial_that_failed_dominated(
        tmp_path: Path) -> None:
    """The view keeps the front, not every report; when a trial on it fails, a report only it
    dominated is on the front again (read back from the store), as `tunesmith show` has it."""
    scheduler = build_scheduler("mo_rea", {"x": {"type": "uniform", "lower": 0, "upper": 1}},
                                ["a", "b"], ["min", "min"], 0)
    stream = io.StringIO()
    store = ExperimentStore(tmp_path, "fails")
    Tuner(scheduler, ScriptedBackend(), StoppingCriterion(max_trials_started=3), n_workers=2,
          store=store, callbacks=[StatusView(interval=0.0, stream=stream)]).run()
    blocks = stream.getvalue().split("== Status")
    assert any("Pareto front of a (min), b (min): 1 reports of 1 trials" in b for b in blocks)
    final = blocks[-1].splitlines()
    assert final[2] == "Pareto front of a (min), b (min): 4 reports of 2 trials"
    assert [line.split()[:4] for line in final[4:]] == [
        ["1", "completed", "2", "2"], ["1", "completed", "2", "2"], ["1", "completed", "2", "2"],
        ["2", "completed", "3", "0.5"]]
    front = load_experiment(store.path).pareto_front()
    assert len(front) == 4 and set(front["trial_id"]) == {1, 2}
