"""Hyper-Tune's bracket choice on asynchronous Hyperband (after Li et al., 2022).

Multi-bracket ASHA where bracket b starts at rung level b. Instead of Hyperband's fixed share of
trials per bracket, new trials draw their bracket from a distribution learnt from the data: how
reliably does each rung level rank configurations the way the top level (`max_t`) does?

For each level l below the top, its ranking loss is the fraction of discordant pairs between the
values trials recorded at l and at the top (ties at l count half). The top level can only be
judged by predicting it from other configs: a leave-one-out nearest-neighbour regression on the
top-level data (few points early on, so it ranks badly at first, and better as data comes in).
Over `num_samples` bootstrap resamples of the trials that reached the top, the level with the
smallest loss wins; a level's weight is its share of wins, and bracket b gets the weight of its
first level (mixed with `exploration` of a uniform choice). Until `min_top_observations` trials
reached the top, Hyperband's shares are used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpo_core.schedulers.asha import ASHA
from hpo_core.schedulers.fidelity import FidelityOptions
from hpo_core.schedulers.rungs import rung_levels
from hpo_core.searchers.base import Searcher
from hpo_core.space import ConfigSpace
from hpo_core.trial import Trial


def discordance(reference: np.ndarray, values: np.ndarray, present: np.ndarray) -> float:
    """Share of pairs ordered differently by `values` than by `reference` (ties in `values`
    count half; pairs tied in `reference` or with a value missing are left out)."""
    ref = np.sign(reference[:, None] - reference[None, :])
    val = np.sign(values[:, None] - values[None, :])
    mask = (ref != 0) & present[:, None] & present[None, :]
    if not mask.any():
        return np.nan
    loss = np.where(val == 0, 0.5, (val != ref).astype(float))
    return float(loss[mask].mean())


def loo_knn_predictions(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Each point's value predicted by the mean of its k nearest other points."""
    n = len(x)
    if n < 2:
        return np.full(n, np.nan)
    dist = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=2)
    np.fill_diagonal(dist, np.inf)
    k = min(k, n - 1)
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return y[nearest].mean(axis=1)


class HyperTune(ASHA):
    """Asynchronous Hyperband with a learnt bracket distribution; ASHA's options, plus:

    Args:
        brackets: number of brackets (default: one per rung level).
        num_samples: bootstrap resamples per update of the distribution.
        min_top_observations: trials at `max_t` before the distribution is learnt.
        exploration: share of the uniform distribution mixed into the learnt one.
        num_neighbours: k of the nearest-neighbour predictor of the top level.
    """

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        metric: str | Sequence[str],
        mode: str | Sequence[str] = "min",
        seed: int | None = None,
        *,
        fidelity: FidelityOptions,
        brackets: int | None = None,
        num_samples: int = 50,
        min_top_observations: int = 5,
        exploration: float = 0.1,
        num_neighbours: int = 5,
        searcher: str | Searcher = "random",
        searcher_options: Mapping[str, Any] | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
    ):
        if brackets is None:
            brackets = len(rung_levels(fidelity.grace_period, fidelity.reduction_factor,
                                       fidelity.max_t))
        super().__init__(config_space, metric, mode, seed, fidelity=fidelity, brackets=brackets,
                         searcher=searcher, searcher_options=searcher_options,
                         points_to_evaluate=points_to_evaluate)
        if num_samples < 1:
            raise ValueError(f"num_samples: must be at least 1, got {num_samples}")
        if min_top_observations < 3:
            raise ValueError(f"min_top_observations: must be at least 3, got {min_top_observations}")
        if not 0 <= exploration <= 1:
            raise ValueError(f"exploration: must be in [0, 1], got {exploration}")
        if num_neighbours < 1:
            raise ValueError(f"num_neighbours: must be at least 1, got {num_neighbours}")
        self.num_samples = int(num_samples)
        self.min_top_observations = int(min_top_observations)
        self.exploration = float(exploration)
        self.num_neighbours = int(num_neighbours)
        self._encoded: dict[int, list[float]] = {}
        self._distribution: list[float] | None = None
        self._fitted_on = 0  # number of top-level values the distribution was learnt from

    def on_trial_add(self, trial: Trial) -> None:
        self._encoded[trial.trial_id] = self.config_space.encode(trial.config).tolist()
        super().on_trial_add(trial)

    def level_values(self) -> list[dict[int, float]]:
        """Per level of the first bracket: {trial_id: value recorded there}, over all brackets."""
        values: list[dict[int, float]] = [{} for _ in self.levels[0]]
        for b, bracket in enumerate(self.rungs):
            for i, rung in enumerate(bracket):
                values[b + i].update(rung.values)
        return values

    def level_weights(self) -> np.ndarray | None:
        """Each level's share of bootstrap wins (lowest ranking loss vs the top), or None."""
        values = self.level_values()
        top = values[-1]
        trials = [t for t in sorted(top) if t in self._encoded]
        if len(trials) < self.min_top_observations:
            return None
        y = np.array([top[t] for t in trials])
        x = np.array([self._encoded[t] for t in trials])
        columns = [np.array([values[j].get(t, np.nan) for t in trials]) for j in range(len(values) - 1)]
        columns.append(loo_knn_predictions(x, y, self.num_neighbours))
        wins = np.zeros(len(values))
        for _ in range(self.num_samples):
            sample = self.rng.integers(len(trials), size=len(trials))
            losses = np.array([
                discordance(y[sample], col[sample], ~np.isnan(col[sample])) for col in columns
            ])
            losses = np.where(np.isnan(losses), np.inf, losses)
            if np.isinf(losses).all():
                continue
            winners = np.flatnonzero(losses == losses.min())
            wins[winners] += 1.0 / len(winners)
        return wins / wins.sum() if wins.sum() > 0 else None

    def bracket_probabilities(self) -> np.ndarray:
        num_top = sum(len(bracket[-1]) for bracket in self.rungs)
        if self._distribution is None or num_top != self._fitted_on:
            weights = self.level_weights()
            self._fitted_on = num_top
            if weights is None:
                self._distribution = None
            else:
                theta = weights[: len(self.levels)]
                if theta.sum() <= 0:
                    self._distribution = None
                else:
                    theta = theta / theta.sum()
                    uniform = np.full(len(theta), 1.0 / len(theta))
                    self._distribution = ((1 - self.exploration) * theta
                                          + self.exploration * uniform).tolist()
        if self._distribution is None:
            return super().bracket_probabilities()
        return np.asarray(self._distribution)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(),
                "encoded": [[t, v] for t, v in self._encoded.items()],
                "distribution": self._distribution, "fitted_on": self._fitted_on}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._encoded = {int(t): list(v) for t, v in state["encoded"]}
        self._distribution = state["distribution"]
        self._fitted_on = int(state["fitted_on"])
