"""MO-ASHA: asynchronous successive halving on several metrics (Schmucker et al., 2021).

Rungs record each trial's vector of objectives; a trial continues past a rung if it is in the
top 1/eta of the rung's trials ordered by non-dominated sorting, and within a front either by an
epsilon-net (`rank_by="epsnet"`, the paper's choice: a prefix covers the front evenly) or by
crowding distance (`rank_by="nsga2"`).

A decision does not sort the rung again: each rung keeps its fronts up to date point by point
(`hpo_core.pareto_fronts`), so a new value finds its front by bisection, and only when the top
1/eta ends inside that front is the front itself ordered (for the first places it needs). The
fronts are kept exact only as far as they hold the top 1/eta; a value behind them is stopped
after one check (the rest of the rung is sorted lazily, when the top 1/eta grows into it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpo_core.multiobjective import (
    crowding_distance,
    epsilon_net_front,
    epsilon_net_order,
    nsga2_order,
)
from hpo_core.pareto_fronts import ParetoFronts
from hpo_core.schedulers.asha import ASHA
from hpo_core.schedulers.fidelity import FidelityOptions
from hpo_core.schedulers.rungs import num_continuing
from hpo_core.searchers.base import Searcher
from hpo_core.space import ConfigSpace
from hpo_core.trial import Decision, Trial

RANKINGS = {"epsnet": epsilon_net_order, "nsga2": nsga2_order}


class MOASHA(ASHA):
    """ASHA ranking rungs by Pareto fronts; see `ASHA` for the fidelity options.

    Args:
        rank_by: "epsnet" or "nsga2", the order within a Pareto front.
    """

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        metric: str | Sequence[str],
        mode: str | Sequence[str] = "min",
        seed: int | None = None,
        *,
        fidelity: FidelityOptions,
        brackets: int = 1,
        rank_by: str = "epsnet",
        searcher: str | Searcher = "random",
        searcher_options: Mapping[str, Any] | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
    ):
        if rank_by not in RANKINGS:
            raise ValueError(f"rank_by: expected one of {sorted(RANKINGS)}, got {rank_by!r}")
        super().__init__(config_space, metric, mode, seed, fidelity=fidelity, brackets=brackets,
                         searcher=searcher, searcher_options=searcher_options,
                         points_to_evaluate=points_to_evaluate)
        self.rank_by = rank_by
        self._fronts: dict[tuple[int, int], ParetoFronts] = {}  # per rung, built lazily

    @property
    def comparisons(self) -> int:
        """Point-to-point comparisons made by the rung decisions so far (a work count)."""
        return sum(f.comparisons for f in self._fronts.values())

    def _add_to_fronts(self, bracket: int, rung: int, trial_id: int, keep: int
                       ) -> tuple[ParetoFronts, int]:
        """The fronts of a rung with `trial_id`'s value (just recorded) added; its front.
        The fronts are exact as far as the first `keep` points (all a decision asks)."""
        rung_ = self.rungs[bracket][rung]
        fronts = self._fronts.get((bracket, rung))
        if fronts is None or trial_id in fronts or len(fronts) + 1 != len(rung_):
            value = rung_.values[trial_id]  # first use, or the rung was reloaded
            fronts = ParetoFronts(len(value))
            for tid, other in rung_.entries():
                if tid != trial_id:
                    fronts.add(tid, other, cover=0)  # sorted when `keep` asks for them
            self._fronts[bracket, rung] = fronts
        return fronts, fronts.add(trial_id, rung_.values[trial_id], cover=keep)

    def _on_rung(self, trial: Trial, bracket: int, rung: int) -> Decision:
        tid = trial.trial_id
        keep = num_continuing(len(self.rungs[bracket][rung]), self.reduction_factor)
        fronts, front = self._add_to_fronts(bracket, rung, tid, keep)
        ahead = fronts.before(front)
        if ahead >= keep:
            return Decision.STOP
        if ahead + fronts.size(front) <= keep:
            return Decision.CONTINUE
        # the top 1/eta ends inside this front: order the front, as far as needed
        value = self.rungs[bracket][rung].values[tid]
        if (self.rank_by == "epsnet" and fronts.count_equal(front, value) > 1
                and all(map(math.isfinite, value))):
            # an equal point arrived before: the epsilon-net puts this one after every
            # distinct point and the earlier equals, last in its front, so past the cut
            return Decision.STOP
        places = keep - ahead
        ids, values = fronts.members(front)
        if self.rank_by == "epsnet":  # ordered until the new trial's place is known
            order = epsilon_net_front(values, fronts.lower, fronts.upper, places,
                                      until=ids.index(tid))
            fronts.count(len(ids) * len(order))
        else:
            order = np.argsort(-crowding_distance(values), kind="stable")[:places]
            fronts.count(len(ids) * max(1, int(np.log2(len(ids)))))
        return Decision.CONTINUE if tid in {ids[i] for i in order} else Decision.STOP

    def _value(self, metrics: Mapping[str, Any]) -> Any:
        return self.objective_values(metrics)

    def _rank(self, entries: Sequence[tuple[int, Any]]) -> list[int]:
        if not entries:
            return []
        order = RANKINGS[self.rank_by]([v for _, v in entries])
        return [entries[i][0] for i in order]
