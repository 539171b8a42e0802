"""The experiment store: one folder per experiment, its files, and reading it back.

`files` names the layout and writes atomically, `store` reads and writes an experiment while it
runs, `analysis` reads a finished or running one (`load_experiment`)."""

from hpo_core.store.analysis import Experiment, load_experiment, pareto_mask
from hpo_core.store.files import (
    CONFIG_PREFIX,
    JOURNAL_FILE,
    NAME_PATTERN,
    RESULTS_FILE,
    SPEC_FILE,
    STATE_FILE,
    atomic_write_text,
    dumps,
    json_default,
    validate_name,
)
from hpo_core.store.store import ExperimentStore

__all__ = [
    "CONFIG_PREFIX",
    "JOURNAL_FILE",
    "NAME_PATTERN",
    "RESULTS_FILE",
    "SPEC_FILE",
    "STATE_FILE",
    "Experiment",
    "ExperimentStore",
    "atomic_write_text",
    "dumps",
    "json_default",
    "load_experiment",
    "pareto_mask",
    "validate_name",
]
