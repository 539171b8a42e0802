"""Synchronous successive halving (Jamieson & Talwalkar 2016; Hyperband's inner loop).

A bracket starts `n` configs at its first rung level. Every trial reaching the level of its
rung is paused there. Once *all* trials of the rung are in (a failed trial, or one whose script
ended before the level, counts as in, without a value, so a rung never waits for it forever),
the best `floor(n_i / eta)` are promoted to the next level and resumed; at the last level
(`max_t`) trials are stopped as done.

While a bracket waits for its rung to fill, it has nothing to hand out; the scheduler then opens
another bracket, so free workers stay busy. `suggest()` resumes promoted trials first (oldest
bracket first), then starts new configs in the oldest bracket that still has some to start.
`SyncHyperband` (hyperband.py) is this scheduler with a different bracket shape each time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from hpo_core.schedulers.base import Scheduler
from hpo_core.schedulers.fidelity import FidelityOptions
from hpo_core.schedulers.rungs import bracket_levels, rank_by_value, resource_of
from hpo_core.searchers.base import Searcher
from hpo_core.searchers.registry import searcher_from_option
from hpo_core.space import ConfigSpace, as_config_space
from hpo_core.trial import Decision, Trial, TrialResult, TrialSuggestion


def bracket_sizes(num_levels: int, max_levels: int, reduction_factor: float) -> list[int]:
    """Trials per rung of a Hyperband bracket with `num_levels` of the `max_levels` levels.

    The bracket has s = num_levels - 1 halvings and starts
    n = ceil(max_levels / num_levels * eta**s) trials; rung i keeps floor(n / eta**i) (>= 1).
    """
    s = num_levels - 1
    n = math.ceil(max_levels / num_levels * reduction_factor**s - 1e-9)
    return [max(1, math.floor(n / reduction_factor**i + 1e-9)) for i in range(num_levels)]


class SHBracket:
    """One synchronous successive-halving bracket: its levels, rung sizes and current rung."""

    def __init__(self, levels: Sequence[float], sizes: Sequence[int]):
        self.levels = list(levels)
        self.sizes = list(sizes)
        self.rung = 0
        self.trials: list[int] = []  # trials of the current rung
        self.values: dict[int, float] = {}  # their values at the current level
        self.dropped: set[int] = set()  # failed or ended before the level: in, without a value
        self.to_resume: list[int] = []  # promoted, not yet resumed

    @property
    def to_start(self) -> int:
        """New configs this bracket still needs."""
        return self.sizes[0] - len(self.trials) if self.rung == 0 else 0

    @property
    def level(self) -> float:
        return self.levels[self.rung]

    @property
    def is_last_rung(self) -> bool:
        return self.rung == len(self.levels) - 1

    @property
    def is_done(self) -> bool:
        return self.rung >= len(self.levels)

    def rung_is_full(self) -> bool:
        return self.to_start == 0 and all(
            t in self.values or t in self.dropped for t in self.trials
        )

    def advance(self, ranked: Sequence[int]) -> None:
        """Promote the first `sizes[rung + 1]` of `ranked` (the valued trials, best first)."""
        if self.is_last_rung or not ranked:
            self.rung = len(self.levels)
            return
        self.rung += 1
        self.trials = list(ranked[: self.sizes[self.rung]])
        self.to_resume = list(self.trials)
        self.values, self.dropped = {}, set()

    def to_json(self) -> dict[str, Any]:
        return {"levels": self.levels, "sizes": self.sizes, "rung": self.rung,
                "trials": self.trials, "values": [[t, v] for t, v in self.values.items()],
                "dropped": sorted(self.dropped), "to_resume": self.to_resume}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SHBracket:
        bracket = cls(data["levels"], data["sizes"])
        bracket.rung = int(data["rung"])
        bracket.trials = [int(t) for t in data["trials"]]
        bracket.values = {int(t): float(v) for t, v in data["values"]}
        bracket.dropped = {int(t) for t in data["dropped"]}
        bracket.to_resume = [int(t) for t in data["to_resume"]]
        return bracket


class SyncSuccessiveHalving(Scheduler):
    """Synchronous successive halving, bracket after bracket (several at once if workers idle).

    Args:
        fidelity: max_t, resource_attr, grace_period, reduction_factor, max_resource_attr
            (see `FidelityOptions`; max_resource_attr is set to the level of a trial's rung:
            how far the segment about to run should train).
        searcher: a searcher registry name (see `hpo_core.searchers.registry`) or a Searcher.
        searcher_options: options of the searcher when it is given by name.
        points_to_evaluate: configs to try first (when the searcher is given by name).

    A bracket with s + 1 levels starts eta**s trials. The searcher is fed as in `ASHA`. Subclass
    hook: `_bracket_shape(index)` gives the levels and rung sizes of the index-th bracket opened.
    """

    max_t: float  # set from `fidelity`: never None here
    resource_attr: str
    may_pause = True

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        metric: str | Sequence[str],
        mode: str | Sequence[str] = "min",
        seed: int | None = None,
        *,
        fidelity: FidelityOptions,
        searcher: str | Searcher = "random",
        searcher_options: Mapping[str, Any] | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
    ):
        config_space = as_config_space(config_space)
        super().__init__(config_space, metric, mode, seed)
        self.max_resource_attr = fidelity.entry_in(config_space)
        self._configs: dict[int, dict[str, Any]] = {}  # kept with max_resource_attr
        self.max_t = fidelity.max_t
        self.resource_attr = fidelity.resource_attr
        self.grace_period = fidelity.grace_period
        self.reduction_factor = fidelity.reduction_factor
        self.searcher = searcher_from_option(searcher, config_space, seed, searcher_options,
                                              points_to_evaluate)
        #: the rung levels of every bracket shape this scheduler may open (longest first)
        self.all_levels = bracket_levels(self.grace_period, self.reduction_factor, self.max_t, 1)
        self.brackets: dict[int, SHBracket] = {}  # open brackets by index, oldest first
        self._num_opened = 0
        self._bracket_of: dict[int, int] = {}

    def _bracket_shape(self, index: int) -> tuple[list[float], list[int]]:
        """Levels and rung sizes of the `index`-th bracket opened (here: always the longest)."""
        levels = self.all_levels[0]
        return levels, bracket_sizes(len(levels), len(levels), self.reduction_factor)

    def _open_bracket(self) -> int:
        index = self._num_opened
        self.brackets[index] = SHBracket(*self._bracket_shape(index))
        self._num_opened += 1
        return index

    # -- the Scheduler contract ----------------------------------------------------------------
    def suggest(self, trial_id: int) -> TrialSuggestion | None:
        for bracket in self.brackets.values():
            if bracket.to_resume:
                tid = bracket.to_resume.pop(0)
                if self.max_resource_attr is None:
                    return TrialSuggestion.resume(tid)
                self._configs[tid] = self._with_level(self._configs[tid], bracket.level)
                return TrialSuggestion.resume(tid, self._configs[tid])
        config = self.searcher.suggest(trial_id)  # for the oldest bracket with room, or a new one
        if config is None:
            return None
        if self.max_resource_attr is not None:
            room = next((b for b in self.brackets.values() if b.to_start > 0), None)
            level = room.level if room is not None else \
                self._bracket_shape(self._num_opened)[0][0]
            config = self._with_level(config, level)
        return TrialSuggestion.start(config)

    def _with_level(self, config: Mapping[str, Any], level: float) -> dict[str, Any]:
        value = int(level) if float(level).is_integer() else level
        assert self.max_resource_attr is not None  # only called when the scheduler sets it
        return {**config, self.max_resource_attr: value}

    def on_trial_add(self, trial: Trial) -> None:
        if self.max_resource_attr is not None:
            self._configs[trial.trial_id] = dict(trial.config)
        index = next((i for i, b in self.brackets.items() if b.to_start > 0), None)
        if index is None:
            index = self._open_bracket()
        self.brackets[index].trials.append(trial.trial_id)
        self._bracket_of[trial.trial_id] = index
        self.searcher.on_trial_start(trial.trial_id, trial.config)

    def on_trial_result(self, trial: Trial, result: TrialResult) -> Decision:
        tid = trial.trial_id
        index = self._bracket_of.get(tid)
        if index is None:  # not a trial of an open bracket
            return Decision.STOP
        bracket = self.brackets[index]
        resource = resource_of(result.metrics, self.resource_attr, tid)
        value = self.objective(result.metrics)
        if value is None:
            return Decision.CONTINUE
        reached = resource >= bracket.level or resource >= self.max_t
        if reached or self.searcher.uses_intermediate_results:
            self.searcher.on_result(tid, trial.config, value, resource, metrics=result.metrics)
        if not reached:
            return Decision.CONTINUE
        bracket.values[tid] = value
        decision = Decision.STOP if bracket.is_last_rung else Decision.PAUSE
        self.searcher.on_trial_end(tid)
        self._settle(index)
        return decision

    def on_trial_complete(self, trial: Trial, result: TrialResult | None) -> None:
        """The script ended before its rung level: in the rung, without a value."""
        value = self.objective(result.metrics) if result is not None else None
        if result is not None and value is not None \
                and not self.searcher.uses_intermediate_results:
            resource = result.metrics.get(self.resource_attr)
            self.searcher.on_result(trial.trial_id, trial.config, value, resource,
                                    metrics=result.metrics)
        self.searcher.on_trial_end(trial.trial_id)
        self._drop(trial.trial_id)

    def on_trial_error(self, trial: Trial) -> None:
        self.searcher.on_error(trial.trial_id)
        self._drop(trial.trial_id)

    def _drop(self, trial_id: int) -> None:
        index = self._bracket_of.get(trial_id)
        if index is not None:
            self.brackets[index].dropped.add(trial_id)
            self._settle(index)

    def _settle(self, index: int) -> None:
        """Promote a full rung; close the bracket when its last rung is full."""
        bracket = self.brackets[index]
        if not bracket.rung_is_full():
            return
        previous = bracket.trials
        bracket.advance(rank_by_value(list(bracket.values.items())))
        for tid in previous:
            if bracket.is_done or tid not in bracket.trials:
                self._bracket_of.pop(tid, None)
        if bracket.is_done:
            del self.brackets[index]

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "searcher": self.searcher.state_dict(),
            "brackets": [[i, b.to_json()] for i, b in self.brackets.items()],
            "num_opened": self._num_opened,
            "bracket_of": [[t, i] for t, i in self._bracket_of.items()],
            "configs": {str(t): c for t, c in self._configs.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.searcher.load_state_dict(state["searcher"])
        self.brackets = {int(i): SHBracket.from_json(b) for i, b in state["brackets"]}
        self._num_opened = int(state["num_opened"])
        self._bracket_of = {int(t): int(i) for t, i in state["bracket_of"]}
        self._configs = {int(t): dict(c) for t, c in state.get("configs", {}).items()}
