"""hpo_core.comparison on hand-made runs: normalization, anytime area, ranks, intervals, tests."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpo_core.comparison import Run, analyse, mean_interval, paired_test, task_bounds


def run(method, task, seed, times, values, budget=100.0, end_time=100.0, reason="max_time"):
    return Run(method, task, seed, times, values, budget, end_time, reason, len(values))


def test_regret_is_normalized_per_task_by_the_best_found_and_the_median_first_report():
    runs = [run("a", "t", 0, [10.0, 50.0], [0.5, 0.9]),  # max mode: 0.9 is the best anywhere
            run("b", "t", 0, [20.0], [0.7]),
            run("c", "t", 0, [30.0], [0.3])]
    assert task_bounds(runs, "max") == {"t": (0.9, 0.5)}
    comparison = analyse(runs, "max", grid_points=100)
    table = comparison.runs.set_index("method")
    assert table.loc["a", "final"] == 0.0
    assert table.loc["b", "final"] == pytest.approx(0.5)  # (0.9 - 0.7) / (0.9 - 0.5)
    assert table.loc["c", "final"] == 1.0  # worse than a typical first report: clipped
    # a: regret 1 until t=10, 0 from t=50 on, 0 between... area = 0.09 * 1 + 0.4 * 1 + 0
    assert table.loc["a", "area"] == pytest.approx((9 + 40 * 1.0) / 100)
    assert list(table["rank"]) == [1.0, 2.0, 3.0]


def test_ranks_intervals_and_the_paired_test_over_tasks_and_seeds():
    runs = []
    for task in ("t1", "t2"):
        for seed in range(5):
            runs.append(run("good", task, seed, [10.0 + seed], [1.0]))
            runs.append(run("bad", task, seed, [10.0 + seed, 60.0], [0.0, 0.9 - 0.01 * seed]))
    comparison = analyse(runs, "max")
    overall = comparison.overall.set_index("method")
    assert list(comparison.overall["method"]) == ["good", "bad"]  # best area first
    assert overall.loc["good", "rank"] == 1.0 and overall.loc["bad", "rank"] == 2.0
    assert overall.loc["good", "runs"] == 10
    assert overall.loc["bad", "area_lo"] < overall.loc["bad", "area"] < overall.loc["bad", "area_hi"]
    test = paired_test(comparison, "good", "bad")
    assert test["pairs"] == 10 and test["a_better"] == 10 and test["b_better"] == 0
    assert test["hi"] < 0 and test["p_wilcoxon"] < 0.01
    assert comparison.rank_curve["good"][-1] == 1.0
    assert set(comparison.curves) == {(t, m) for t in ("t1", "t2") for m in ("good", "bad")}


def test_a_run_that_ended_early_keeps_its_best_and_its_reason_is_shown():
    runs = [run("pasha", "t", s, [5.0], [0.8], end_time=60.0,
                reason="no trial running and the scheduler has nothing to start")
            for s in range(2)] + [run("random", "t", s, [5.0, 90.0], [0.5, 0.9]) for s in range(2)]
    overall = analyse(runs, "max").overall.set_index("method")
    assert overall.loc["pasha", "ended_early"] == 2
    assert overall.loc["pasha", "end_note"] == (
        "2/2 ended before the budget (at 60-60 s): no trial running and the scheduler has "
        "nothing to start")
    assert overall.loc["random", "end_note"] == ""
    # median first report 0.65: (0.9 - 0.8) / (0.9 - 0.65), held from its end to the budget
    assert overall.loc["pasha", "final"] == pytest.approx(0.1 / 0.25)


def test_mean_interval_is_a_t_interval():
    mean, lo, hi = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and hi - mean == pytest.approx(4.302653 / math.sqrt(3))
    assert math.isnan(mean_interval([1.0])[1])  # no interval from one value
    assert math.isnan(mean_interval([])[0])
    # kept within the range the mean can take (regret: [0, 1])
    assert mean_interval([0.0, 0.0, 0.3], bounds=(0.0, 1.0))[1] == 0.0
    assert mean_interval([1.0, 1.0, 0.7], bounds=(0.0, 1.0))[2] == 1.0


def test_regret_and_rank_intervals_stay_within_their_ranges():
    """Four runs, three of them at zero regret: the t-interval would reach below 0."""
    runs = [run("good", "t", seed, [10.0], [1.0 if seed else 0.5]) for seed in range(4)]
    runs += [run("bad", "t", seed, [10.0], [0.0]) for seed in range(4)]
    overall = analyse(runs, "max").overall.set_index("method")
    for name, low, high in (("final", 0.0, 1.0), ("area", 0.0, 1.0), ("rank", 1.0, 2.0)):
        assert (overall[f"{name}_lo"] >= low).all() and (overall[f"{name}_hi"] <= high).all()
    assert overall.loc["good", "final_lo"] == 0.0


def test_intervals_of_few_runs_stay_within_what_regret_and_its_differences_can_be(
        tmp_path, monkeypatch):
    import matplotlib.axes

    from hpo_core.comparison_plots import plot_regret

    # two seeds that disagree completely: the t-interval's half-width is 12.7
    runs = [run("a", "t", 0, [10.0], [1.0]), run("a", "t", 1, [90.0], [0.0]),
            run("b", "t", 0, [90.0], [0.0]), run("b", "t", 1, [10.0], [1.0]),
            run("c", "t", 0, [50.0], [0.5]), run("c", "t", 1, [50.0], [0.5])]
    comparison = analyse(runs, "max")
    for figure, span in (("final", 1.0), ("area", 1.0), ("rank", 2.0)):
        test = paired_test(comparison, "a", "b", figure)
        assert -span <= test["lo"] <= test["hi"] <= span, (figure, test)
    bands = []
    real = matplotlib.axes.Axes.fill_between

    def record(self, x, y1, y2=0, **kwargs):
        bands.append((np.asarray(y1), np.asarray(y2)))
        return real(self, x, y1, y2, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between", record)
    plot_regret(comparison, tmp_path / "regret.png")
    assert bands and all(lo.min() >= 0 and hi.max() <= 1.0 for lo, hi in bands)
