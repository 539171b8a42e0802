"""ASHA, promotion variant (pause and resume; Li et al. 2020, Algorithm 2).

A trial reaching a rung level below `max_t` records its value there and is paused. When a worker
is free, `suggest()` resumes a paused trial that is among the top `floor(n / eta)` of the `n`
values of its rung and was not promoted from it before, looking at the highest rung levels
first (over all brackets, lower bracket first on equal levels); if there is none, a new config
starts.

With `max_resource_attr`, a new trial's config says to train to its first rung level, and a
promoted one's to the next level, so a script can end each segment there by itself.
"""

from __future__ import annotations

import itertools

from hpo_core.schedulers.asha import ASHA
from hpo_core.schedulers.rungs import num_promotable
from hpo_core.trial import Decision, Trial, TrialSuggestion


class PromotionASHA(ASHA):
    """ASHA that pauses trials at each rung and promotes (resumes) the top 1/eta.

    Options are those of `ASHA`. Every trial recorded at a rung below `max_t` is paused there
    until promoted from it, so a rung's un-promoted entries are exactly its paused trials.
    Subclass hooks, besides ASHA's: `_promotion_candidates(bracket, rung)` and
    `_find_promotion()`.
    """

    may_pause = True

    def _on_rung(self, trial: Trial, bracket: int, rung: int) -> Decision:
        return Decision.PAUSE

    def _first_segment_end(self, trial_id: int) -> float:
        bracket = self._planned[trial_id] = self._choose_bracket(trial_id)
        return self.levels[bracket][0]

    def _promotion_candidates(self, bracket: int, rung: int) -> list[int]:
        """Trials of a rung in its top floor(n/eta) not yet promoted from it, best first."""
        rung_ = self.rungs[bracket][rung]
        size = num_promotable(len(rung_), self.reduction_factor)
        if rung_.is_sorted and self._ranks_by_value:
            top = list(itertools.islice(rung_.ranked(), size))
        else:
            top = self._rank(rung_.entries())[:size]
        return [t for t in top if t not in rung_.promoted]

    def _find_promotion(self) -> tuple[int, int, int] | None:
        """(bracket, rung, trial_id) to promote next, or None."""
        rungs = [(self.levels[b][j], b, j) for b in range(len(self.levels))
                 for j in range(len(self.levels[b]) - 1)]
        for _, b, j in sorted(rungs, key=lambda r: (-r[0], r[1])):
            candidates = self._promotion_candidates(b, j)
            if candidates:
                return b, j, candidates[0]
        return None

    def suggest(self, trial_id: int) -> TrialSuggestion | None:
        promotion = self._find_promotion()
        if promotion is None:
            return super().suggest(trial_id)
        bracket, rung, tid = promotion
        self.rungs[bracket][rung].promoted.add(tid)
        if self.max_resource_attr is None:
            return TrialSuggestion.resume(tid)
        config = self._with_segment_end(self._configs[tid], self.levels[bracket][rung + 1])
        self._configs[tid] = config
        return TrialSuggestion.resume(tid, config)
