"""Population-based training (Jaderberg et al., 2017).

A population of `population_size` trials trains in parallel. Every `perturbation_interval` of
the resource, a trial in the bottom quantile of the population is stopped and replaced by a new
trial that starts from the checkpoint of a top-quantile trial (exploit, through
`TrialSuggestion.start(config, checkpoint_from=parent)`) with the parent's hyperparameters
perturbed (explore: numbers scaled by one of `perturbation_factors`, ordered values moved to a
neighbour, or any value resampled with `resample_probability`).

A child only starts from a checkpoint that can continue: when it is about to start, a parent
that has since reached `max_t`, completed or failed is replaced by another top-quantile member
that can still train (or, if there is none, the child starts afresh from a random config), so
no child resumes a finished run and exits without reporting. The scheduler knows a parent's
progress from the reports the tuner has seen; a script that does not wait for its reports to
be seen (Syne Tune's reporter) may have trained to the end meanwhile, and a child that copied
that checkpoint exits without a report: the backends count it completed, as Syne Tune does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hpo_core.schedulers.base import Scheduler
from hpo_core.schedulers.fidelity import check_resource_attr
from hpo_core.schedulers.rungs import resource_of
from hpo_core.space import Categorical, ConfigSpace, Float, Integer
from hpo_core.trial import Decision, Trial, TrialResult, TrialSuggestion


class PopulationBasedTraining(Scheduler):
    """PBT with truncation selection.

    Args:
        resource_attr: the reported training progress (e.g. "epoch"); required.
        max_t: a trial is stopped once its resource reaches this (None: it ends by itself).
        population_size: trials training at once; that many random configs start first, and a
            member that fails or reaches the end is replaced by a new random config.
        perturbation_interval: resource between two exploit/explore checks of a trial.
        quantile_fraction: share of the population in the top and in the bottom quantile.
        resample_probability: chance that explore draws a hyperparameter afresh.
        perturbation_factors: factors numerical hyperparameters are multiplied by.
        hyperparameters: names that explore may change (default: every searched one).
        points_to_evaluate: configs of the first population members.
    """

    resource_attr: str  # required here

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        metric: str | Sequence[str],
        mode: str | Sequence[str] = "min",
        seed: int | None = None,
        resource_attr: str = "epoch",
        max_t: float | None = None,
        population_size: int = 8,
        perturbation_interval: float = 2.0,
        quantile_fraction: float = 0.25,
        resample_probability: float = 0.25,
        perturbation_factors: Sequence[float] = (0.8, 1.2),
        hyperparameters: Sequence[str] | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
    ):
        super().__init__(config_space, metric, mode, seed)
        check_resource_attr(resource_attr)
        if population_size < 2:
            raise ValueError(f"population_size: must be at least 2, got {population_size}")
        if perturbation_interval <= 0:
            raise ValueError(f"perturbation_interval: must be positive, got {perturbation_interval}")
        if not 0 < quantile_fraction <= 0.5:
            raise ValueError(f"quantile_fraction: must be in (0, 0.5], got {quantile_fraction}")
        if not 0 <= resample_probability <= 1:
            raise ValueError(f"resample_probability: must be in [0, 1], got {resample_probability}")
        if not perturbation_factors or any(f <= 0 for f in perturbation_factors):
            raise ValueError(f"perturbation_factors: need positive factors, got {perturbation_factors}")
        names = list(hyperparameters) if hyperparameters is not None else self.config_space.names
        unknown = sorted(set(names) - set(self.config_space.names))
        if unknown:
            raise ValueError(f"hyperparameters: not searched in the config space: {unknown}")
        self.resource_attr = resource_attr
        self.max_t = max_t
        self.population_size = int(population_size)
        self.perturbation_interval = float(perturbation_interval)
        self.quantile_fraction = float(quantile_fraction)
        self.resample_probability = float(resample_probability)
        self.perturbation_factors = [float(f) for f in perturbation_factors]
        self.hyperparameters = names
        self._initial = [self.config_space.cast(dict(p)) for p in points_to_evaluate or []]
        self._exploits: list[tuple[dict[str, Any], int]] = []  # (config, parent) to start
        self._members: set[int] = set()  # trials currently in the population
        self._pending = 0  # exploit suggestions handed out, not yet added
        self._scores: dict[int, float] = {}
        self._resources: dict[int, float] = {}
        self._last_perturbation: dict[int, float] = {}
        self._configs: dict[int, dict[str, Any]] = {}
        self._finished: set[int] = set()  # completed, failed or at max_t: not a parent any more

    # -- scheduling ----------------------------------------------------------------------------
    def suggest(self, trial_id: int) -> TrialSuggestion | None:
        while self._exploits:
            config, parent = self._exploits.pop(0)
            if not self._can_continue(parent):
                new_parent = self._top_parent()
                if new_parent is None:
                    continue  # no member can be copied: the slot gets a random config
                config, parent = self.explore(self._configs[new_parent]), new_parent
            self._pending += 1
            return TrialSuggestion.start(config, checkpoint_from=parent)
        if len(self._members) + self._pending < self.population_size:  # fill a free slot
            if self._initial:
                return TrialSuggestion.start({**self.config_space.fixed, **self._initial.pop(0)})
            return TrialSuggestion.start(self.config_space.sample(self.rng))
        return None

    def on_trial_add(self, trial: Trial) -> None:
        self._members.add(trial.trial_id)
        if trial.checkpoint_from is not None:
            self._pending = max(0, self._pending - 1)
        self._configs[trial.trial_id] = dict(trial.config)
        parent = trial.checkpoint_from
        start = self._resources.get(parent, 0.0) if parent is not None else 0.0
        self._resources[trial.trial_id] = start
        self._last_perturbation[trial.trial_id] = start

    def on_trial_result(self, trial: Trial, result: TrialResult) -> Decision:
        resource = resource_of(result.metrics, self.resource_attr, trial.trial_id)
        value = self.objective(result.metrics)
        if value is None:
            return Decision.CONTINUE
        tid = trial.trial_id
        self._scores[tid] = value
        self._resources[tid] = resource
        self._configs.setdefault(tid, dict(trial.config))
        if self.max_t is not None and resource >= self.max_t:
            self._members.discard(tid)
            self._finished.add(tid)
            return Decision.STOP
        if resource - self._last_perturbation.get(tid, 0.0) < self.perturbation_interval:
            return Decision.CONTINUE
        self._last_perturbation[tid] = resource
        parent = self._exploit_parent(tid)
        if parent is None:
            return Decision.CONTINUE
        self._members.discard(tid)
        self._exploits.append((self.explore(self._configs[parent]), parent))
        return Decision.STOP

    def _exploit_parent(self, trial_id: int) -> int | None:
        """A top-quantile member to copy if `trial_id` is in the bottom quantile, else None."""
        ranked = sorted((t for t in self._members if t in self._scores),
                        key=lambda t: (self._scores[t], t))
        if len(ranked) < 2:
            return None
        n = max(1, int(round(len(ranked) * self.quantile_fraction)))
        n = min(n, len(ranked) // 2)
        if trial_id not in ranked[-n:]:
            return None
        return self._top_parent(ranked[:n])

    def _can_continue(self, trial_id: int) -> bool:
        """Whether a copy of the trial's checkpoint can train on (it has not ended)."""
        return trial_id not in self._finished and (
            self.max_t is None or self._resources.get(trial_id, 0.0) < self.max_t)

    def _top_parent(self, top: Sequence[int] | None = None) -> int | None:
        """A random member of `top` (default: the population's top quantile) that can continue."""
        if top is None:
            ranked = sorted((t for t in self._members if t in self._scores),
                            key=lambda t: (self._scores[t], t))
            top = ranked[:max(1, int(round(len(ranked) * self.quantile_fraction)))]
        eligible = [t for t in top if self._can_continue(t)]
        if not eligible:
            return None
        return int(eligible[int(self.rng.integers(len(eligible)))])

    def explore(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """A perturbed copy of `config` (only `hyperparameters` change; in a conditional space,
        those it does not hold are left alone, and the ones a change switches on are drawn)."""
        new = dict(config)
        for name in self.hyperparameters:
            if name not in new:  # inactive in this config
                continue
            domain = self.config_space.domains[name]
            if self.rng.random() < self.resample_probability:
                new[name] = domain.sample(self.rng)
                continue
            factor = self.perturbation_factors[int(self.rng.integers(len(self.perturbation_factors)))]
            if isinstance(domain, Float):
                new[name] = float(min(max(float(new[name]) * factor, domain.lower), domain.upper))
            elif isinstance(domain, Integer):
                value = int(round(float(new[name]) * factor))
                if value == new[name]:  # small integers: move by one in the factor's direction
                    value += 1 if factor > 1 else -1 if factor < 1 else 0
                new[name] = int(min(max(value, domain.lower), domain.upper))
            elif isinstance(domain, Categorical):  # ordered or not: shift to a neighbour
                index = domain.index(new[name]) + (1 if factor >= 1 else -1)
                new[name] = domain.categories[min(max(index, 0), len(domain.categories) - 1)]
        return self.config_space.complete(new, self.rng) if self.config_space.is_conditional \
            else new

    def on_trial_complete(self, trial: Trial, result: TrialResult | None) -> None:
        self._members.discard(trial.trial_id)
        self._finished.add(trial.trial_id)

    def on_trial_error(self, trial: Trial) -> None:
        self._members.discard(trial.trial_id)
        self._finished.add(trial.trial_id)
        self._scores.pop(trial.trial_id, None)

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        def keyed(d: Mapping[int, Any]) -> dict[str, Any]:
            return {str(k): v for k, v in d.items()}

        return {
            **super().state_dict(),
            "initial": self._initial,
            "exploits": [[c, p] for c, p in self._exploits],
            "members": sorted(self._members),
            "pending": self._pending,
            "scores": keyed(self._scores),
            "resources": keyed(self._resources),
            "last_perturbation": keyed(self._last_perturbation),
            "configs": keyed(self._configs),
            "finished": sorted(self._finished),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)

        def unkeyed(d: Mapping[str, Any]) -> dict[int, Any]:
            return {int(k): v for k, v in d.items()}

        self._initial = [dict(c) for c in state["initial"]]
        self._exploits = [(dict(c), int(p)) for c, p in state["exploits"]]
        self._members = {int(t) for t in state["members"]}
        self._pending = int(state["pending"])
        self._scores = unkeyed(state["scores"])
        self._resources = unkeyed(state["resources"])
        self._last_perturbation = unkeyed(state["last_perturbation"])
        self._configs = unkeyed(state["configs"])
        self._finished = {int(t) for t in state.get("finished", [])}

