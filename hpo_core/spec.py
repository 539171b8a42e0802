"""ExperimentSpec: everything an experiment needs, loadable from a dict, JSON or YAML.

Example (YAML)::

    name: lcbench-asha
    metric: Train/val_cross_entropy
    mode: min
    scheduler: asha
    scheduler_options: {grace_period: 1, reduction_factor: 3, max_t: 50}
    backend: simulated
    backend_options: {blackbox: lcbench, task: blood-transfusion-service-center}
    stop: {max_time: 7200}
    n_workers: 4
    seed: 0

`config_space` may be left out on the simulated backend: the blackbox's own space is used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hpo_core.loading import LoadError, check_size, load_file
from hpo_core.registry import METHODS, MethodInfo, check_scheduler_options
from hpo_core.secrets import SecretError, check_references, remember_spec
from hpo_core.space import ConfigSpace
from hpo_core.stopping import StoppingCriterion
from hpo_core.store import validate_name

BACKENDS = ("simulated", "local", "sagemaker", "dask")
DEFAULT_MAX_FAILURES = 10
MAX_N_WORKERS = 10_000  # any backend; each backend has its own, lower bound


class SpecError(ValueError):
    """An invalid experiment spec; the message names the field."""


@dataclass
class ExperimentSpec:
    """An experiment, declared. See the module docstring for the YAML form."""

    name: str
    metric: str | list[str]
    mode: str | list[str] = "min"
    config_space: dict[str, Any] = field(default_factory=dict)
    scheduler: str = "asha"
    scheduler_options: dict[str, Any] = field(default_factory=dict)
    backend: str = "simulated"
    backend_options: dict[str, Any] = field(default_factory=dict)
    stop: dict[str, Any] = field(default_factory=dict)
    n_workers: int | str = 4  # or "auto": the backend's choice (GPU slots, else CPU count)
    seed: int = 0
    max_failures: int | None = DEFAULT_MAX_FAILURES  # None: no limit
    results_root: str = "experiments"
    tracking_uri: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        try:
            validate_name(self.name, "spec.name")
        except ValueError as err:
            raise SpecError(str(err)) from None
        metrics = [self.metric] if isinstance(self.metric, str) else self.metric
        if not isinstance(metrics, list) or not metrics or not all(
            isinstance(m, str) and m for m in metrics
        ):
            raise SpecError(f"spec.metric: must be a metric name or a list of them, got {self.metric!r}")
        repeated = sorted({m for m in metrics if metrics.count(m) > 1})
        if repeated:
            raise SpecError(f"spec.metric: {repeated[0]!r} is given more than once")
        modes = [self.mode] * len(metrics) if isinstance(self.mode, str) else self.mode
        if not isinstance(modes, list) or len(modes) != len(metrics):
            raise SpecError(f"spec.mode: needs one mode per metric, got {self.mode!r}")
        for m in modes:
            if m not in ("min", "max"):
                raise SpecError(f"spec.mode: must be 'min' or 'max', got {m!r}")
        if not isinstance(self.config_space, dict):
            raise SpecError("spec.config_space: must be a mapping of names to domains")
        try:
            ConfigSpace(self.config_space)
        except ValueError as err:
            raise SpecError(f"spec.{err}") from None
        if self.backend not in BACKENDS:
            raise SpecError(f"spec.backend: unknown backend {self.backend!r}; expected one of {BACKENDS}")
        if not self.config_space and self.backend != "simulated":
            raise SpecError("spec.config_space: required unless the backend is 'simulated'")
        if not isinstance(self.scheduler, str) or not self.scheduler:
            raise SpecError(f"spec.scheduler: must be a method name, got {self.scheduler!r}")
        for name in ("scheduler_options", "backend_options", "stop"):
            if not isinstance(getattr(self, name), dict):
                raise SpecError(f"spec.{name}: must be a mapping")
        try:
            check_scheduler_options(self.scheduler, self.scheduler_options)
        except ValueError as err:
            raise SpecError(f"spec.{err}") from None
        try:
            criterion = StoppingCriterion.from_dict(self.stop)
        except (TypeError, ValueError) as err:
            raise SpecError(f"spec.{err}") from None
        info = METHODS[self.scheduler]
        _check_objectives(info, metrics, self.scheduler_options)
        if criterion.is_unbounded and info.needs_stop_limit:
            why = ("a multi-fidelity method starts new trials for as long as it runs"
                   if info.multi_fidelity
                   else f"{self.scheduler!r} proposes new trials for as long as it runs")
            raise SpecError(f"spec.stop: set at least one limit (max_time, max_trials_started, "
                            f"max_trials_completed, ...): {why}")
        for name in ("n_workers", "seed"):
            value = getattr(self, name)
            if name == "n_workers" and value == "auto":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise SpecError(f"spec.{name}: must be an integer, got {value!r}")
        if self.seed < 0:
            raise SpecError(f"spec.seed: must be a non-negative integer, got {self.seed}")
        if not isinstance(self.results_root, str) or not self.results_root:
            raise SpecError(f"spec.results_root: must be a folder path, got {self.results_root!r}")
        if Path(self.results_root).exists() and not Path(self.results_root).is_dir():
            raise SpecError(f"spec.results_root: {self.results_root!r} is not a folder")
        if self.tracking_uri is not None and (not isinstance(self.tracking_uri, str)
                                              or not self.tracking_uri):
            raise SpecError(f"spec.tracking_uri: must be an MLflow tracking URI, "
                            f"got {self.tracking_uri!r}")
        if isinstance(self.n_workers, int) and not 1 <= self.n_workers <= MAX_N_WORKERS:
            raise SpecError(f"spec.n_workers: must be between 1 and {MAX_N_WORKERS}, "
                            f"got {self.n_workers}")
        if self.max_failures is not None and (
            isinstance(self.max_failures, bool)
            or not isinstance(self.max_failures, int)
            or self.max_failures < 1
        ):
            raise SpecError(f"spec.max_failures: must be a positive integer (or null: no limit), "
                            f"got {self.max_failures!r}")
        for name in ("config_space", "backend_options"):
            try:
                check_references(getattr(self, name), f"spec.{name}")
            except SecretError as err:
                raise SpecError(str(err)) from None
        remember_spec({"config_space": self.config_space, "backend_options": self.backend_options})

    @property
    def stopping_criterion(self) -> StoppingCriterion:
        return StoppingCriterion.from_dict(self.stop)

    @property
    def experiment_path(self) -> Path:
        return Path(self.results_root) / self.name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentSpec:
        if not isinstance(data, dict):
            raise SpecError(f"spec: must be a mapping, got {type(data).__name__}")
        try:
            check_size(data)
        except LoadError as err:
            raise SpecError(str(err)) from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"spec: unknown fields {unknown}; expected some of {sorted(known)}")
        for required in ("name", "metric"):
            if required not in data or data[required] in (None, ""):
                raise SpecError(f"spec.{required}: missing")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ExperimentSpec:
        """Load a spec from a .yaml/.yml or .json file."""
        try:
            data = load_file(path)
        except LoadError as err:
            raise SpecError(str(err)) from None
        return cls.from_dict(data)

    @classmethod
    def coerce(cls, value: ExperimentSpec | dict[str, Any] | str | os.PathLike[str]) -> ExperimentSpec:
        """A spec from a spec, a dict, or a path to a YAML/JSON file."""
        if isinstance(value, ExperimentSpec):
            return value
        if isinstance(value, dict):
            return cls.from_dict(value)
        return cls.from_file(value)


def _check_objectives(info: MethodInfo, metrics: list[str], options: Mapping[str, Any]) -> None:
    """A method of one metric gets one, a multi-objective method several; a method that runs
    another (`bounding_box`) is checked as that one (`zero_shot`, FIFO with a searcher, takes
    one metric)."""
    inner = info.runs(options)
    if inner is not None:
        nested = options.get("scheduler_options")
        if inner in METHODS and (nested is None or isinstance(nested, Mapping)):
            _check_objectives(METHODS[inner], metrics, nested or {})
        return  # an unknown method or options: building it says so
    if len(metrics) > 1 and not info.multi_objective:
        several = sorted(name for name, m in METHODS.items() if m.multi_objective)
        raise SpecError(f"spec.metric: {info.name!r} optimizes one metric, got {len(metrics)} "
                        f"({metrics}); the multi-objective methods are {several}")
    if len(metrics) == 1 and info.multi_objective:
        raise SpecError(f"spec.metric: {info.name!r} optimizes several metrics: give a list of "
                        f"at least two, got {metrics[0]!r}")
