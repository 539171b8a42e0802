"""The simulated backend: event timing, stop/pause/resume, checkpoints, determinism with a Tuner."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from backends.blackbox import blackbox_from_dataframe, load_blackbox
from backends.simulated import SimulatedBackend
from hpo_core.registry import METHODS, build_scheduler
from hpo_core.stopping import StoppingCriterion
from hpo_core.store import ExperimentStore, load_experiment
from hpo_core.trial import EventKind, Trial
from hpo_core.tuner import Tuner

TASK = "blood-transfusion-service-center"
# x -> cumulative elapsed time at epochs 1, 2, 3
TIMES = {1: [1.0, 3.0, 6.0], 2: [2.0, 4.0, 8.0], 3: [1.0, 2.0, 3.0]}


def small_blackbox(seeds: int = 1):
    rows = [{"x": x, "seed": s, "epoch": e + 1, "loss": 10.0 * x + e + 100.0 * s, "time": t}
            for x, times in TIMES.items() for s in range(seeds) for e, t in enumerate(times)]
    return blackbox_from_dataframe(pd.DataFrame(rows), ["x"], "epoch", ["loss"], "time",
                                   seed_column="seed" if seeds > 1 else None)


def drain(backend: SimulatedBackend) -> list[tuple[str, int, float, dict | None]]:
    events = []
    while batch := backend.poll():
        assert len(batch) == 1  # one event per poll
        e = batch[0]
        events.append((e.kind.value, e.trial_id, e.time, e.metrics))
    return events


def test_trials_report_each_fidelity_at_start_plus_elapsed_time():
    backend = SimulatedBackend(small_blackbox())
    backend.start(Trial(0, {"x": 1}))
    backend.start(Trial(1, {"x": 2}))
    events = drain(backend)
    assert [(k, t, time) for k, t, time, _ in events] == [
        ("result", 0, 1.0), ("result", 1, 2.0), ("result", 0, 3.0), ("result", 1, 4.0),
        ("result", 0, 6.0), ("completed", 0, 6.0), ("result", 1, 8.0), ("completed", 1, 8.0),
    ]
    assert events[2][3] == {"epoch": 2, "loss": 11.0, "elapsed_time": 3.0}
    assert backend.now() == 8.0
    assert backend.poll() == []  # nothing left; never blocks


def test_a_curve_that_stops_early_reports_its_rows_then_completes():
    rows = [{"x": x, "epoch": e + 1, "loss": 10.0 * x + e, "time": t}
            for x, times in TIMES.items() for e, t in enumerate(times) if (x, e) != (3, 2)]
    backend = SimulatedBackend(blackbox_from_dataframe(pd.DataFrame(rows), ["x"], "epoch",
                                                       ["loss"], "time"))
    backend.start(Trial(0, {"x": 3}))  # no row at epoch 3
    backend.start(Trial(1, {"x": 1}))
    events = drain(backend)
    assert [(k, t, time, (m or {}).get("epoch")) for k, t, time, m in events if t == 0] == [
        ("result", 0, 1.0, 1), ("result", 0, 2.0, 2), ("completed", 0, 2.0, None)]
    assert [m["epoch"] for k, t, _, m in events if t == 1 and k == "result"] == [1, 2, 3]


def test_stop_removes_pending_reports():
    backend = SimulatedBackend(small_blackbox())
    backend.start(Trial(0, {"x": 1}))
    backend.start(Trial(1, {"x": 2}))
    assert backend.poll()[0].trial_id == 0
    backend.stop(0)
    assert {trial for _, trial, _, _ in drain(backend)} == {1}


def test_pause_and_resume_continue_from_the_paused_epoch():
    backend = SimulatedBackend(small_blackbox())
    trial = Trial(0, {"x": 1})
    backend.start(trial)
    backend.start(Trial(1, {"x": 2}))
    first = backend.poll()[0]
    assert (first.trial_id, first.metrics["epoch"], first.time) == (0, 1, 1.0)
    trial.last_result = first.metrics
    backend.pause(0)
    assert backend.poll()[0].time == 2.0  # trial 1's epoch 1; trial 0 is paused
    backend.resume(trial)  # at t=2: epoch 2 after 3 - 1 more seconds, epoch 3 after 6 - 1
    events = [e for e in drain(backend) if e[1] == 0]
    assert [(k, time, (m or {}).get("epoch")) for k, _, time, m in events] == [
        ("result", 4.0, 2), ("result", 7.0, 3), ("completed", 7.0, None)]
    assert events[0][3]["elapsed_time"] == 3.0  # the table's cumulative training time


def test_a_fresh_backend_resumes_from_the_last_result():
    trial = Trial(0, {"x": 2}, last_result={"epoch": 2, "loss": 21.0})
    backend = SimulatedBackend(small_blackbox())  # e.g. after a crash
    backend.resume(trial)
    assert [(k, time) for k, _, time, _ in drain(backend)] == [("result", 4.0),
                                                              ("completed", 4.0)]


def test_checkpoint_from_continues_from_the_source_trials_epoch():
    backend = SimulatedBackend(small_blackbox())
    backend.start(Trial(0, {"x": 1}))
    backend.poll(), backend.poll()  # trial 0 reported epochs 1 and 2 (t=3)
    backend.stop(0)
    backend.start(Trial(1, {"x": 3}, checkpoint_from=0))  # x=3's curve from epoch 2 on
    events = drain(backend)
    assert [(k, time, (m or {}).get("epoch")) for k, _, time, m in events] == [
        ("result", 4.0, 3), ("completed", 4.0, None)]
    state = backend.state_dict()
    assert state["progress"] == {"0": 2, "1": 3} and state["clock"] == 4.0
    fresh = SimulatedBackend(small_blackbox())
    fresh.load_state_dict(state)
    fresh.start(Trial(2, {"x": 2}, checkpoint_from=1))  # source finished epoch 3: nothing left
    assert [k for k, *_ in drain(fresh)] == ["completed"]


def test_max_fidelity_and_objective_subset():
    backend = SimulatedBackend(small_blackbox(), max_fidelity=2, objectives=[])
    backend.start(Trial(0, {"x": 1}))
    events = drain(backend)
    assert [m for _, _, _, m in events] == [{"epoch": 1, "elapsed_time": 1.0},
                                            {"epoch": 2, "elapsed_time": 3.0}, None]
    assert backend.max_fidelity == 2
    with pytest.raises(ValueError, match="max_fidelity"):
        SimulatedBackend(small_blackbox(), max_fidelity=0.5)
    with pytest.raises(ValueError, match=r"objectives: \['acc'\]"):
        SimulatedBackend(small_blackbox(), objectives=["acc"])


def test_off_table_configs_use_the_nearest_curve_or_fail():
    nearest = SimulatedBackend(small_blackbox())
    nearest.start(Trial(0, {"x": 3}))  # tabulated: exact
    assert nearest.poll()[0].metrics["loss"] == 30.0
    exact_only = SimulatedBackend(small_blackbox(), surrogate=None)
    exact_only.start(Trial(0, {"x": 7}))
    event = exact_only.poll()[0]
    assert event.kind == EventKind.FAILED and "not in the table" in event.reason
    missing = SimulatedBackend(small_blackbox())
    missing.start(Trial(0, {"y": 1}))
    event = missing.poll()[0]
    assert event.kind == EventKind.FAILED and "'x'" in event.reason


def test_the_seed_picks_the_table_seed_per_trial():
    def losses(seed: int) -> list[float]:
        backend = SimulatedBackend(small_blackbox(seeds=3), seed=seed)
        for i in range(12):
            backend.start(Trial(i, {"x": 1}))
        return [e[3]["loss"] for e in drain(backend) if e[0] == "result" and e[3]["epoch"] == 1]

    assert losses(0) == losses(0)
    assert losses(0) != losses(1)
    assert set(losses(0)) == {10.0, 110.0, 210.0}


# -- with the tuner ----------------------------------------------------------------------------------
def run_tuner(tmp_path: Path, method: str, seed: int, name: str, max_time: float = 900.0) -> Path:
    blackbox = load_blackbox("lcbench", task=TASK)
    options = {"max_t": 51, "resource_attr": "epoch"} if METHODS[method].multi_fidelity else {}
    scheduler = build_scheduler(method, blackbox.config_space, blackbox.default_metric, "min",
                                seed, options)
    store = ExperimentStore(tmp_path, name)
    Tuner(scheduler, SimulatedBackend(blackbox, seed=seed), StoppingCriterion(max_time=max_time),
          n_workers=4, store=store).run()
    return store.path / "results.parquet"


METHOD_NAMES = ["random"] + (
    ["asha"] if (Path(__file__).parents[2] / "hpo_core/schedulers/asha.py").exists() else []
)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_same_seed_same_results_file(tmp_path, method):
    first = run_tuner(tmp_path, method, 3, "a")
    second = run_tuner(tmp_path, method, 3, "b")
    other = run_tuner(tmp_path, method, 4, "c")
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    results = load_experiment(first.parent).results
    assert results["time"].is_monotonic_increasing and results["time"].max() <= 900.0 + 60
    assert len(results) > 100


def test_a_resumed_experiment_goes_on_where_it_stopped(tmp_path):
    blackbox = load_blackbox("lcbench", task=TASK)

    def tuner(max_results: int) -> Tuner:
        scheduler = build_scheduler("random", blackbox.config_space, blackbox.default_metric,
                                    "min", 0)
        return Tuner(scheduler, SimulatedBackend(blackbox), StoppingCriterion(
            max_results=max_results), n_workers=2, store=ExperimentStore(tmp_path, "r"))

    first = tuner(70)
    first._shutdown = lambda finished: first.save()  # a crash: running trials stay RUNNING
    first.run()
    tuner(150).run()
    results = load_experiment(tmp_path / "r").results
    assert len(results) == 150 and results["time"].is_monotonic_increasing
    for _, rows in results.groupby("trial_id"):
        assert rows["epoch"].tolist() == list(range(1, len(rows) + 1))  # no epoch twice


def test_start_and_resume_delays_move_the_reports():
    backend = SimulatedBackend(small_blackbox(), start_delay=5.0, resume_delay=7.0)
    backend.start(Trial(0, {"x": 1}))  # elapsed 1, 3, 6
    first = backend.poll()[0]
    assert (first.trial_id, first.time) == (0, 5.0 + 1.0)
    backend.pause(0)  # no pause delay: the worker is free at once
    trial = Trial(0, {"x": 1}, last_result=first.metrics)
    backend.resume(trial)
    assert [(k, t, time) for k, t, time, _ in drain(backend)] == [
        ("result", 0, 6.0 + 7.0 + 2.0), ("result", 0, 6.0 + 7.0 + 5.0),
        ("completed", 0, 6.0 + 7.0 + 5.0)]


def test_stop_and_pause_delays_hold_the_worker_for_the_next_trial():
    """One worker: the trial after a stop (pause) starts when the stop (pause) is done."""
    backend = SimulatedBackend(small_blackbox(), start_delay=1.0, stop_delay=10.0,
                               pause_delay=20.0, resume_delay=3.0)
    backend.start(Trial(0, {"x": 1}))
    assert backend.poll()[0].time == 1.0 + 1.0
    backend.stop(0)  # at t=2: the worker is busy until 12
    backend.start(Trial(1, {"x": 3}))  # elapsed 1, 2, 3
    assert backend.poll()[0].time == 2.0 + 10.0 + 1.0 + 1.0
    backend.pause(1)  # at t=14: busy until 34
    backend.resume(Trial(1, {"x": 3}, last_result={"epoch": 1}))
    event = backend.poll()[0]
    assert (event.trial_id, event.metrics["epoch"], event.time) == (1, 2, 14.0 + 20.0 + 3.0 + 1.0)
    backend.start(Trial(2, {"x": 2}))  # no worker is stopping: starts at once (t=38)
    first_of_2 = [time for kind, t, time, _ in drain(backend) if t == 2 and kind == "result"][0]
    assert first_of_2 == 38.0 + 1.0 + 2.0


def test_delays_are_charged_on_the_tuners_clock():
    blackbox = load_blackbox("lcbench", task=TASK)
    times = {}
    for delay in (0.0, 30.0):
        scheduler = build_scheduler("random", blackbox.config_space, "Train/val_accuracy",
                                    "max", 0, {})
        backend = SimulatedBackend(blackbox, start_delay=delay, max_fidelity=3)
        tuner = Tuner(scheduler, backend, StoppingCriterion(max_trials_completed=8), n_workers=1)
        tuner.run()
        times[delay] = [t.end_time for t in sorted(tuner.trials.values(), key=lambda t: t.trial_id)]
    # one worker, 8 trials one after the other: each ends 30 s later per trial started so far
    assert [b - a for a, b in zip(times[0.0], times[30.0], strict=True)] == pytest.approx(
        [30.0 * (i + 1) for i in range(8)])


def test_a_killed_run_resumes_exactly_even_with_more_workers_after_the_kill(tmp_path):
    """The journal after the last snapshot is replayed with the workers of the session that
    wrote it; the resumed run equals an uninterrupted one up to the kill, then uses 4 workers."""
    blackbox = load_blackbox("lcbench", task=TASK)

    def tuner(name: str, n_workers: int, max_results: int, kill_after: int | None = None):
        backend = SimulatedBackend(blackbox, seed=1)
        if kill_after is not None:
            polls, poll = iter(range(kill_after)), backend.poll

            def killed_poll():
                if next(polls, None) is None:
                    raise KeyboardInterrupt("SIGKILL")
                return poll()
            backend.poll = killed_poll
        scheduler = build_scheduler("asha", blackbox.config_space, blackbox.default_metric,
                                    "min", 0, {"max_t": 51, "resource_attr": "epoch"})
        return Tuner(scheduler, backend, StoppingCriterion(max_results=max_results),
                     n_workers=n_workers, store=ExperimentStore(tmp_path, name),
                     checkpoint_interval=1e9)

    first = tuner("killed", 2, 10**6, kill_after=400)
    # a SIGKILL once the store wrote its pending snapshot: nothing else runs
    first._shutdown = lambda finished: first.store.close()
    with pytest.raises(KeyboardInterrupt):
        first.run()
    journaled = len(load_experiment(tmp_path / "killed").results)
    assert journaled > 100
    tuner("killed", 4, journaled + 200).run()
    resumed = load_experiment(tmp_path / "killed").results
    tuner("reference", 2, journaled).run()
    reference = load_experiment(tmp_path / "reference").results
    columns = ["trial_id", "time", "epoch", blackbox.default_metric]
    assert resumed[columns].head(journaled).equals(reference[columns])
    assert len(resumed) == journaled + 200
