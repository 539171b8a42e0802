"""Trials' configs as the `config_<name>` columns of results.parquet, kept across snapshots.

`ConfigColumns.frame(trials)` gives one row per trial (index `trial_id`), what
`pd.DataFrame.from_dict({trial_id: columns}, orient="index")` gives. The snapshot writer asks
for it at every snapshot of a growing experiment, so a trial's columns are made once per config
object (configs are replaced, never changed in place: PBT's new hyperparameters come as a new
dict), and while every config has the same names the frame is built from column lists kept up
to date, instead of from one dict per trial each time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from hpo_core.store.files import CONFIG_PREFIX, json_default
from hpo_core.trial import Trial


class ConfigColumns:
    """The config columns of the trials seen so far (see the module docstring)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._configs: dict[int, Mapping[str, Any]] = {}  # the config each row was made from
        self._rows: dict[int, dict[str, Any]] = {}  # trial id -> its columns
        self._uniform = True  # every row has the same names, in the same order: ...
        self._names: tuple[str, ...] | None = None  # ... these (None: no row yet)
        self._lists: dict[str, list[Any]] = {}  # ... and these are the columns' values
        self._position: dict[int, int] = {}  # trial id -> its place in the lists

    def frame(self, trials: Mapping[int, Trial] | Mapping[int, Mapping[str, Any]]
              ) -> pd.DataFrame:
        """The config columns of `trials` (Trial objects, or configs by trial id)."""
        for tid, trial in trials.items():
            config = trial.config if isinstance(trial, Trial) else trial
            if self._configs.get(int(tid)) is not config:
                self._add(int(tid), config)
        if len(self._rows) != len(trials):  # rows of trials that `trials` lacks
            self._reset()  # start again, from `trials` alone
            return self.frame(trials)
        if self._uniform:
            frame = pd.DataFrame(self._lists, index=list(self._position))
        else:
            frame = pd.DataFrame.from_dict({int(tid): self._rows[int(tid)] for tid in trials},
                                           orient="index")
        if not frame.empty:
            frame.index.name = "trial_id"
        return frame

    def _add(self, tid: int, config: Mapping[str, Any]) -> None:
        row = {f"{CONFIG_PREFIX}{k}": _scalar(v) for k, v in config.items()}
        self._configs[tid] = config
        self._rows[tid] = row
        if not self._uniform:
            return
        if self._names is None:
            self._names = tuple(row)
            self._lists = {name: [] for name in row}
        if tuple(row) != self._names:  # from now on: one dict per trial (from_dict)
            self._uniform, self._lists, self._position = False, {}, {}
            return
        place = self._position.get(tid)
        if place is None:
            self._position[tid] = len(self._position)
            for name, values in self._lists.items():
                values.append(row[name])
        else:
            for name, values in self._lists.items():
                values[place] = row[name]


def _scalar(value: Any) -> Any:
    """A config value as one parquet cell: lists, dicts and tuples as JSON text."""
    if isinstance(value, list | dict | tuple):
        return json.dumps(value, default=json_default)
    return value
