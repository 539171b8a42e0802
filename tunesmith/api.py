"""`tune(...)`: one call from an objective and a search space to a finished experiment.

It writes an ExperimentSpec (so `experiments/<name>/spec.json` is there and `tunesmith list`,
`show` and `resume` understand the experiment) and runs it as the Prefect `tune` flow, tracked
in MLflow, or bare (`flow=False`: the tuner alone, only the store on disk).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.functions import WORKER_ENV
from backends.objectives import PICKLED_ENTRY, Objective, is_function_entry, objective_from
from hpo_core.schedulers.base import Scheduler
from hpo_core.space import ConfigSpace
from hpo_core.spec import DEFAULT_MAX_FAILURES, ExperimentSpec
from hpo_core.store import Experiment, load_experiment

DEFAULT_STOP = {"max_trials_completed": 10}


@dataclass
class TuneResult:
    """What `tune` returns: the experiment as stored, and the flow's outcome (flow runs)."""

    experiment: Experiment
    outcome: dict[str, Any] | None = None

    @property
    def path(self) -> Path:
        """The experiment folder."""
        return Path(self.experiment.path)

    @property
    def results(self) -> Any:
        """The results frame: one row per report (`trial_id`, `time`, `config_*`, metrics)."""
        return self.experiment.results

    @property
    def trials(self) -> Any:
        """One row per trial: status, value (its best report) and the step of it, config."""
        return self.experiment.trials()

    @property
    def best_config(self) -> dict[str, Any] | None:
        return self.experiment.best_config()

    @property
    def best_value(self) -> float | None:
        return self.experiment.best_value()

    @property
    def best_trial_id(self) -> int | None:
        return self.experiment.best_trial_id()

    def plot(self, path: str | os.PathLike[str] | None = None) -> Path:
        """The incumbent trajectory as a PNG (default: `trajectory.png` in the experiment)."""
        return self.experiment.plot_trajectory(path)

    def __repr__(self) -> str:
        return (f"TuneResult(path={str(self.path)!r}, best_value={self.best_value!r}, "
                f"best_config={self.best_config!r})")


def tune(
    objective: Any,
    config_space: ConfigSpace | Mapping[str, Any],
    *,
    metric: str | Sequence[str],
    mode: str | Sequence[str] = "min",
    method: str | Scheduler = "random",
    method_options: Mapping[str, Any] | None = None,
    backend: str = "local",
    backend_options: Mapping[str, Any] | None = None,
    stop: Mapping[str, Any] | None = None,
    n_workers: int | str = 4,
    name: str | None = None,
    seed: int = 0,
    max_failures: int | None = DEFAULT_MAX_FAILURES,
    results_root: str | os.PathLike[str] = "experiments",
    flow: bool = True,
    tracking_uri: str | None = None,
) -> TuneResult:
    """Tune `objective` over `config_space` and return the result.

    Args:
        objective: a function `objective(config)` that calls `report(...)` (or returns its
            metrics), a class with `setup(config)` / `step()` (and `save_checkpoint(dir)` /
            `load_checkpoint(dir)`), an entry point (`"pkg.module:objective"`,
            `"path/to/file.py:objective"`), or a training script (`"train.py"` or a command).
            Trials run in worker processes, never in this one. None on the simulated backend.
        config_space: names to domains (`uniform(...)`, `{"type": "uniform", ...}`) or fixed
            values.
        metric, mode: what to optimize ("min" or "max"; lists for multi-objective methods).
        method: a method name (`asha`, `bo`, `random`, ...: `hpo_core.registry`) or a scheduler
            object built over the same space, metric and mode.
        method_options: the method's options (`scheduler_options` of a spec).
        backend, backend_options: where trials run (`local`: this machine, CPUs and GPUs).
        stop: limits (`max_trials_completed`, `max_time`, ...; default: 10 completed trials).
        n_workers: trials at once (or "auto").
        name: the experiment (its folder under `results_root`); default: the objective's name
            and the time. An existing experiment of that name is resumed.
        max_failures: end the experiment once this many trials failed (None: no limit).
        flow: run as the Prefect `tune` flow tracked in MLflow (default), or bare.
        tracking_uri: MLflow tracking URI for flow runs (default `sqlite:///mlflow.db`).

    Raises `flows.failures.AllTrialsFailed` if every trial failed (flow or bare).
    """
    if os.environ.get(WORKER_ENV) is not None:
        raise RuntimeError(
            "tunesmith.tune() was called inside a trial worker, while it imported your script: "
            "put the call under `if __name__ == \"__main__\":`")
    options = dict(backend_options or {})
    passed: Any = None  # an objective object the spec cannot name
    label = "experiment"
    if objective is not None:
        entry, passed, label = _entry_point(objective)
        options["entry_point"] = entry
    scheduler = method if isinstance(method, Scheduler) else None
    space = config_space if isinstance(config_space, ConfigSpace) else ConfigSpace(config_space)
    spec = ExperimentSpec(
        name=name or _default_name(label),
        metric=list(metric) if not isinstance(metric, str) else metric,
        mode=list(mode) if not isinstance(mode, str) else mode,
        config_space=space.to_json(),
        scheduler=_method_name(scheduler) if scheduler is not None else str(method),
        scheduler_options=dict(method_options or {}) if scheduler is None else {},
        backend=backend,
        backend_options=options,
        stop=dict(stop) if stop is not None else dict(DEFAULT_STOP),
        n_workers=n_workers,
        seed=seed,
        max_failures=max_failures,
        results_root=str(results_root),
        tracking_uri=tracking_uri,
    )
    if scheduler is not None:
        _check_scheduler(scheduler, spec)
    if flow:
        from flows.tune import run_tune

        outcome = run_tune(spec, tracking_uri, objective=passed, scheduler=scheduler)
        return TuneResult(load_experiment(outcome["store_path"]), outcome)
    from flows.experiment import build_tuner
    from flows.failures import check_trials

    tuner = build_tuner(spec, scheduler=scheduler, objective=passed)
    tuner.run()
    check_trials(tuner, spec.name)  # as the flow does: every trial failed is an error
    assert tuner.store is not None  # build_tuner opens the experiment's store
    return TuneResult(load_experiment(tuner.store.path))


def _entry_point(objective: Any) -> tuple[Any, Any, str]:
    """(the spec's entry point, the object to pass along if it has no name, a label)."""
    if isinstance(objective, str) and is_function_entry(objective):
        objective_from(objective, "objective")
        return objective, None, objective.rsplit(":", 1)[1]
    if isinstance(objective, str | os.PathLike) or (
            isinstance(objective, Sequence) and not callable(objective)):
        entry = os.fspath(objective) if isinstance(objective, os.PathLike) else objective
        first = entry if isinstance(entry, str) else str(entry[0])
        return entry, None, Path(first.split()[0]).stem
    found: Objective = objective_from(objective, "objective")
    label = getattr(objective, "__name__", None) or getattr(
        getattr(objective, "func", None), "__name__", None) or type(objective).__name__
    if found.entry is not None:
        return found.entry, None, label
    return f"{PICKLED_ENTRY}{found.name}", objective, label


def _default_name(label: str) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '-', label).strip('-.') or 'experiment'}-{stamp}"


def _method_name(scheduler: Scheduler) -> str:
    """The registry name of a scheduler object's class (recorded in spec.json)."""
    from hpo_core.registry import METHODS

    for info in METHODS.values():
        target = info.load()
        if isinstance(target, type) and type(scheduler) is target:
            return info.name
    from hpo_core.schedulers.fifo import FIFOScheduler

    if isinstance(scheduler, FIFOScheduler):
        return "fifo"
    raise ValueError(f"method: {type(scheduler).__name__} is not a registered method; "
                     "register it (hpo_core.registry.register_method) or pass a method name")


def _check_scheduler(scheduler: Scheduler, spec: ExperimentSpec) -> None:
    metrics = [spec.metric] if isinstance(spec.metric, str) else spec.metric
    if list(scheduler.metrics) != list(metrics):
        raise ValueError(f"method: the scheduler optimizes {scheduler.metrics}, but metric is "
                         f"{metrics}")
