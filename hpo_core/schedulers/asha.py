"""ASHA, asynchronous successive halving (Li et al. 2020), stopping variant.

A trial that reaches a rung level records its value there and continues only if the value is in
the top 1/eta of all values recorded at that rung so far (`ceil(n / eta)` of the `n` values, its
own included; equal values rank in arrival order); otherwise it is stopped. A trial that reaches
`max_t` is stopped as done. With `brackets > 1` (Hyperband-style), bracket k starts at
`grace_period * eta**k`; each new trial draws its bracket at random with Hyperband's share of
trials per bracket (see `rungs.hyperband_bracket_weights`).

`ASHA` is also the base of the asynchronous rung schedulers (promotion ASHA, MOBSTER,
Hyper-Tune, PASHA, MO-ASHA); with the `kde` searcher it is asynchronous BOHB, as in Syne Tune
(the method `bohb` of `hpo_core.registry`). Hooks for subclasses:

* `_choose_bracket(trial_id)`: the bracket of a new trial (default: drawn from
  `bracket_probabilities()`);
* `_value(metrics)`: what a rung records (default: the objective to minimize; MO: a list);
* `_rank(entries)`: trial ids of a rung best first (default: by value);
* `_on_rung(trial, bracket, rung)`: the decision for a trial reaching a rung below `max_t`;
* `_feed_searcher(trial, metrics, resource)`: how a result reaches the searcher;
* `_first_segment_end(trial_id)`: how far a new trial trains before its first decision point
  that needs a new segment (stopping: `max_t`; pause/resume: its first rung level).

`max_resource_attr` (Syne Tune's convention) names a config entry, fixed in the config space at
the maximum resource, that the scheduler sets in each trial's config to the resource its next
segment should train to, so a script can end its segment there by itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpo_core.schedulers.base import Scheduler
from hpo_core.schedulers.fidelity import FidelityOptions
from hpo_core.schedulers.rungs import (
    Rung,
    bracket_levels,
    hyperband_bracket_weights,
    num_continuing,
    rank_by_value,
    resource_of,
)
from hpo_core.searchers.base import Searcher
from hpo_core.searchers.registry import searcher_from_option
from hpo_core.space import ConfigSpace, as_config_space
from hpo_core.trial import Decision, Trial, TrialResult, TrialSuggestion


class ASHA(Scheduler):
    """Asynchronous successive halving that stops trials outside the top 1/eta of a rung.

    Args:
        fidelity: max_t, resource_attr, grace_period, reduction_factor, max_resource_attr
            (see `FidelityOptions`); a trial reaching max_t is done.
        brackets: number of brackets (1: plain ASHA; more: asynchronous Hyperband).
        searcher: a searcher registry name (see `hpo_core.searchers.registry`) or a Searcher.
        searcher_options: options of the searcher when it is given by name.
        points_to_evaluate: configs to try first (when the searcher is given by name).

    The searcher gets `on_result` at each rung level reached (every report if its
    `uses_intermediate_results` is True), `on_trial_start` for a new trial, `on_trial_end` when a
    trial stops, pauses or completes, and `on_error` when it fails.
    """

    max_t: float  # set from `fidelity`: never None here
    resource_attr: str

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        metric: str | Sequence[str],
        mode: str | Sequence[str] = "min",
        seed: int | None = None,
        *,
        fidelity: FidelityOptions,
        brackets: int = 1,
        searcher: str | Searcher = "random",
        searcher_options: Mapping[str, Any] | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
    ):
        config_space = as_config_space(config_space)
        super().__init__(config_space, metric, mode, seed)
        self.max_resource_attr = fidelity.entry_in(config_space)
        self.max_t = fidelity.max_t
        self.resource_attr = fidelity.resource_attr
        self.grace_period = fidelity.grace_period
        self.reduction_factor = fidelity.reduction_factor
        #: rung levels per bracket; `levels[b][-1] == max_t`
        self.levels = bracket_levels(self.grace_period, self.reduction_factor, self.max_t,
                                     brackets)
        self.rungs: list[list[Rung]] = [[Rung(level) for level in lv] for lv in self.levels]
        self.searcher = searcher_from_option(searcher, config_space, seed, searcher_options,
                                              points_to_evaluate)
        self._bracket_of: dict[int, int] = {}
        self._next_rung: dict[int, int] = {}  # index of the next rung a trial may reach
        self._unfed: set[int] = set()  # trials whose last report did not reach the searcher
        self._planned: dict[int, int] = {}  # bracket drawn at suggest (for max_resource_attr)
        self._configs: dict[int, dict[str, Any]] = {}  # kept with max_resource_attr

    # -- hooks ---------------------------------------------------------------------------------
    def bracket_probabilities(self) -> np.ndarray:
        """Probability of each bracket for a new trial (Hyperband's shares)."""
        return hyperband_bracket_weights(self.levels, self.reduction_factor)

    def _choose_bracket(self, trial_id: int) -> int:
        """The bracket of new trial `trial_id`."""
        if len(self.levels) == 1:
            return 0
        return int(self.rng.choice(len(self.levels), p=self.bracket_probabilities()))

    def _value(self, metrics: Mapping[str, Any]) -> Any:
        """The value a rung records for a report (None: ignore the report)."""
        return self.objective(metrics)

    def _rank(self, entries: Sequence[tuple[int, Any]]) -> list[int]:
        """Trial ids of a rung's (trial_id, value) entries, best first."""
        return rank_by_value(entries)

    def _on_rung(self, trial: Trial, bracket: int, rung: int) -> Decision:
        """The decision for `trial`, just recorded at rung `rung` (below max_t) of `bracket`."""
        rung_ = self.rungs[bracket][rung]
        keep = num_continuing(len(rung_), self.reduction_factor)
        if rung_.is_sorted and self._ranks_by_value:
            return Decision.CONTINUE if rung_.position(trial.trial_id) < keep else Decision.STOP
        top = self._rank(rung_.entries())[:keep]
        return Decision.CONTINUE if trial.trial_id in top else Decision.STOP

    @property
    def _ranks_by_value(self) -> bool:
        """True unless a subclass ranks rungs its own way (then `_rank` is always used)."""
        return type(self)._rank is ASHA._rank

    def _feed_searcher(self, trial: Trial, metrics: Mapping[str, Any],
                       resource: float | None) -> None:
        """Hand one report to the searcher (its objective value, at `resource`)."""
        value = self.objective(metrics)
        if value is not None:
            self.searcher.on_result(trial.trial_id, trial.config, value, resource,
                                    metrics=metrics)

    # -- the Scheduler contract ----------------------------------------------------------------
    def _first_segment_end(self, trial_id: int) -> float:
        """The resource a new trial trains to before it needs a new segment (stopping: max_t)."""
        return self.max_t

    def _with_segment_end(self, config: Mapping[str, Any], level: float) -> dict[str, Any]:
        """`config` with `max_resource_attr` set to `level` (as an int when it is whole)."""
        value = int(level) if float(level).is_integer() else level
        assert self.max_resource_attr is not None  # only called when the scheduler sets it
        return {**config, self.max_resource_attr: value}

    def suggest(self, trial_id: int) -> TrialSuggestion | None:
        config = self.searcher.suggest(trial_id)
        if config is None:
            return None
        if self.max_resource_attr is not None:
            config = self._with_segment_end(config, self._first_segment_end(trial_id))
        return TrialSuggestion.start(config)

    def on_trial_add(self, trial: Trial) -> None:
        planned = self._planned.pop(trial.trial_id, None)
        self._bracket_of[trial.trial_id] = (self._choose_bracket(trial.trial_id)
                                            if planned is None else planned)
        if self.max_resource_attr is not None:
            self._configs[trial.trial_id] = dict(trial.config)
        self._next_rung[trial.trial_id] = 0
        self.searcher.on_trial_start(trial.trial_id, trial.config)

    def on_trial_result(self, trial: Trial, result: TrialResult) -> Decision:
        tid = trial.trial_id
        if tid not in self._bracket_of:  # not announced by on_trial_add: adopt it
            self.on_trial_add(trial)
        resource = resource_of(result.metrics, self.resource_attr, tid)
        value = self._value(result.metrics)
        if value is None:
            return Decision.CONTINUE
        bracket = self._bracket_of[tid]
        levels = self.levels[bracket]
        reached = [j for j in range(self._next_rung[tid], len(levels)) if levels[j] <= resource]
        if resource >= self.max_t:
            reached = [len(levels) - 1]
        if not reached:
            if self.searcher.uses_intermediate_results:
                self._feed_searcher(trial, result.metrics, resource)
            else:
                self._unfed.add(tid)
            return Decision.CONTINUE
        rung = reached[-1]  # a report that skips levels is recorded at the highest one
        self._next_rung[tid] = rung + 1
        self.rungs[bracket][rung].add(tid, value)
        self._feed_searcher(trial, result.metrics, resource)
        self._unfed.discard(tid)
        decision = Decision.STOP if rung == len(levels) - 1 else self._on_rung(trial, bracket, rung)
        if decision != Decision.CONTINUE:
            self.searcher.on_trial_end(tid)
        return decision

    def on_trial_complete(self, trial: Trial, result: TrialResult | None) -> None:
        if result is not None and trial.trial_id in self._unfed:
            resource = result.metrics.get(self.resource_attr)
            self._feed_searcher(trial, result.metrics, resource)
        self._unfed.discard(trial.trial_id)
        self.searcher.on_trial_end(trial.trial_id)

    def on_trial_error(self, trial: Trial) -> None:
        self._unfed.discard(trial.trial_id)
        self.searcher.on_error(trial.trial_id)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "searcher": self.searcher.state_dict(),
            "rungs": [[rung.to_json() for rung in bracket] for bracket in self.rungs],
            "trials": [[t, self._bracket_of[t], self._next_rung[t]] for t in self._bracket_of],
            "unfed": sorted(self._unfed),
            "planned": [[t, b] for t, b in self._planned.items()],
            "configs": {str(t): c for t, c in self._configs.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.searcher.load_state_dict(state["searcher"])
        if len(state["rungs"]) != len(self.rungs):
            raise ValueError(f"brackets: the state has {len(state['rungs'])} brackets, "
                             f"this scheduler {len(self.rungs)}")
        self.rungs = [[Rung.from_json(r) for r in bracket] for bracket in state["rungs"]]
        self._bracket_of = {int(t): int(b) for t, b, _ in state["trials"]}
        self._next_rung = {int(t): int(j) for t, _, j in state["trials"]}
        self._unfed = {int(t) for t in state["unfed"]}
        self._planned = {int(t): int(b) for t, b in state.get("planned", [])}
        self._configs = {int(t): dict(c) for t, c in state.get("configs", {}).items()}
