"""The one assembly path: an ExperimentSpec -> backend, config space, scheduler, store -> Tuner.

Every way of running an experiment comes through here: the `tune` flow (and the `retune`,
`compare` and `smoke` flows built on it), the `tunesmith` CLI (`run --no-flow`, and its check
before a flow starts), the Python API and the benchmarks. Imports no Prefect or MLflow.

`assemble(spec)` builds and checks the parts once: the backend (`backends.factory`), the config
space (the spec's, or the one the backend implies), the scheduler options (the spec's, with the
fidelity the backend implies where the method takes one), the scheduler (a transfer method
reads the earlier evaluations the experiment kept when it started, not its sources again) and
`n_workers` (the backend's default for "auto", at most its `max_n_workers()`). Every problem
is a SpecError that names the field. `Experiment.tuner()` then opens the experiment's store
(owned by this process) and returns the Tuner.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import flows.secret_blocks  # noqa: F401 - registers the resolver of `prefect:` references
from backends.factory import build_backend
from hpo_core.backend import Fidelity, TrialBackend
from hpo_core.registry import METHODS, build_scheduler
from hpo_core.schedulers.base import Scheduler
from hpo_core.secrets import one_line
from hpo_core.space import ConfigSpace
from hpo_core.spec import ExperimentSpec, SpecError
from hpo_core.store import ExperimentStore
from hpo_core.tuner import Tuner, TunerCallback

logger = logging.getLogger(__name__)

#: Spec fields that may change when an existing experiment is resumed (a longer budget, more
#: workers); `results_root` says where the experiment is, not what it is (the same folder
#: spelled another way, or a folder moved elsewhere)
RESUMABLE_CHANGES = {"stop", "n_workers", "max_failures", "tracking_uri", "backend_options",
                     "results_root"}


@dataclass
class Experiment:
    """A spec with its parts built and checked (see `assemble`)."""

    spec: ExperimentSpec
    backend: TrialBackend
    config_space: ConfigSpace
    scheduler_options: dict[str, Any]
    scheduler: Scheduler
    n_workers: int
    #: what a transfer method read from its sources now, kept in the store when it starts
    transfer: list[dict[str, Any]] | None = None

    def tuner(self, callbacks: Iterable[TunerCallback] = (), persist: bool = True) -> Tuner:
        """The Tuner of this experiment, over its store (opened here and owned by this
        process; resuming from it when it holds a state). The backend is closed if the store
        cannot be opened. `persist=False`: no store at all (benchmarks of the engine alone)."""
        try:
            store = open_store(self.spec, self.transfer) if persist else None
        except BaseException:
            self.close()
            raise
        return Tuner(
            self.scheduler,
            self.backend,
            self.spec.stopping_criterion,
            n_workers=self.n_workers,
            callbacks=callbacks,
            max_failures=self.spec.max_failures,
            store=store,
        )

    def close(self) -> None:
        """Release the backend (for an experiment that is only checked, never run)."""
        self.backend.close()


def assemble(spec: ExperimentSpec, objective: Any = None, backend: TrialBackend | None = None,
             scheduler: Scheduler | None = None) -> Experiment:
    """Build and check everything `spec` names (SpecError naming the field).

    `objective`: a Python function or class to run instead of the spec's entry point (the
    Python API passes it when it cannot be named by an entry point). `backend`, `scheduler`:
    ready objects to use instead of building `spec.backend` / `spec.scheduler` (tests and the
    Python API pass them). A backend built here is closed again if a later part fails."""
    built = backend is None
    backend = backend or _build_backend(spec, objective)
    transfer = None
    try:
        space = resolve_config_space(spec, backend)
        options = default_scheduler_options(spec, backend)
        if scheduler is None:
            transfer_options, transfer = _transfer_options(spec, options)
            scheduler = _build_scheduler(spec, space, transfer_options)
        n_workers = resolve_n_workers(spec, backend)
    except BaseException:
        if built:
            backend.close()
        raise
    return Experiment(spec, backend, space, options, scheduler, n_workers, transfer)


def build_tuner(
    spec: ExperimentSpec,
    callbacks: Iterable[TunerCallback] = (),
    backend: TrialBackend | None = None,
    scheduler: Scheduler | None = None,
    objective: Any = None,
) -> Tuner:
    """`assemble(spec, ...).tuner(callbacks)`: a Tuner for `spec`, resuming from its store
    when a state exists there."""
    return assemble(spec, objective, backend, scheduler).tuner(callbacks)


def check_spec(spec: ExperimentSpec) -> None:
    """Everything the backend and the scheduler check, before any flow or trial starts: the
    backend's options (an entry point that exists, known options, a known blackbox), the
    config space, the scheduler's options, `n_workers`, an existing store of another
    experiment under the same name. Raises SpecError."""
    check_store(spec)
    assemble(spec).close()


def resolve_config_space(spec: ExperimentSpec, backend: TrialBackend) -> ConfigSpace:
    """The spec's config space, or the backend's (a simulated blackbox's) when the spec leaves
    it empty; a spec's space must give every hyperparameter the backend's space has."""
    implied = backend.config_space()
    if spec.config_space:
        space = ConfigSpace(spec.config_space)
        if implied is not None:
            missing = [n for n in implied.names if n not in space]
            if missing:
                raise SpecError(
                    f"spec.config_space: the config space of the {spec.backend} backend "
                    f"needs values for {missing} (as domains or fixed values)"
                )
        return space
    if implied is None:
        raise SpecError(f"spec.config_space: required for the {spec.backend!r} backend")
    return implied


def default_scheduler_options(spec: ExperimentSpec, backend: TrialBackend) -> dict[str, Any]:
    """`spec.scheduler_options`, completed with the fidelity the backend implies.

    For a multi-fidelity method, `resource_attr` becomes the fidelity's name, `max_t` its
    largest value and `grace_period` its smallest, each only where the spec leaves it out and
    the method takes it; for a method that runs another one (`bounding_box`), the same goes for
    the other one's options.
    """
    return _with_fidelity(spec.scheduler, dict(spec.scheduler_options), backend.fidelity())


def _with_fidelity(method: str, options: dict[str, Any], fidelity: Fidelity | None
                   ) -> dict[str, Any]:
    info = METHODS.get(method)
    if info is None:
        return options
    inner = options.get("scheduler")
    if isinstance(inner, str) and {"scheduler", "scheduler_options"} <= set(info.option_names()):
        inner_options = options.get("scheduler_options")
        if inner_options is None or isinstance(inner_options, Mapping):
            options["scheduler_options"] = _with_fidelity(inner, dict(inner_options or {}),
                                                          fidelity)
        return options
    if not info.multi_fidelity or fidelity is None or not fidelity.values:
        return options
    defaults = {
        "resource_attr": fidelity.name,
        "max_t": fidelity.values[-1],
        "grace_period": fidelity.values[0],
    }
    takes = info.option_names()
    for key, value in defaults.items():
        if key in takes and key not in options:
            options[key] = value
    return options


def resolve_n_workers(spec: ExperimentSpec, backend: TrialBackend) -> int:
    """`spec.n_workers`, or for "auto" the backend's default (GPU slots, else CPU count); at
    most what the backend can run at once."""
    n_workers = backend.default_n_workers() if spec.n_workers == "auto" else int(spec.n_workers)
    limit = backend.max_n_workers()
    if n_workers > limit:
        raise SpecError(f"spec.n_workers: the {spec.backend} backend runs at most {limit} "
                        f"trials at once, got {n_workers}")
    return n_workers


def open_store(spec: ExperimentSpec, transfer: list[dict[str, Any]] | None = None
               ) -> ExperimentStore:
    """The experiment's store, owned by this process (ExperimentLockedError if another live
    process owns it); an existing one must belong to the same experiment. `transfer`: the
    evaluations a transfer method read from its sources, kept there (`_transfer_options`)."""
    store = ExperimentStore(spec.results_root, spec.name)
    store.lock()  # before anything is read for writing
    _check_same_experiment(spec, store)
    store.create()
    store.write_spec(spec.to_dict())
    if transfer is not None:
        store.write_transfer(transfer)
        if not isinstance(spec.metric, str) and len(spec.metric) > 1:
            logger.warning("experiment %s: transfer ranks earlier configs by the first metric, "
                           "%s, only", spec.name, spec.metric[0])
    return store


def check_store(spec: ExperimentSpec) -> None:
    """SpecError if the experiment's folder holds another experiment (reads only, no lock)."""
    _check_same_experiment(spec, ExperimentStore(spec.results_root, spec.name))


def _check_same_experiment(spec: ExperimentSpec, store: ExperimentStore) -> None:
    previous = store.read_spec() if store.path.exists() else None
    if previous is not None and store.has_state():
        current = spec.to_dict()
        changed = sorted(
            key for key in current
            if key not in RESUMABLE_CHANGES and previous.get(key) != current[key]
        )
        if changed:
            raise SpecError(
                f"spec: experiment {spec.name!r} exists at {store.path} with different "
                f"{', '.join(changed)}; use another name to start a new experiment"
            )


def _build_backend(spec: ExperimentSpec, objective: Any) -> TrialBackend:
    try:
        return build_backend(spec, objective)
    except SpecError:
        raise
    except (TypeError, ValueError, OSError) as err:
        raise SpecError(_named("spec.backend_options", err)) from None


def _build_scheduler(spec: ExperimentSpec, space: ConfigSpace,
                     options: dict[str, Any]) -> Scheduler:
    try:
        return build_scheduler(spec.scheduler, space, spec.metric, spec.mode, spec.seed, options)
    except SpecError:
        raise
    except (TypeError, ValueError) as err:
        raise SpecError(_named("spec.scheduler_options", err)) from None


def _transfer_options(spec: ExperimentSpec, options: dict[str, Any]
                      ) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """`options` with a transfer method's `transfer_from` as the evaluations it names, inline:
    those the experiment kept when it started (a resume reads neither the sources, which may
    have moved or changed since, nor anything else), else those read from the sources now,
    also returned to be kept when it starts (None: nothing was read)."""
    info = METHODS.get(spec.scheduler)
    if info is None or not info.transfer:
        return options, None
    store = ExperimentStore(spec.results_root, spec.name)
    kept = store.read_transfer() if store.has_state() else None
    if kept is not None:
        return {**options, "transfer_from": kept}, None
    from hpo_core.transfer import transfer_evaluations  # loaded by transfer methods only

    try:
        read = transfer_evaluations(options.get("transfer_from", ()), spec.metric, spec.mode)
    except ValueError as err:
        raise SpecError(_named("spec.scheduler_options", err)) from None
    return {**options, "transfer_from": read}, read


def _named(field: str, err: Exception) -> str:
    """The error as one line that names the field (once)."""
    text = one_line(str(err)) or type(err).__name__
    if text.startswith("spec."):
        return text
    if text.startswith(("backend_options.", "scheduler_options.")):
        return f"spec.{text}"
    return f"{field}: {text}"
