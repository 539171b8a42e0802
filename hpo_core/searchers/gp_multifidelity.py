"""GP-BO over configs and resources, the searcher of MOBSTER-like multi-fidelity schedulers.

It sees every intermediate result (`uses_intermediate_results`), one observation per
(trial, resource), and proposes configs for the full resource:

* `model="joint"`: one GP over the encoded config plus the resource, scaled to [0,1] on a log
  scale between `min_resource` and `max_resource`; expected improvement is taken at
  `target_resource` (default `max_resource`) against the best posterior mean there. Running
  trials are fantasized at the target resource.
* `model="independent"`: one GP per resource level, each with its own hyperparameters; the
  proposal uses the highest level holding at least `min_points_per_level` observations (the
  BOHB rule), and a random config while no level has that many.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpo_core.models.gp import GaussianProcess
from hpo_core.searchers.gp import GPSearcher
from hpo_core.space import ConfigSpace

MODELS = ("joint", "independent")


class MultiFidelityGPSearcher(GPSearcher):
    """GP-based searcher fed with results at several resource levels.

    Args:
        resource_attr: the reported resource (used when `on_result` gets no `resource`).
        max_resource: the largest resource; `min_resource` the smallest (for scaling).
        model: "joint" or "independent" (see the module docstring).
        target_resource: resource at which proposals are optimized (default `max_resource`).
        min_points_per_level: observations a level needs for the independent model
            (default `num_init_random`).
        max_model_points: at most this many observations go into a model (each trial's
            latest one first, then a random subset of the others).
        The other arguments are `GPSearcher`'s.
    """

    uses_intermediate_results = True

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        seed: int | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
        resource_attr: str = "epoch",
        max_resource: float = 1.0,
        min_resource: float = 1.0,
        model: str = "joint",
        target_resource: float | None = None,
        min_points_per_level: int | None = None,
        max_model_points: int = 1000,
        num_init_random: int | None = None,
        constraint_attr: str | None = None,
        cost_attr: str | None = None,
        cost_exponent: float = 1.0,
        num_candidates: int = 1000,
        max_fit_points: int = 300,
        priors: bool = True,
        refit_every: int = 1,
        batch_size: int = 1,
        min_distance: float | None = 0.0,
        random_fraction: float = 0.0,
    ):
        super().__init__(config_space, seed, points_to_evaluate, num_init_random,
                         constraint_attr, cost_attr, cost_exponent, num_candidates,
                         max_fit_points, priors, refit_every, batch_size, min_distance,
                         random_fraction)
        if model not in MODELS:
            raise ValueError(f"model: must be one of {MODELS}, got {model!r}")
        for name, value in (("max_resource", max_resource), ("min_resource", min_resource)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name}: must be a positive number, got {value!r}")
        if min_resource > max_resource:
            raise ValueError(f"min_resource: {min_resource} is above max_resource {max_resource}")
        if not isinstance(max_model_points, int) or max_model_points < 10:
            raise ValueError(f"max_model_points: must be an integer >= 10, got {max_model_points!r}")
        self.resource_attr = resource_attr
        self.max_resource = float(max_resource)
        self.min_resource = float(min_resource)
        self.model = model
        self.target_resource = float(target_resource or max_resource)
        self.min_points_per_level = min_points_per_level or self.num_init_random
        self.max_model_points = max_model_points
        self._level: float | None = None  # level the independent model uses now

    @property
    def input_dim(self) -> int:
        return self._encoded.dim + (self.model == "joint")

    def scaled_resource(self, resource: float | Sequence[float] | np.ndarray) -> np.ndarray:
        """Resources mapped to [0,1], log-scaled between min_resource and max_resource."""
        r = np.clip(np.asarray(resource, dtype=float), self.min_resource, self.max_resource)
        if self.max_resource == self.min_resource:
            return np.ones_like(r)
        return np.log(r / self.min_resource) / math.log(self.max_resource / self.min_resource)

    # -- GPSearcher hooks ----------------------------------------------------------------------
    def _record_key(self, trial_id: int, resource: float | None) -> Any:
        return (trial_id, self.max_resource if resource is None else float(resource))

    def on_result(self, trial_id: int, config: Mapping[str, Any], value: float,
                  resource: float | None = None,
                  metrics: Mapping[str, Any] | None = None) -> None:
        if resource is None and metrics and self.resource_attr in metrics:
            resource = float(metrics[self.resource_attr])
        super().on_result(trial_id, config, value,
                          self.max_resource if resource is None else resource, metrics)

    def _model_records(self) -> list[Any]:
        keys = list(self._records)
        if self.model == "independent":
            self._level = self._independent_level(keys)
            keys = [k for k in keys if k[1] == self._level] if self._level is not None else []
        if len(keys) <= self.max_model_points:
            return keys
        latest: dict[int, Any] = {}
        for k in keys:  # each trial's observation at its largest resource
            if k[0] not in latest or k[1] > latest[k[0]][1]:
                latest[k[0]] = k
        kept = sorted(latest.values())[-self.max_model_points:]
        rest = sorted(set(keys) - set(kept))
        room = self.max_model_points - len(kept)
        if room > 0 and rest:
            picks = self.rng.choice(len(rest), size=min(room, len(rest)), replace=False)
            kept += [rest[i] for i in np.sort(picks)]
        return kept

    def _independent_level(self, keys: list[Any]) -> float | None:
        counts: dict[float, int] = {}
        for _, level in keys:
            counts[level] = counts.get(level, 0) + 1
        enough = [level for level, n in counts.items() if n >= self.min_points_per_level]
        return max(enough) if enough else None

    def _inputs(self, keys: Sequence[Any]) -> np.ndarray:
        X = super()._inputs(keys)
        if self.model == "independent":
            return X
        return np.column_stack([X, self.scaled_resource([k[1] for k in keys])])

    def _target_inputs(self, Z: np.ndarray) -> np.ndarray:
        if self.model == "independent":
            return Z
        return np.column_stack([Z, np.full(len(Z), self.scaled_resource(self.target_resource))])

    def _pending_configs(self, keys: Sequence[Any]) -> list[dict[str, Any]]:
        return list(self._pending.values())  # running trials have not reached the target yet

    def _gp(self, name: str) -> GaussianProcess:
        if self.model == "independent" and "@" not in name:
            name = f"{name}@{self._level}"
        return super()._gp(name)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "level": self._level}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._level = state.get("level")
