"""From an ExperimentSpec to a ready Tuner: backend, config space, scheduler, store.

Shared by the `tune` flow and the `tunesmith` CLI; imports no Prefect or MLflow.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from backends.base import TrialBackend
from backends.factory import build_backend, default_scheduler_options, resolve_config_space
from hpo_core.methods import build_scheduler
from hpo_core.schedulers.base import Scheduler
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
    store.create()
    store.write_spec(spec.to_dict())
    return store


def resolve_n_workers(spec: ExperimentSpec, backend: TrialBackend) -> int:
    """`spec.n_workers`, or for "auto" the backend's default (GPU slots, else CPU count)."""
    if spec.n_workers != "auto":
        return int(spec.n_workers)
    default = getattr(backend, "default_n_workers", None)
    return int(default()) if callable(default) else os.cpu_count() or 1


def build_tuner(
    spec: ExperimentSpec,
    callbacks: Iterable[TunerCallback] = (),
    backend: TrialBackend | None = None,
    scheduler: Scheduler | None = None,
) -> Tuner:
    """A Tuner for `spec` (resuming from its store when a state exists there).

    `scheduler`: a ready method object to use instead of building `spec.scheduler` (the
    Python API passes one when it was given an object)."""
    backend = backend or build_backend(spec)
    if scheduler is None:
        config_space = resolve_config_space(spec, backend)
        options = {**default_scheduler_options(spec, backend), **spec.scheduler_options}
        scheduler = build_scheduler(
            spec.scheduler, config_space, spec.metric, spec.mode, spec.seed, options
        )
    return Tuner(
        scheduler,
        backend,
        spec.stopping_criterion,
        n_workers=resolve_n_workers(spec, backend),
        callbacks=callbacks,
        max_failures=spec.max_failures,
        store=open_store(spec),
    )
