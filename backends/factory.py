"""From an ExperimentSpec to its backend (`spec.backend` with `spec.backend_options`).

`spec.backend_options` for the simulated backend::

    {blackbox: lcbench, task: blood-transfusion-service-center}   # by name (default: this one)
    {blackbox: yahpo-lcbench, task: "3945"}                         # YAHPO Gym's LCBench surrogate
    {path: /data/blackboxes/lcbench/segment}                       # a saved blackbox folder
    {path: /data/yahpo/lcbench, task: "3945"}                      # a YAHPO scenario folder
    # plus SimulatedBackend's options: objectives, max_fidelity, surrogate, k, start_delay,
    # stop_delay, pause_delay, resume_delay (and root: a folder searched for blackboxes by name)

For `local` and `sagemaker` the options are the keyword arguments of `backends.local.LocalBackend`
and `backends.sagemaker.SageMakerBackend`, imported only when used. A `local` entry point that
names a Python function or class (`pkg.module:objective`, `path/to/file.py:objective`) runs in
function workers instead: the options are those of `backends.functions.FunctionBackend`. For
`dask` they are those of `backends.dask.DaskBackend` (the scheduler's `address`, the entry point,
`gpus_per_trial`, ...).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from hpo_core.backend import TrialBackend
from hpo_core.options import Keywords, check_options, keywords
from hpo_core.spec import ExperimentSpec, SpecError

DEFAULT_BLACKBOX = {"blackbox": "lcbench", "task": "blood-transfusion-service-center"}
REAL_BACKENDS = {
    "local": ("backends.local", "LocalBackend"),
    "sagemaker": ("backends.sagemaker", "SageMakerBackend"),
    "dask": ("backends.dask", "DaskBackend"),
}
BLACKBOX_KEYS = ("blackbox", "task", "path", "root")


def _check_options(factory: Callable[..., Any], options: Mapping[str, Any], reserved: tuple[str, ...],
                   extra: tuple[str, ...] = ()) -> None:
    """Unknown options and missing required ones are errors that name the option."""
    allowed = keywords(factory, leave_out=reserved)
    allowed = Keywords(allowed.names | set(extra), allowed.required, allowed.open, allowed.flags)
    try:
        check_options(options, allowed, "spec.backend_options", check_required=True)
    except ValueError as err:
        raise SpecError(str(err)) from None


def _simulated(spec: ExperimentSpec) -> TrialBackend:
    from backends.blackbox import BlackboxError, load_blackbox, load_blackbox_path
    from backends.simulated import SimulatedBackend

    options = dict(spec.backend_options)
    _check_options(SimulatedBackend, options, ("blackbox", "seed"), BLACKBOX_KEYS)
    where = {k: options.pop(k) for k in BLACKBOX_KEYS if k in options}
    try:
        if "path" in where:
            if "blackbox" in where:
                raise SpecError("spec.backend_options: give either 'path' or 'blackbox'")
            task = where.get("task")
            blackbox = load_blackbox_path(where["path"], None if task is None else str(task))
        else:
            name = where.get("blackbox", DEFAULT_BLACKBOX["blackbox"])
            task = where.get("task", DEFAULT_BLACKBOX["task"] if "blackbox" not in where else None)
            blackbox = load_blackbox(name, None if task is None else str(task), where.get("root"))
        backend = SimulatedBackend(blackbox, seed=spec.seed, **options)
    except (BlackboxError, FileNotFoundError) as err:
        raise SpecError(f"spec.backend_options: {err}") from err
    metrics = [spec.metric] if isinstance(spec.metric, str) else list(spec.metric)
    reported = backend.reported_names
    for metric in metrics:
        if metric not in reported:
            backend.close()
            raise SpecError(
                f"spec.metric: {metric!r} is not reported by blackbox {blackbox.name!r}; "
                f"it reports {reported}"
            )
    constraint = _constraint_attr(spec)
    if constraint is not None and constraint not in reported:
        backend.close()
        raise SpecError(
            f"spec.scheduler_options.constraint_attr: {constraint!r} is not reported by blackbox "
            f"{blackbox.name!r} (no config would count as feasible); it reports {reported}")
    cost_attr = spec.stop.get("cost_attr", "cost")
    if spec.stop.get("max_cost") is not None and cost_attr not in reported:
        backend.close()
        raise SpecError(
            f"spec.stop.cost_attr: max_cost sums the trials' {cost_attr!r}, which blackbox "
            f"{blackbox.name!r} does not report; set cost_attr to what it does, e.g. the time "
            f"a trial ran, {blackbox.time_attr!r} (it reports {reported})")
    return backend


def _constraint_attr(spec: ExperimentSpec) -> str | None:
    """The metric a constrained method (cbo, ehvi, a GP searcher) needs <= 0, if any."""
    from hpo_core.registry import METHODS

    options = {**METHODS[spec.scheduler].defaults, **spec.scheduler_options}
    searcher = options.get("searcher_options")
    attr = options.get("constraint_attr") or (
        searcher.get("constraint_attr") if isinstance(searcher, dict) else None)
    return attr if isinstance(attr, str) else None


def _functions(spec: ExperimentSpec, objective: Any) -> TrialBackend:
    from backends.functions import FunctionBackend
    from backends.objectives import ObjectiveError

    options = dict(spec.backend_options)
    _check_options(FunctionBackend, options, ())
    if objective is not None:
        options["entry_point"] = objective
    if isinstance(spec.metric, str):
        options.setdefault("metric", spec.metric)
    try:
        return FunctionBackend(**options)
    except ObjectiveError as err:
        message = str(err)
        raise SpecError(f"spec.{message}" if message.startswith("backend_") else message) from None


def build_backend(spec: ExperimentSpec, objective: Any = None) -> TrialBackend:
    """The backend `spec.backend` with `spec.backend_options`.

    `objective`: a Python function or class to run instead of the spec's entry point (the
    Python API passes it when it cannot be named by an entry point)."""
    from backends.objectives import is_function_entry

    if spec.backend == "simulated":
        return _simulated(spec)
    if spec.backend == "local" and (
            objective is not None or is_function_entry(spec.backend_options.get("entry_point"))):
        return _functions(spec, objective)
    if spec.backend not in REAL_BACKENDS:
        raise SpecError(f"spec.backend: unknown backend {spec.backend!r}")
    module_name, class_name = REAL_BACKENDS[spec.backend]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        raise SpecError(
            f"spec.backend: {spec.backend!r} needs the module {module_name}, which is missing"
        ) from err
    cls = getattr(module, class_name)
    options = dict(spec.backend_options)
    if spec.backend == "dask" and objective is not None:
        options["entry_point"] = objective
    _check_options(cls, options, ())
    backend = cls(**options)
    if spec.backend == "sagemaker":
        _check_price(spec, backend)
    return backend


def _check_price(spec: ExperimentSpec, backend: Any) -> None:
    """On SageMaker, `max_cost` sums the jobs' cost, which needs the instances' price."""
    cost_attr = spec.stop.get("cost_attr", "cost")
    if spec.stop.get("max_cost") is not None and backend.hourly_price is None and \
            cost_attr == backend.cost_attr:
        backend.close()
        raise SpecError(
            f"spec.backend_options.price_per_hour: max_cost sums the jobs' cost, and no price "
            f"is known for instance type {backend.settings.instance_type!r}; set price_per_hour "
            "(USD per instance and hour)")
