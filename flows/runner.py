"""From an ExperimentSpec to a ready Tuner: backend, config space, scheduler, store.

Shared by the `tune` flow and the `tunesmith` CLI; imports no Prefect or MLflow. `check_spec`
builds the same parts once, so a spec the backend or scheduler refuses fails before Prefect or
any trial starts.
"""

from __future__ import annotations

from collections.abc import Iterable

import flows.secret_blocks  # noqa: F401 - registers the resolver of `prefect:` references
from backends.factory import build_backend, default_scheduler_options, resolve_config_space
from hpo_core.backend import TrialBackend
from hpo_core.registry import build_scheduler
from hpo_core.schedulers.base import Scheduler
from hpo_core.secrets import one_line
from hpo_core.spec import ExperimentSpec, SpecError
from hpo_core.store import ExperimentStore
from hpo_core.tuner import Tuner, TunerCallback

# Fields that may change when an existing experiment is resumed (a longer budget, more workers).
RESUMABLE_CHANGES = {"stop", "n_workers", "max_failures", "tracking_uri", "backend_options"}


def open_store(spec: ExperimentSpec) -> ExperimentStore:
    """The experiment's store, owned by this process (ExperimentLockedError if another live
    process owns it); an existing one must belong to the same experiment."""
    store = ExperimentStore(spec.results_root, spec.name)
    store.lock()  # before anything is read for writing
    _check_same_experiment(spec, store)
    store.create()
    store.write_spec(spec.to_dict())
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


def resolve_n_workers(spec: ExperimentSpec, backend: TrialBackend) -> int:
    """`spec.n_workers`, or for "auto" the backend's default (GPU slots, else CPU count); at
    most what the backend can run at once."""
    n_workers = backend.default_n_workers() if spec.n_workers == "auto" else int(spec.n_workers)
    limit = backend.max_n_workers()
    if n_workers > limit:
        raise SpecError(f"spec.n_workers: the {spec.backend} backend runs at most {limit} "
                        f"trials at once, got {n_workers}")
    return n_workers


def check_spec(spec: ExperimentSpec) -> None:
    """Everything the backend and the scheduler check, before any flow or trial starts: the
    backend's options (an entry point that exists, known options, a known blackbox), the
    config space, the scheduler's options, `n_workers`, an existing store of another
    experiment under the same name. Raises SpecError."""
    check_store(spec)
    backend = _build_backend(spec)
    try:
        _build_scheduler(spec, backend)
        resolve_n_workers(spec, backend)
    finally:
        backend.close()


def build_tuner(
    spec: ExperimentSpec,
    callbacks: Iterable[TunerCallback] = (),
    backend: TrialBackend | None = None,
    scheduler: Scheduler | None = None,
) -> Tuner:
    """A Tuner for `spec` (resuming from its store when a state exists there).

    `scheduler`: a ready method object to use instead of building `spec.scheduler` (the
    Python API passes one when it was given an object)."""
    backend = backend or _build_backend(spec)
    if scheduler is None:
        scheduler = _build_scheduler(spec, backend)
    return Tuner(
        scheduler,
        backend,
        spec.stopping_criterion,
        n_workers=resolve_n_workers(spec, backend),
        callbacks=callbacks,
        max_failures=spec.max_failures,
        store=open_store(spec),
    )


def _build_backend(spec: ExperimentSpec) -> TrialBackend:
    try:
        return build_backend(spec)
    except SpecError:
        raise
    except (TypeError, ValueError, OSError) as err:
        raise SpecError(_named("spec.backend_options", err)) from None


def _build_scheduler(spec: ExperimentSpec, backend: TrialBackend) -> Scheduler:
    config_space = resolve_config_space(spec, backend)
    options = {**default_scheduler_options(spec, backend), **spec.scheduler_options}
    try:
        return build_scheduler(
            spec.scheduler, config_space, spec.metric, spec.mode, spec.seed, options
        )
    except SpecError:
        raise
    except (TypeError, ValueError) as err:
        raise SpecError(_named("spec.scheduler_options", err)) from None


def _named(field: str, err: Exception) -> str:
    """The error as one line that names the field (once)."""
    text = one_line(str(err)) or type(err).__name__
    if text.startswith("spec."):
        return text
    if text.startswith(("backend_options.", "scheduler_options.")):
        return f"spec.{text}"
    return f"{field}: {text}"
