"""The experiment store: one folder per experiment, its files, and reading it back.

`files` names the layout and writes atomically, `lock` gives an experiment one owner,
`journal` logs what the tuner saw before it acts on it, `store` reads and writes an experiment
while it runs (snapshots plus the journal), `analysis` reads a finished or running one
(`load_experiment`, without the lock).

`store` and `analysis` (pandas, pyarrow) load on first use of their names, so that a module
that needs only the layout (`validate_name`: the spec) does not pay for them."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hpo_core.store.files import (
    CONFIG_PREFIX,
    NAME_PATTERN,
    RESULTS_FILE,
    ROW_COLUMNS,
    SPEC_FILE,
    STATE_FILE,
    TRANSFER_FILE,
    atomic_write_text,
    dumps,
    json_default,
    validate_name,
)
from hpo_core.store.journal import StoreError, StoreFullError
from hpo_core.store.lock import ExperimentLockedError, experiment_lock

if TYPE_CHECKING:
    from hpo_core.store.analysis import Experiment, load_experiment, pareto_mask
    from hpo_core.store.store import ExperimentStore, write_results

_LAZY = {"Experiment": "analysis", "load_experiment": "analysis", "pareto_mask": "analysis",
         "ExperimentStore": "store", "write_results": "store"}

__all__ = [
    "CONFIG_PREFIX",
    "NAME_PATTERN",
    "RESULTS_FILE",
    "ROW_COLUMNS",
    "SPEC_FILE",
    "STATE_FILE",
    "Experiment",
    "ExperimentLockedError",
    "ExperimentStore",
    "StoreError",
    "StoreFullError",
    "TRANSFER_FILE",
    "atomic_write_text",
    "dumps",
    "experiment_lock",
    "json_default",
    "load_experiment",
    "pareto_mask",
    "validate_name",
    "write_results",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"hpo_core.store.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
