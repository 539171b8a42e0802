"""BORE: Bayesian optimization by density-ratio estimation (Tiao et al., 2021).

Observations are labelled good (value at or below the `gamma` quantile) or bad, a classifier
learns P(good | config), and its maximizer is proposed: for a well-calibrated classifier this is
the maximizer of expected improvement's density-ratio form. The classifier is a small MLP
(`hpo_core.models.mlp`); it is maximized over random configs plus local moves around the best
observed ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpo_core.models.encoding import EncodedSpace
from hpo_core.models.mlp import MLPClassifier
from hpo_core.models.optimize import maximize_acquisition
from hpo_core.searchers.base import Searcher
from hpo_core.space import ConfigSpace


class BORESearcher(Searcher):
    """Classifier-based Bayesian optimization.

    Args:
        gamma: share of observations labelled good.
        num_init_random: random configs before the classifier is used (default: number of
            hyperparameters + 1, at least 5).
        num_candidates: configs scored per proposal (half random, half local moves).
        random_fraction: share of proposals that are random.
    """

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        seed: int | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
        gamma: float = 0.25,
        num_init_random: int | None = None,
        num_candidates: int = 1000,
        random_fraction: float = 0.0,
    ):
        super().__init__(config_space, seed, points_to_evaluate)
        if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not 0 < gamma < 1:
            raise ValueError(f"gamma: must be a number in (0, 1), got {gamma!r}")
        if isinstance(random_fraction, bool) or not isinstance(random_fraction, int | float) \
                or not 0 <= random_fraction <= 1:
            raise ValueError(f"random_fraction: must be in [0, 1], got {random_fraction!r}")
        if num_init_random is None:
            num_init_random = max(5, len(self.config_space) + 1)
        for name, value, low in (("num_init_random", num_init_random, 2),
                                 ("num_candidates", num_candidates, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: must be an integer >= {low}, got {value!r}")
        self.gamma = float(gamma)
        self.num_init_random = num_init_random
        self.num_candidates = num_candidates
        self.random_fraction = float(random_fraction)
        self._encoded = EncodedSpace(self.config_space)
        self._observed: dict[int, tuple[dict[str, Any], float]] = {}
        self._pending: set[int] = set()
        self._seen: set[str] = set()

    def suggest(self, trial_id: int) -> dict[str, Any] | None:
        config = super().suggest(trial_id)
        if config is not None:
            self._seen.add(self.config_space.config_key(config))
        return config

    def on_trial_start(self, trial_id: int, config: Mapping[str, Any]) -> None:
        self._pending.add(trial_id)
        self._seen.add(self.config_space.config_key(config))

    def on_trial_end(self, trial_id: int) -> None:
        self._pending.discard(trial_id)

    def on_result(self, trial_id: int, config: Mapping[str, Any], value: float,
                  resource: float | None = None,
                  metrics: Mapping[str, Any] | None = None) -> None:
        if math.isfinite(value):
            self._observed[trial_id] = (dict(config), float(value))
            self._seen.add(self.config_space.config_key(config))

    def _suggest(self, trial_id: int) -> dict[str, Any] | None:
        n = len(self._observed)
        if (self._encoded.dim == 0 or n < 2 or n + len(self._pending) < self.num_init_random
                or self.rng.random() < self.random_fraction):
            return self._random_config()
        configs = [c for c, _ in self._observed.values()]
        values = np.array([v for _, v in self._observed.values()])
        X = self._encoded.encode(configs)
        good = values <= np.quantile(values, self.gamma)
        if good.all():  # all tied: nothing to tell apart
            return self._random_config()
        classifier = MLPClassifier().fit(X, good, self.rng)
        half = self.num_candidates // 2
        ranked = maximize_acquisition(lambda Z, _: (classifier.logit(Z), None), self._encoded,
                                      self.rng, anchors=X[np.argsort(values, kind="stable")[:5]],
                                      num_random=half, num_local=self.num_candidates - half,
                                      maxiter=0)
        for row in ranked:
            config = self._encoded.decode(row)
            if self.config_space.config_key(config) not in self._seen:
                return config
        return self._random_config()

    def _random_config(self) -> dict[str, Any] | None:
        for _ in range(100):
            config = self.config_space.sample(self.rng)
            if self.config_space.config_key(config) not in self._seen:
                return config
        return None  # the space looks exhausted

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "observed": [[t, c, v] for t, (c, v) in self._observed.items()],
            "pending": sorted(self._pending),
            "seen": sorted(self._seen),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._observed = {int(t): (dict(c), float(v)) for t, c, v in state["observed"]}
        self._pending = {int(t) for t in state["pending"]}
        self._seen = set(state["seen"])
