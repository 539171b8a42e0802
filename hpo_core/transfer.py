"""Transfer from earlier experiments: zero-shot portfolios and bounding boxes (as in Syne Tune).

An earlier experiment ("task") is given by `transfer_from`, a list whose items are either the
path of a stored experiment folder (`hpo_core.store`) or its evaluations inline,
``{"configs": [...], "values": [...], "mode": "min"}`` (values of the metric as reported; `mode`
defaults to the current experiment's). From a stored experiment each trial counts once, with its
value as every view reads it (its best report of the metric, in that experiment's mode;
`hpo_core.trial_value`); failed trials are left out. Configs are ranked by one metric: with
several (`bounding_box` running a multi-objective method), by the first only, not by Pareto
front. An experiment keeps what its transfer method read (`transfer_evaluations`) when it
starts, and reads that when resumed (`flows.experiment`).

* `zero_shot_portfolio`: the configs of the earlier tasks chosen greedily so that, averaged over
  the tasks, the best of the chosen ones ranks as high as possible (Wistuba et al., 2015); ties
  go to the config better on average by itself.
  A config that a task did not evaluate gets, on that task, the value of its nearest evaluated
  neighbour in the encoded space. Method `zero_shot` tries the portfolio first, then a searcher.
* `bounding_box_space`: the config space shrunk to the smallest box holding the `top_k` best
  configs of every task (numbers: their range; choices: the values seen; Perrone et al., 2019;
  a conditional hyperparameter that the box can no longer switch on is left out).
  Method `bounding_box` runs any method on that space.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpo_core.schedulers.base import Scheduler
from hpo_core.schedulers.fifo import fifo
from hpo_core.space import Categorical, ConfigSpace, Domain, Float, Integer, Ordinal

NO_CONFIG = "scheduler_options.transfer_from: no earlier config belongs to this config space"


@dataclass
class Task:
    """The evaluations of one earlier experiment: configs and values to minimize."""

    name: str
    configs: list[dict[str, Any]]
    values: list[float]


def load_tasks(transfer_from: Sequence[Any], metric: str, mode: str,
               field: str = "scheduler_options.transfer_from") -> list[Task]:
    """The tasks `transfer_from` names; errors name the item (`field[i]`)."""
    if isinstance(transfer_from, str | bytes) or not isinstance(transfer_from, Sequence):
        raise ValueError(f"{field}: must be a list of experiment folders or evaluations")
    if not transfer_from:
        raise ValueError(f"{field}: is empty; name at least one earlier experiment")
    tasks = []
    for i, item in enumerate(transfer_from):
        where = f"{field}[{i}]"
        if isinstance(item, str):
            configs, values, task_mode = _stored_evaluations(Path(item), metric, mode, where)
            name = Path(item).name
        elif isinstance(item, Mapping):
            configs, values = _inline_evaluations(item, where)
            name = str(item.get("name", f"task{i}"))
            task_mode = item.get("mode", mode)
            if task_mode not in ("min", "max"):
                raise ValueError(f"{where}.mode: must be 'min' or 'max', got {task_mode!r}")
        else:
            raise ValueError(f"{where}: expected a folder path or {{configs, values}}, got {item!r}")
        keep = [j for j, v in enumerate(values) if math.isfinite(v)]
        if not keep:
            raise ValueError(f"{where}: has no finite value of {metric!r}")
        sign = 1.0 if task_mode == "min" else -1.0
        tasks.append(Task(name, [configs[j] for j in keep], [sign * values[j] for j in keep]))
    return tasks


def transfer_evaluations(transfer_from: Sequence[Any], metric: str | Sequence[str],
                         mode: str | Sequence[str]) -> list[dict[str, Any]]:
    """The evaluations `transfer_from` names as a transfer method reads them, inline (values to
    minimize): what an experiment keeps when it starts, to read instead of the sources."""
    metric_name, mode_name = _ranking(metric, mode)
    return [{"name": t.name, "configs": t.configs, "values": t.values, "mode": "min"}
            for t in load_tasks(transfer_from, metric_name, mode_name)]


def _ranking(metric: str | Sequence[str], mode: str | Sequence[str]) -> tuple[str, str]:
    """The metric (and its mode) earlier configs are ranked by: the first one."""
    return (metric if isinstance(metric, str) else metric[0],
            mode if isinstance(mode, str) else mode[0])


def _stored_evaluations(path: Path, metric: str, mode: str, where: str
                        ) -> tuple[list[dict[str, Any]], list[float], str]:
    from hpo_core.store import CONFIG_PREFIX, load_experiment

    try:
        experiment = load_experiment(path)
    except FileNotFoundError:
        raise ValueError(f"{where}: no stored experiment at {str(path)!r}") from None
    frame = experiment.results
    if frame.empty or metric not in frame.columns:
        raise ValueError(f"{where}: the experiment at {str(path)!r} has no results for {metric!r}")
    mode = experiment.mode_of(metric, mode)
    trial_values = experiment.trial_values(metric, mode)
    trials = experiment.state.get("trials", {})
    last_rows = frame.groupby("trial_id", sort=True).tail(1).set_index("trial_id")
    configs, values = [], []
    for trial_id, value in trial_values.items():
        stored = trials.get(str(trial_id))
        if stored is not None:
            config = dict(stored["config"])
        else:
            row = last_rows.loc[trial_id]
            config = {c[len(CONFIG_PREFIX):]: row[c] for c in frame.columns
                      if c.startswith(CONFIG_PREFIX) and row[c] == row[c]}  # NaN: inactive
        configs.append(config)
        values.append(value.value)
    return configs, values, mode


def _inline_evaluations(item: Mapping[str, Any], where: str
                        ) -> tuple[list[dict[str, Any]], list[float]]:
    configs, values = item.get("configs"), item.get("values")
    if not isinstance(configs, list) or not all(isinstance(c, Mapping) for c in configs):
        raise ValueError(f"{where}.configs: must be a list of configs")
    if not isinstance(values, list) or len(values) != len(configs):
        raise ValueError(f"{where}.values: must be a list with one value per config")
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{where}.values: must be numbers") from None
    return [dict(c) for c in configs], numbers


def _valid(space: ConfigSpace, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """`config` as a config of `space` (fixed values filled in), or None if it is not one."""
    try:
        candidate = {**space.fixed, **space.cast({k: v for k, v in config.items()
                                                  if k in space.domains})}
        space.validate(candidate)
    except (TypeError, ValueError):
        return None
    return candidate


def zero_shot_portfolio(space: ConfigSpace, tasks: Sequence[Task],
                        num_configs: int | None = None) -> list[dict[str, Any]]:
    """Configs of the tasks (valid in `space`), best portfolio first: `num_configs` of them,
    or (None) until adding one improves no task's best (every task's best is in)."""
    candidates: dict[str, dict[str, Any]] = {}
    for task in tasks:
        for config in task.configs:
            valid = _valid(space, config)
            if valid is not None:
                candidates.setdefault(space.config_key(valid), valid)
    if not candidates:
        return []
    pool = list(candidates.values())
    X = space.encode_many(pool)
    scores = np.empty((len(tasks), len(pool)))  # normalized rank of each candidate per task
    for t, task in enumerate(tasks):
        pairs = [(c, v) for c, v in ((_valid(space, c), v) for c, v in
                                     zip(task.configs, task.values, strict=True)) if c is not None]
        if not pairs:
            scores[t] = 0.5
            continue
        values = np.array([v for _, v in pairs])
        ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable")
        quantile = ranks / max(len(values) - 1, 1)
        Xt = space.encode_many([c for c, _ in pairs])
        nearest = np.argmin(((X[:, None, :] - Xt[None, :, :]) ** 2).sum(-1), axis=1)
        scores[t] = quantile[nearest]
    limit = len(pool) if num_configs is None else min(num_configs, len(pool))
    chosen: list[int] = []
    best = np.full(len(tasks), np.inf)
    own = scores.mean(0)
    while len(chosen) < limit:
        totals = np.minimum(best[:, None], scores).mean(0)
        totals[chosen] = np.inf
        pick = int(np.lexsort((own, totals))[0])  # ties: the better candidate on its own
        if num_configs is None and totals[pick] >= best.mean():
            break
        chosen.append(pick)
        best = np.minimum(best, scores[:, pick])
    return [pool[i] for i in chosen]


def bounding_box_space(space: ConfigSpace, tasks: Sequence[Task], top_k: int = 1) -> ConfigSpace:
    """`space` shrunk to the box of the `top_k` best configs (valid in `space`) of each task."""
    best: list[dict[str, Any]] = []
    for task in tasks:
        ranked = sorted(zip(task.values, range(len(task.configs)), strict=True))
        valid = [c for c in (_valid(space, task.configs[i]) for _, i in ranked) if c is not None]
        best.extend(valid[:top_k])
    if not best:
        raise ValueError(NO_CONFIG)
    entries: dict[str, Any] = dict(space.fixed)
    for name, domain in space.domains.items():
        seen = [c[name] for c in best if name in c]
        entries[name] = _shrunk(domain, seen) if seen else copy.copy(domain)
    for name in space.order:  # parents first: conditions on values the box still holds
        parents = space.domains[name].condition
        if parents:
            condition = {p: [v for v in values if p in entries and entries[p].contains(v)]
                         for p, values in parents.items()}
            if all(condition.values()):
                entries[name].when(**condition)
            else:  # it can no longer be switched on
                del entries[name]
    return ConfigSpace(entries)


def _shrunk(domain: Domain, seen: list[Any]) -> Domain:
    if isinstance(domain, Ordinal):  # finite ranges included: a contiguous run of the values
        idx = [domain.index(v) for v in seen]
        return Ordinal(domain.categories[min(idx): max(idx) + 1], field=domain.field)
    if isinstance(domain, Categorical):
        return Categorical([c for c in domain.categories if domain.contains(c) and c in seen],
                           field=domain.field)
    if isinstance(domain, Integer):
        return Integer(int(min(seen)), int(max(seen)), log=domain.log, field=domain.field)
    if isinstance(domain, Float):
        return Float(float(min(seen)), float(max(seen)), log=domain.log, field=domain.field)
    return domain  # pragma: no cover - every domain type is handled above


def _single(domain: Domain) -> bool:
    """Whether `domain` holds one value only."""
    if isinstance(domain, Categorical):
        return len(domain.categories) == 1
    return isinstance(domain, Float | Integer) and domain.lower == domain.upper


def zero_shot(
    config_space: ConfigSpace,
    metric: str | Sequence[str],
    mode: str | Sequence[str] = "min",
    seed: int | None = None,
    transfer_from: Sequence[Any] = (),
    num_configs: int | None = None,
    searcher: str = "random",
    searcher_options: Mapping[str, Any] | None = None,
) -> Scheduler:
    """FIFO: the zero-shot portfolio of earlier configs first (`num_configs` of them; by
    default until every earlier task's best is in), then `searcher` (a registry name); an
    error if no earlier config belongs to `config_space` (it would be the searcher alone)."""
    tasks = load_tasks(transfer_from, *_ranking(metric, mode))
    if num_configs is not None and (isinstance(num_configs, bool) or not isinstance(
            num_configs, int) or num_configs < 1):
        raise ValueError(f"scheduler_options.num_configs: must be a positive integer, "
                         f"got {num_configs!r}")
    portfolio = zero_shot_portfolio(config_space, tasks, num_configs)
    if not portfolio:
        raise ValueError(NO_CONFIG)
    return fifo(config_space, metric, mode, seed, searcher, searcher_options, portfolio)


def bounding_box(
    config_space: ConfigSpace,
    metric: str | Sequence[str],
    mode: str | Sequence[str] = "min",
    seed: int | None = None,
    transfer_from: Sequence[Any] = (),
    top_k: int = 3,
    scheduler: str = "random",
    scheduler_options: Mapping[str, Any] | None = None,
    *,
    build_method: Callable[..., Scheduler],
) -> Scheduler:
    """Method `scheduler` (with `scheduler_options`) on the bounding box of the `top_k` best
    configs of each earlier task (an error if that box is a single config: it would run one
    trial); `build_method` is the registry's `build_scheduler` (this module does not import the
    registry that loads it)."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"scheduler_options.top_k: must be a positive integer, got {top_k!r}")
    if scheduler == "bounding_box":
        raise ValueError("scheduler_options.scheduler: a bounding box inside a bounding box")
    space = bounding_box_space(config_space, load_tasks(transfer_from, *_ranking(metric, mode)),
                               top_k)
    if all(_single(domain) for domain in space.domains.values()):
        raise ValueError(f"scheduler_options.top_k: the box of the {top_k} best configs of each "
                         f"earlier experiment is a single config; raise top_k or add earlier "
                         f"experiments")
    return build_method(scheduler, space, metric, mode, seed, scheduler_options)
