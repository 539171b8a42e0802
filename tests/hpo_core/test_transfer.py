"""Transfer from earlier experiments: zero-shot portfolios and bounding boxes."""

from __future__ import annotations

import json

import pytest

from hpo_core.registry import build_scheduler
from hpo_core.space import ConfigSpace, choice, loguniform, ordinal, randint, uniform
from hpo_core.store import ExperimentStore
from hpo_core.transfer import Task, bounding_box_space, load_tasks, zero_shot_portfolio
from hpo_core.trial import Trial, TrialStatus

SPACE = ConfigSpace({"x": uniform(0, 1), "lr": loguniform(1e-4, 1e-1), "n": randint(1, 9),
                     "act": choice(["relu", "tanh", "gelu"]), "width": ordinal([8, 16, 32, 64]),
                     "batch": 64})
A = {"x": 0.1, "lr": 1e-3, "n": 2, "act": "relu", "width": 8, "batch": 64}
B = {"x": 0.9, "lr": 1e-2, "n": 7, "act": "tanh", "width": 64, "batch": 64}
C = {"x": 0.5, "lr": 3e-3, "n": 4, "act": "relu", "width": 16, "batch": 64}
D = {"x": 0.3, "lr": 5e-2, "n": 5, "act": "gelu", "width": 32, "batch": 64}


def test_portfolio_first_takes_the_config_good_on_every_task_then_the_specialists():
    # task 1 ranks A < C < D < B, task 2 ranks B < C < D < A: C is second on both, so it alone
    # is best on average; then A and B each make one task's best perfect
    tasks = [Task("one", [A, B, C, D], [0.0, 5.0, 1.0, 2.0]),
             Task("two", [A, B, C, D], [5.0, 0.0, 1.0, 2.0])]
    portfolio = zero_shot_portfolio(SPACE, tasks, num_configs=4)
    assert portfolio[0] == C
    assert {json.dumps(c, sort_keys=True) for c in portfolio[1:3]} == \
        {json.dumps(A, sort_keys=True), json.dumps(B, sort_keys=True)}
    assert portfolio[3] == D  # no gain left: the better one on average comes next
    assert zero_shot_portfolio(SPACE, tasks, num_configs=1) == [C]
    assert zero_shot_portfolio(SPACE, tasks) == portfolio[:3]  # until both tasks' best are in


def test_configs_not_evaluated_on_a_task_take_their_nearest_neighbours_value():
    near_a = {**A, "x": 0.12}
    tasks = [Task("one", [A, B], [0.0, 1.0]), Task("two", [near_a, B], [0.0, 1.0])]
    # A's neighbour near_a is best on task two and A best on task one: B is last
    assert zero_shot_portfolio(SPACE, tasks, num_configs=3)[-1] == B


def test_configs_outside_the_space_are_left_out():
    other = {**A, "act": "sigmoid"}
    assert zero_shot_portfolio(SPACE, [Task("one", [other, B], [0.0, 1.0])]) == [B]


def test_bounding_box_holds_the_top_configs_of_each_task():
    tasks = [Task("one", [A, B, C, D], [0.0, 5.0, 1.0, 2.0]),
             Task("two", [A, B, C, D], [5.0, 0.0, 1.0, 2.0])]
    box = bounding_box_space(SPACE, tasks, top_k=1)  # A and B
    assert box.domains["x"].lower == 0.1 and box.domains["x"].upper == 0.9
    assert box.domains["lr"].log and box.domains["lr"].lower == pytest.approx(1e-3)
    assert (box.domains["n"].lower, box.domains["n"].upper) == (2, 7)
    assert box.domains["act"].categories == ["relu", "tanh"]
    assert box.domains["width"].categories == [8, 16, 32, 64]
    assert box.fixed == {"batch": 64}
    assert ConfigSpace.from_json(json.loads(json.dumps(box.to_json()))) == box
    narrow = bounding_box_space(SPACE, tasks[:1], top_k=2)  # A and C
    assert narrow.domains["width"].categories == [8, 16]
    assert narrow.domains["act"].categories == ["relu"]


def test_bounding_box_method_searches_inside_the_box():
    tasks = [{"configs": [A, B, C, D], "values": [0.0, 5.0, 1.0, 2.0]}]
    scheduler = build_scheduler("bounding_box", SPACE, "loss", "min", 0,
                                {"transfer_from": tasks, "top_k": 2, "scheduler": "bo"})
    for i in range(10):
        config = scheduler.suggest(i).config
        SPACE.validate(config)
        assert 0.1 <= config["x"] <= 0.5 and config["act"] == "relu"


@pytest.mark.parametrize("tasks, top_k", [
    ([{"configs": [A, B, C], "values": [0.0, 1.0, 2.0]}], 1),  # one source, its best
    ([{"configs": [A, B], "values": [0.0, 1.0]}, {"configs": [A, C], "values": [0.0, 1.0]}],
     1),  # every source's best is the same config
    ([{"configs": [A], "values": [0.0]}], 3),  # one source of one config
])
def test_a_box_of_a_single_config_is_an_error_naming_top_k(tasks, top_k):
    with pytest.raises(ValueError, match=r"^scheduler_options\.top_k: the box of the "
                                         r"\d best configs of each earlier experiment is a "
                                         r"single config; raise top_k"):
        build_scheduler("bounding_box", SPACE, "loss", "min", 0,
                        {"transfer_from": tasks, "top_k": top_k})


def test_a_box_narrow_in_some_hyperparameters_only_is_fine():
    same_but_x = {**A, "x": 0.2}
    scheduler = build_scheduler("bounding_box", SPACE, "loss", "min", 0, {
        "transfer_from": [{"configs": [A, same_but_x, B], "values": [0.0, 1.0, 2.0]}],
        "top_k": 2})
    config = scheduler.suggest(0).config
    assert 0.1 <= config["x"] <= 0.2 and {**config, "x": A["x"]} == A


def test_mode_max_reads_large_values_as_good():
    tasks = load_tasks([{"configs": [A, B], "values": [1.0, 2.0], "mode": "max"}], "acc", "min")
    assert zero_shot_portfolio(SPACE, tasks, num_configs=2) == [B, A]
    tasks = load_tasks([{"configs": [A, B], "values": [1.0, 2.0]}], "acc", "max")
    assert zero_shot_portfolio(SPACE, tasks) == [B]


@pytest.mark.parametrize("transfer_from, message", [
    ([], r"transfer_from: is empty"),
    ("exp", r"transfer_from: must be a list"),
    ([42], r"transfer_from\[0\]: expected a folder path"),
    (["/nonexistent/exp"], r"transfer_from\[0\]: no stored experiment"),
    ([{"configs": [A], "values": [1.0, 2.0]}], r"transfer_from\[0\]\.values: must be a list"),
    ([{"configs": [A], "values": [1.0], "mode": "up"}], r"transfer_from\[0\]\.mode"),
    ([{"configs": [A], "values": [float("nan")]}], r"transfer_from\[0\]: has no finite value"),
])
def test_bad_transfer_sources_are_errors_naming_the_item(transfer_from, message):
    with pytest.raises(ValueError, match=message):
        build_scheduler("zero_shot", SPACE, "loss", "min", 0, {"transfer_from": transfer_from})


@pytest.mark.parametrize("method", ["zero_shot", "bounding_box"])
def test_no_earlier_config_in_the_space_is_an_error_not_a_plain_search(method):
    outside = [{"configs": [{**A, "act": "sigmoid"}], "values": [1.0]}]
    with pytest.raises(ValueError, match=r"^scheduler_options\.transfer_from: no earlier config "
                                         r"belongs to this config space$"):
        build_scheduler(method, SPACE, "loss", "min", 0, {"transfer_from": outside})


def test_zero_shot_needs_transfer_from():
    with pytest.raises(ValueError, match="scheduler_options.transfer_from: is empty"):
        build_scheduler("zero_shot", SPACE, "loss", "min", 0)


def test_a_stored_experiment_gives_each_trial_its_best_report_and_leaves_failed_ones_out(
        tmp_path):
    """Each trial counts with its value as the views read it: trial 0's best report (0.1),
    not its last (0.9, an overfit epoch); trial 2 failed, whatever it reported before."""
    store = ExperimentStore(tmp_path, "earlier")
    store.create()
    store.write_spec({"name": "earlier", "metric": "loss", "mode": "min",
                      "scheduler_options": {"resource_attr": "epoch"}})
    trials = {0: Trial(0, A, TrialStatus.COMPLETED), 1: Trial(1, B, TrialStatus.STOPPED),
              2: Trial(2, C, TrialStatus.FAILED)}
    for trial_id, epoch, loss in [(0, 1, 0.5), (1, 1, 0.3), (0, 2, 0.1), (2, 1, 0.05), (0, 3, 0.9)]:
        store.record({"trial_id": trial_id, "time": float(epoch), "status": "running",
                      "decision": "continue", "epoch": epoch, "loss": loss})
    store.save({"trials": {str(k): t.to_dict() for k, t in trials.items()}}, trials)
    [task] = load_tasks([str(store.path)], "loss", "min")
    assert (task.configs, task.values) == ([A, B], [0.1, 0.3])
    assert zero_shot_portfolio(SPACE, [task], num_configs=1) == [A]
