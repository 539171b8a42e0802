"""PBT: exploit copies a top trial's checkpoint into the new trial; explore perturbs in bounds."""

from __future__ import annotations

import heapq
import json
import math
import shutil

import pytest

from hpo_core.backend import ClockKind, TrialBackend
from hpo_core.registry import build_scheduler
from hpo_core.schedulers.pbt import PopulationBasedTraining
from hpo_core.space import ConfigSpace, choice, loguniform, ordinal, randint, uniform
from hpo_core.stopping import StoppingCriterion
from hpo_core.trial import Decision, EventKind, Trial, TrialEvent, TrialResult
from hpo_core.tuner import Tuner, TunerCallback

SPACE = ConfigSpace({"lr": loguniform(1e-3, 1.0), "width": randint(1, 10)})


class CheckpointBackend(TrialBackend):
    """Trains on files: each epoch reads `state.json` from the trial's checkpoint folder, adds
    one epoch and the trial id to its lineage, writes it back and reports
    loss = (log10(lr) + 1)^2 + 1 / epoch (best lr: 0.1). Exploit copies the checkpoint folder."""

    clock_kind = ClockKind.SIMULATED

    def __init__(self):
        super().__init__()
        self.t = 0.0
        self.heap: list[tuple[float, int, int, int]] = []
        self.generation: dict[int, int] = {}
        self.trials: dict[int, Trial] = {}
        self.first_state: dict[int, dict] = {}  # state found in the checkpoint at the first epoch
        self.copied_at: dict[int, int] = {}  # child -> the parent's epoch when copied

    def _schedule(self, trial_id):
        self.generation[trial_id] = self.generation.get(trial_id, 0) + 1
        heapq.heappush(self.heap, (self.t + 1.0, trial_id, self.generation[trial_id], 0))

    def _state_file(self, trial_id):
        return self.checkpoint_dir(trial_id) / "state.json"

    def _read(self, trial_id):
        path = self._state_file(trial_id)
        return json.loads(path.read_text()) if path.exists() else {"epoch": 0, "lineage": []}

    def start(self, trial):
        self.trials[trial.trial_id] = trial
        if trial.checkpoint_from is not None:
            shutil.copytree(self.checkpoint_dir(trial.checkpoint_from),
                            self.checkpoint_dir(trial.trial_id), dirs_exist_ok=True)
            self.copied_at[trial.trial_id] = self._read(trial.checkpoint_from)["epoch"]
        self._schedule(trial.trial_id)

    def resume(self, trial):
        self.start(trial)

    def pause(self, trial_id):
        self.generation[trial_id] += 1

    stop = pause

    def poll(self):
        while self.heap:
            t, tid, gen, _ = heapq.heappop(self.heap)
            if gen != self.generation[tid]:
                continue
            self.t = t
            state = self._read(tid)
            self.first_state.setdefault(tid, json.loads(json.dumps(state)))
            state["epoch"] += 1
            state["lineage"].append(tid)
            self._state_file(tid).parent.mkdir(exist_ok=True)  # the "script" saves a checkpoint
            self._state_file(tid).write_text(json.dumps(state))
            lr = self.trials[tid].config["lr"]
            loss = (math.log10(lr) + 1.0) ** 2 + 1.0 / state["epoch"]
            events = [TrialEvent(EventKind.RESULT, tid, t, {"epoch": state["epoch"], "loss": loss})]
            if state["epoch"] >= 12:
                events.append(TrialEvent(EventKind.COMPLETED, tid, t))
            else:
                self._schedule(tid)
            return events
        return []

    def now(self):
        return self.t


class Decisions(TunerCallback):
    def __init__(self):
        self.stopped: list[int] = []

    def on_trial_result(self, trial, result, decision):
        if decision == Decision.STOP:
            self.stopped.append(trial.trial_id)


def test_exploit_copies_the_checkpoint_of_a_top_trial(tmp_path):
    scheduler = build_scheduler("pbt", SPACE, "loss", "min", 3,
                                {"resource_attr": "epoch", "population_size": 4,
                                 "perturbation_interval": 2, "resample_probability": 0.0})
    backend = CheckpointBackend()
    backend.set_trial_root(tmp_path)
    decisions = Decisions()
    tuner = Tuner(scheduler, backend, StoppingCriterion(max_results=60), n_workers=4,
                  callbacks=[decisions])
    tuner.run()
    children = [t for t in tuner.trials.values()
                if t.checkpoint_from is not None and t.trial_id in backend.first_state]
    assert children, "no exploit happened"
    assert decisions.stopped  # bottom trials were stopped to make room
    for child in children:
        parent = tuner.trials[child.checkpoint_from]
        state = backend.first_state[child.trial_id]
        # the child's first epoch continued from the parent's checkpoint
        assert state["epoch"] == backend.copied_at[child.trial_id] > 0
        assert state["lineage"][-1] == parent.trial_id
        # explore: lr scaled by 0.8 or 1.2 (clipped), width too (rounded, moved by at least 1)
        ratio = child.config["lr"] / parent.config["lr"]
        assert ratio == pytest.approx(0.8) or ratio == pytest.approx(1.2) or \
            child.config["lr"] in (1e-3, 1.0)
        width = parent.config["width"]
        allowed = {min(max(w, 1), 10) for w in (round(width * 0.8), round(width * 1.2),
                                                width - 1, width + 1)}
        assert child.config["width"] in allowed
        SPACE.validate(child.config)
    # a child's reports continue the parent's epochs
    first = children[0]
    assert (backend.first_state[first.trial_id]["epoch"] + 1) >= 3


def test_explore_perturbs_within_bounds_and_resamples():
    space = ConfigSpace({"x": uniform(0.0, 1.0), "n": randint(1, 3), "c": choice(["a", "b", "c"]),
                         "o": ordinal([1, 2, 4]), "fixed": 7})
    pbt = PopulationBasedTraining(space, "loss", seed=0, resample_probability=0.0)
    config = {"x": 0.95, "n": 3, "c": "a", "o": 1, "fixed": 7}
    for _ in range(50):
        new = pbt.explore(config)
        space.validate(new)
        assert new["fixed"] == 7
        assert new["x"] in (pytest.approx(0.76), 1.0)  # 0.95 * 0.8, or 0.95 * 1.2 clipped
        assert new["n"] in (2, 3)
        assert new["c"] in ("a", "b") and new["o"] in (1, 2)
    only_x = PopulationBasedTraining(space, "loss", seed=0, hyperparameters=["x"])
    assert all(only_x.explore(config)["n"] == 3 for _ in range(20))
    resample = PopulationBasedTraining(space, "loss", seed=0, resample_probability=1.0)
    assert len({resample.explore(config)["x"] for _ in range(20)}) > 10
    with pytest.raises(ValueError, match="hyperparameters"):
        PopulationBasedTraining(space, "loss", hyperparameters=["nope"])


def test_bottom_quantile_is_replaced_by_a_copy_of_the_top():
    pbt = PopulationBasedTraining(SPACE, "loss", seed=0, population_size=4,
                                  perturbation_interval=1, quantile_fraction=0.25)
    trials = []
    for tid in range(4):
        suggestion = pbt.suggest(tid)
        trial = Trial(tid, suggestion.config)
        pbt.on_trial_add(trial)
        trials.append(trial)
    assert pbt.suggest(4) is None  # the population is full
    # each report is a check (interval 1); the bottom quarter (one trial) of those with a
    # score is replaced: 0 is alone, 1 and 2 are better than the ones before them
    for tid, loss in ((0, 1.0), (1, 0.5), (2, 0.2)):
        assert pbt.on_trial_result(trials[tid], TrialResult(tid, {"epoch": 1, "loss": loss}, 1.0)) \
            == Decision.CONTINUE
    assert pbt.on_trial_result(trials[3], TrialResult(3, {"epoch": 1, "loss": 9.0}, 1.0)) \
        == Decision.STOP
    suggestion = pbt.suggest(4)
    assert suggestion.checkpoint_from == 2  # the best member
    assert pbt.suggest(5) is None  # one slot was freed, one child fills it
    child = Trial(4, suggestion.config, checkpoint_from=2)
    pbt.on_trial_add(child)
    # the child starts at the parent's resource (1): no check before epoch 2, even if bad
    assert pbt.on_trial_result(child, TrialResult(4, {"epoch": 1.5, "loss": 99.0}, 2.0)) \
        == Decision.CONTINUE


@pytest.mark.parametrize("parent_end", ["max_t", "completed", "failed"])
def test_a_child_never_starts_from_a_parent_that_has_ended(parent_end):
    """The parent picked at the exploit check reaches max_t (or ends) before the child starts:
    the child copies another top member that can continue, or starts afresh."""
    for population, expected in ((2, None), (8, "other")):
        pbt = PopulationBasedTraining(SPACE, "loss", seed=0, population_size=population,
                                      perturbation_interval=1, quantile_fraction=0.25, max_t=3)
        trials = [Trial(t, pbt.suggest(t).config) for t in range(population)]
        for trial in trials:
            pbt.on_trial_add(trial)
        for trial in trials[:-1]:  # each better than those before it; the last one the worst
            metrics = {"epoch": 1, "loss": -float(trial.trial_id)}
            assert pbt.on_trial_result(trial, TrialResult(trial.trial_id, metrics, 1.0)) \
                == Decision.CONTINUE
        worst = trials[-1]
        assert pbt.on_trial_result(worst, TrialResult(worst.trial_id, {"epoch": 1, "loss": 99.0},
                                                      1.0)) == Decision.STOP
        parent = pbt._exploits[0][1]
        if parent_end == "max_t":
            metrics = {"epoch": 3, "loss": 0.0}
            assert pbt.on_trial_result(trials[parent], TrialResult(parent, metrics, 3.0)) \
                == Decision.STOP
        elif parent_end == "completed":
            pbt.on_trial_complete(trials[parent], None)
        else:
            pbt.on_trial_error(trials[parent])
        suggestion = pbt.suggest(population)
        if expected is None:  # no other member can continue: a fresh config
            assert suggestion.checkpoint_from is None
        else:
            assert suggestion.checkpoint_from not in (None, parent)
            assert pbt._can_continue(suggestion.checkpoint_from)


def test_a_report_without_the_resource_names_resource_attr():
    """A misspelled resource_attr is an error at the first report (before, PBT never exploited:
    random search, reported as PBT)."""
    pbt = build_scheduler("pbt", SPACE, "loss", "min", seed=0,
                          options={"resource_attr": "step", "population_size": 2})
    trial = Trial(0, pbt.suggest(0).config)
    pbt.on_trial_add(trial)
    with pytest.raises(ValueError, match=r"^spec\.scheduler_options\.resource_attr: trial 0 "
                                         r"reported \['epoch', 'loss'\] without a number 'step'"):
        pbt.on_trial_result(trial, TrialResult(0, {"epoch": 1, "loss": 0.5}, 1.0))
