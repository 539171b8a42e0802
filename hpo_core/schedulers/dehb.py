"""DEHB: differential evolution inside Hyperband brackets (Awad, Mallik & Hutter, 2021).

Configs live as vectors in [0,1]^d (`ConfigSpace.encode`). Each rung level k keeps a
subpopulation of `eta**(K - k)` vectors with their values. Brackets are Hyperband's
(bracket s starts at rung s with `ceil((K+1)/(K-s+1) * eta**(K-s))` configs, and each stage keeps
the top 1/eta for the next rung). While a rung's subpopulation is still filling (the first
Hyperband iteration), stages are plain successive halving: a stage starts with random configs
and promotes its best trials by resuming them. Once it is full, each job of a stage is a DE
trial: a mutant `x1 + F (x2 - x3)` (rand/1) of three parents drawn from the parent pool (the
stage's own subpopulation at a bracket's first rung, otherwise the configs the previous stage
would promote, topped up from all subpopulations when fewer than three), coordinates outside
[0,1] redrawn uniformly, then binomial crossover with a target member of the rung's
subpopulation; the trial trains from scratch to the rung level and replaces its target if it
is at least as good (selection).

Brackets run concurrently: when no open bracket has a job to hand out (all wait for their stage
to finish), the next bracket opens, so workers never idle. This is the asynchronous variant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hpo_core.schedulers.base import Scheduler
from hpo_core.schedulers.fidelity import FidelityOptions
from hpo_core.schedulers.rungs import resource_of, rung_levels
from hpo_core.space import ConfigSpace
from hpo_core.trial import Decision, Trial, TrialResult, TrialSuggestion


@dataclass
class _Job:
    """One evaluation of a stage: a config trained up to rung `rung`."""

    vector: list[float]
    rung: int
    target: int | None = None  # index in the rung's subpopulation to compete with (None: fill)
    resume: int | None = None  # a paused trial to continue instead of starting a new one
    trial_id: int | None = None
    value: float | None = None
    done: bool = False


@dataclass
class _Bracket:
    """A Hyperband bracket: its first rung, current stage and that stage's jobs."""

    bracket_id: int
    first_rung: int
    stage: int
    jobs: list[_Job]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "jobs": [asdict(j) for j in self.jobs]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _Bracket:
        return cls(int(data["bracket_id"]), int(data["first_rung"]), int(data["stage"]),
                   [_Job(**j) for j in data["jobs"]])


class DEHB(Scheduler):
    """Differential evolution Hyperband.

    Args:
        fidelity: max_t, resource_attr, grace_period, reduction_factor, max_resource_attr
            (see `FidelityOptions`; max_resource_attr is set to the level of a job's rung).
        mutation_factor: DE's F, the scale of the difference vector.
        crossover_prob: DE's CR, the chance each coordinate comes from the mutant.
        points_to_evaluate: configs of the first random stage, used first.
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
        mutation_factor: float = 0.5,
        crossover_prob: float = 0.5,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
    ):
        super().__init__(config_space, metric, mode, seed)
        self.max_resource_attr = fidelity.entry_in(self.config_space)
        self._configs: dict[int, dict[str, Any]] = {}  # kept with max_resource_attr
        if not 0 < mutation_factor <= 2:
            raise ValueError(f"mutation_factor: must be in (0, 2], got {mutation_factor}")
        if not 0 <= crossover_prob <= 1:
            raise ValueError(f"crossover_prob: must be in [0, 1], got {crossover_prob}")
        if self.config_space.ndim == 0:
            raise ValueError("config_space: DEHB needs at least one searched hyperparameter")
        self.max_t = fidelity.max_t
        self.resource_attr = fidelity.resource_attr
        self.reduction_factor = fidelity.reduction_factor
        self.mutation_factor = float(mutation_factor)
        self.crossover_prob = float(crossover_prob)
        self.levels = rung_levels(fidelity.grace_period, self.reduction_factor, self.max_t)
        top = len(self.levels) - 1
        self.pop_size = [max(1, int(self.reduction_factor ** (top - k))) for k in range(top + 1)]
        self._initial = [self.config_space.encode(self.config_space.cast(dict(p))).tolist()
                         for p in points_to_evaluate or []]
        self.population: list[list[tuple[list[float], float]]] = [[] for _ in self.levels]
        self._cursor = [0] * len(self.levels)  # next target index per rung
        self._brackets: list[_Bracket] = []
        self._num_brackets = 0
        self._job_of: dict[int, tuple[int, int]] = {}  # trial -> (bracket id, job index)
        self._offer: tuple[int, int, int] | None = None  # (trial id, bracket id, job index)
        self._paused: set[int] = set()

    # -- bracket geometry ----------------------------------------------------------------------
    def stage_sizes(self, first_rung: int) -> list[int]:
        """Number of jobs per stage of a bracket starting at rung `first_rung`."""
        top = len(self.levels) - 1
        num_stages = top - first_rung + 1
        n0 = math.ceil((top + 1) / num_stages * self.reduction_factor ** (top - first_rung))
        return [max(1, int(n0 // self.reduction_factor ** j)) for j in range(num_stages)]

    # -- DE ------------------------------------------------------------------------------------
    def mutant(self, pool: Sequence[Sequence[float]]) -> np.ndarray:
        """rand/1 mutation from three distinct pool members, out-of-bounds coordinates redrawn."""
        i, j, k = self.rng.choice(len(pool), size=3, replace=False)
        v = np.asarray(pool[i]) + self.mutation_factor * (np.asarray(pool[j]) - np.asarray(pool[k]))
        outside = (v < 0.0) | (v > 1.0)
        v[outside] = self.rng.random(int(outside.sum()))
        return v

    def crossover(self, mutant: np.ndarray, target: Sequence[float]) -> np.ndarray:
        """Binomial crossover: each coordinate from the mutant with prob CR (one at least)."""
        t = np.asarray(target, dtype=float)
        take = self.rng.random(t.size) < self.crossover_prob
        take[int(self.rng.integers(t.size))] = True
        return np.where(take, mutant, t)

    def _de_job(self, rung: int, pool: list[list[float]]) -> _Job:
        members = self.population[rung]
        target = self._cursor[rung] % len(members)
        self._cursor[rung] += 1
        if len(pool) < 3:  # top up from all subpopulations
            others = [v for sub in self.population for v, _ in sub if v not in pool]
            need = min(3 - len(pool), len(others))
            pool = pool + [others[i] for i in self.rng.choice(len(others), need, replace=False)]
        if len(pool) < 3:
            return _Job(self._random_vector(), rung, target)
        trial = self.crossover(self.mutant(pool), members[target][0])
        return _Job(trial.tolist(), rung, target)

    def _random_vector(self) -> list[float]:
        if self._initial:
            return self._initial.pop(0)
        return self.config_space.encode(self.config_space.sample(self.rng)).tolist()

    def _is_full(self, rung: int) -> bool:
        return len(self.population[rung]) >= self.pop_size[rung]

    # -- brackets ------------------------------------------------------------------------------
    def _open_bracket(self) -> _Bracket:
        first = self._num_brackets % len(self.levels)
        size = self.stage_sizes(first)[0]
        if self._is_full(first):
            pool = [v for v, _ in self.population[first]]
            jobs = [self._de_job(first, pool) for _ in range(size)]
        else:
            jobs = [_Job(self._random_vector(), first) for _ in range(size)]
        bracket = _Bracket(self._num_brackets, first, 0, jobs)
        self._num_brackets += 1
        self._brackets.append(bracket)
        return bracket

    def _advance(self, bracket: _Bracket) -> None:
        """Start the next stage of a bracket whose current stage is done (or close it)."""
        sizes = self.stage_sizes(bracket.first_rung)
        if bracket.stage + 1 >= len(sizes):
            self._brackets.remove(bracket)
            return
        rung = bracket.first_rung + bracket.stage + 1
        n = sizes[bracket.stage + 1]
        finished = [(j.value, j) for j in bracket.jobs
                    if j.value is not None and math.isfinite(j.value)]
        best = [j for _, j in sorted(finished, key=lambda vj: vj[0])][:n]
        if self._is_full(rung):
            pool = [j.vector for j in best]
            jobs = [self._de_job(rung, pool) for _ in range(n)]
        else:  # successive halving: promote the best, resuming them where they paused
            jobs = [_Job(j.vector, rung, resume=j.trial_id) for j in best]
            jobs += [_Job(self._random_vector(), rung) for _ in range(n - len(jobs))]
        bracket.stage += 1
        bracket.jobs = jobs

    def _bracket(self, bracket_id: int) -> _Bracket | None:
        return next((b for b in self._brackets if b.bracket_id == bracket_id), None)

    def _next_job(self) -> tuple[_Bracket, int] | None:
        for bracket in self._brackets:
            for index, job in enumerate(bracket.jobs):
                if job.trial_id is None:
                    return bracket, index
        return None

    # -- the Scheduler contract ----------------------------------------------------------------
    def suggest(self, trial_id: int) -> TrialSuggestion | None:
        if self._offer is not None and self._offer[0] == trial_id:  # offered, not started yet
            bracket = self._bracket(self._offer[1])
            if bracket is not None and bracket.jobs[self._offer[2]].trial_id is None:
                return TrialSuggestion.start(self._config(bracket.jobs[self._offer[2]]))
        found = self._next_job()
        if found is None:
            bracket, index = self._open_bracket(), 0
        else:
            bracket, index = found
        job = bracket.jobs[index]
        if job.resume is not None and job.resume in self._paused:
            self._paused.discard(job.resume)
            self._assign(job.resume, bracket, index)
            self._offer = None
            if self.max_resource_attr is None:
                return TrialSuggestion.resume(job.resume)
            config = self._with_level(self._configs[job.resume], job.rung)
            self._configs[job.resume] = config
            return TrialSuggestion.resume(job.resume, config)
        job.resume = None  # the trial to promote is gone: train the config afresh
        self._offer = (trial_id, bracket.bracket_id, index)
        return TrialSuggestion.start(self._config(job))

    def _config(self, job: _Job) -> dict[str, Any]:
        config = self.config_space.decode(job.vector)
        return config if self.max_resource_attr is None else self._with_level(config, job.rung)

    def _with_level(self, config: Mapping[str, Any], rung: int) -> dict[str, Any]:
        level = self.levels[rung]
        value = int(level) if float(level).is_integer() else level
        assert self.max_resource_attr is not None  # only called when the scheduler sets it
        return {**config, self.max_resource_attr: value}

    def _assign(self, trial_id: int, bracket: _Bracket, index: int) -> None:
        bracket.jobs[index].trial_id = trial_id
        self._job_of[trial_id] = (bracket.bracket_id, index)

    def on_trial_add(self, trial: Trial) -> None:
        if self.max_resource_attr is not None:
            self._configs[trial.trial_id] = dict(trial.config)
        if self._offer is not None and self._offer[0] == trial.trial_id:
            bracket = self._bracket(self._offer[1])
            if bracket is not None and bracket.jobs[self._offer[2]].trial_id is None:
                self._assign(trial.trial_id, bracket, self._offer[2])
            self._offer = None

    def _job(self, trial_id: int) -> tuple[_Bracket, _Job] | None:
        where = self._job_of.get(trial_id)
        if where is None:
            return None
        bracket = self._bracket(where[0])
        if bracket is None or where[1] >= len(bracket.jobs):
            return None
        job = bracket.jobs[where[1]]
        return (bracket, job) if job.trial_id == trial_id and not job.done else None

    def on_trial_result(self, trial: Trial, result: TrialResult) -> Decision:
        resource = resource_of(result.metrics, self.resource_attr, trial.trial_id)
        value = self.objective(result.metrics)
        found = self._job(trial.trial_id)
        if found is None:  # not ours (e.g. started before a restart): run it to the end
            return Decision.STOP if resource >= self.max_t else Decision.CONTINUE
        bracket, job = found
        if value is None or (resource < self.levels[job.rung] and resource < self.max_t):
            return Decision.CONTINUE
        self._finish(bracket, job, value)
        top = len(self.levels) - 1
        if job.rung == top or resource >= self.max_t or self._is_full(job.rung + 1):
            return Decision.STOP
        self._paused.add(trial.trial_id)
        return Decision.PAUSE

    def _finish(self, bracket: _Bracket, job: _Job, value: float) -> None:
        job.value, job.done = value, True
        if math.isfinite(value):
            members = self.population[job.rung]
            if len(members) < self.pop_size[job.rung]:
                members.append((job.vector, value))
            else:
                target = job.target
                if target is None:  # a filling job arriving late: compete with the worst
                    target = int(np.argmax([v for _, v in members]))
                if value <= members[target][1]:
                    members[target] = (job.vector, value)
        if all(j.done for j in bracket.jobs):
            self._advance(bracket)

    def on_trial_complete(self, trial: Trial, result: TrialResult | None) -> None:
        found = self._job(trial.trial_id)
        if found is not None:
            value = self.objective(result.metrics) if result is not None else None
            self._finish(*found, value if value is not None else math.inf)

    def on_trial_error(self, trial: Trial) -> None:
        found = self._job(trial.trial_id)
        if found is not None:
            self._finish(*found, math.inf)

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "initial": self._initial,
            "population": [[[v, y] for v, y in sub] for sub in self.population],
            "cursor": self._cursor,
            "brackets": [b.to_json() for b in self._brackets],
            "num_brackets": self._num_brackets,
            "job_of": [[t, b, i] for t, (b, i) in self._job_of.items()],
            "offer": self._offer,
            "paused": sorted(self._paused),
            "configs": {str(t): c for t, c in self._configs.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._initial = [list(v) for v in state["initial"]]
        self.population = [[(list(v), float(y)) for v, y in sub] for sub in state["population"]]
        self._cursor = [int(c) for c in state["cursor"]]
        self._brackets = [_Bracket.from_json(b) for b in state["brackets"]]
        self._num_brackets = int(state["num_brackets"])
        self._job_of = {int(t): (int(b), int(i)) for t, b, i in state["job_of"]}
        self._offer = tuple(state["offer"]) if state["offer"] is not None else None
        self._paused = {int(t) for t in state["paused"]}
        self._configs = {int(t): dict(c) for t, c in state.get("configs", {}).items()}
