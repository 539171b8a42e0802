"""The experiment store on disk.

Layout of `<root>/<experiment>/`:

* `spec.json`        the ExperimentSpec that started the experiment;
* `results.parquet`  one row per report: trial_id, time, status, decision, `config_<name>`
                     columns and every reported metric;
* `trials/<id>/`     per-trial files of real backends (config.json, stdout, stderr, checkpoint/);
* `state.json`       tuner, scheduler and searcher state, written atomically after the results.

MLflow mirrors this store; it is never the only copy.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from hpo_core.store.files import (
    CONFIG_PREFIX,
    JOURNAL_FILE,
    RESULTS_FILE,
    SPEC_FILE,
    STATE_FILE,
    atomic_write_text,
    dumps,
    json_default,
    validate_name,
)
from hpo_core.trial import Trial


class ExperimentStore:
    """Reads and writes one experiment's folder."""

    def __init__(self, root: str | os.PathLike[str], name: str):
        self.name = validate_name(name, "name")
        self.path = Path(root) / self.name
        self.trials_path = self.path / "trials"
        self._rows: list[dict[str, Any]] = []
        self._flushed_rows = 0
        self._journal: Any = None

    # -- files ---------------------------------------------------------------------------------
    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def has_state(self) -> bool:
        return (self.path / STATE_FILE).exists()

    def write_spec(self, spec: Mapping[str, Any]) -> None:
        atomic_write_text(self.path / SPEC_FILE, dumps(dict(spec)))

    def read_spec(self) -> dict[str, Any] | None:
        path = self.path / SPEC_FILE
        return json.loads(path.read_text()) if path.exists() else None

    def trial_dir(self, trial_id: int) -> Path:
        path = self.trials_path / str(int(trial_id))
        path.mkdir(parents=True, exist_ok=True)
        return path

    def checkpoint_dir(self, trial_id: int) -> Path:
        path = self.trial_dir(trial_id) / "checkpoint"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_trial_config(self, trial: Trial) -> Path:
        path = self.trial_dir(trial.trial_id) / "config.json"
        atomic_write_text(path, dumps(trial.config))
        return path

    # -- results -------------------------------------------------------------------------------
    def record(self, row: dict[str, Any]) -> None:
        """Buffer one report row (trial_id, time, status, decision, metrics); with a journal
        open, the row also reaches the journal file at once."""
        if self._journal is not None:
            line = json.dumps({"_seq": len(self._rows), **row}, default=json_default)
            self._journal.write(line + "\n")
            self._journal.flush()
        self._rows.append(row)

    def open_journal(self) -> None:
        """Append every new row to `results.journal.jsonl`, so that a cheap `save(full=False)`
        (state.json only) loses no row when the process is killed. Call after a full save."""
        if self._journal is None:
            self.create()
            self._journal = open(self.path / JOURNAL_FILE, "w")  # noqa: SIM115

    def close_journal(self) -> None:
        """Close the journal; an empty one (all rows in results.parquet) is removed."""
        if self._journal is not None:
            empty = self._journal.tell() == 0
            self._journal.close()
            self._journal = None
            if empty:
                (self.path / JOURNAL_FILE).unlink(missing_ok=True)

    @property
    def num_rows(self) -> int:
        return len(self._rows)

    def rows(self) -> list[dict[str, Any]]:
        return self._rows

    def results_frame(self, trials: Mapping[int, Trial]) -> pd.DataFrame:
        """All report rows with each trial's config as `config_<name>` columns."""
        frame = pd.DataFrame(self._rows)
        if frame.empty:
            return frame
        config_rows = {
            tid: {f"{CONFIG_PREFIX}{k}": _scalar(v) for k, v in t.config.items()}
            for tid, t in trials.items()
        }
        configs = pd.DataFrame.from_dict(config_rows, orient="index")
        if not configs.empty:
            configs.index.name = "trial_id"
            overlap = [c for c in configs.columns if c in frame.columns]
            frame = frame.drop(columns=overlap).join(configs, on="trial_id")
        return frame

    def save(self, state: Mapping[str, Any], trials: Mapping[int, Trial], full: bool = True) -> None:
        """Write results.parquet (if new rows) and then state.json, each atomically.

        `full=False` writes state.json only: the rows since the last full save are in the
        journal (see `open_journal`), which `load_state` reads back."""
        self.create()
        if full and (len(self._rows) != self._flushed_rows
                     or not (self.path / RESULTS_FILE).exists()):
            frame = self.results_frame(trials)
            tmp = self.path / f".{RESULTS_FILE}.tmp"
            _to_parquet(frame, tmp)
            os.replace(tmp, self.path / RESULTS_FILE)
            self._flushed_rows = len(self._rows)
            if self._journal is not None:
                self._journal.seek(0)
                self._journal.truncate()
        atomic_write_text(self.path / STATE_FILE, json.dumps(dict(state), default=json_default,
                                                             separators=(",", ":")))

    def load_state(self) -> dict[str, Any] | None:
        """The saved state, with the report rows it covers loaded back into the buffer."""
        path = self.path / STATE_FILE
        if not path.exists():
            return None
        state = json.loads(path.read_text())
        results = self.path / RESULTS_FILE
        self._rows = []
        if results.exists():
            frame = pd.read_parquet(results)
            frame = frame[[c for c in frame.columns if not c.startswith(CONFIG_PREFIX)]]
            self._rows = [
                {k: v for k, v in row.items() if not _is_missing(v)}
                for row in frame.to_dict(orient="records")
            ]
        self._flushed_rows = len(self._rows)
        journal = self.path / JOURNAL_FILE
        if journal.exists():
            for line in journal.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    break  # a line cut by the kill: the state does not cover it either
                if row.pop("_seq") == len(self._rows):
                    self._rows.append(row)
            if len(self._rows) != self._flushed_rows:
                self._flushed_rows = -1  # rewrite results.parquet at the next full save
        covered = state.get("num_results")
        if isinstance(covered, int) and 0 <= covered < len(self._rows):
            # killed between writing results.parquet and state.json: drop the rows the state
            # does not know (they are reported again), and rewrite the file at the next save
            self._rows = self._rows[:covered]
            self._flushed_rows = -1
        return state


def _scalar(value: Any) -> Any:
    if isinstance(value, list | dict | tuple):
        return json.dumps(value, default=json_default)
    return value


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _to_parquet(frame: pd.DataFrame, path: Path) -> None:
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object:
            kinds = {type(v) for v in frame[column].dropna()}
            if len(kinds) > 1 or (kinds and not kinds <= {str, bool}):
                frame[column] = frame[column].map(
                    lambda v: None if _is_missing(v) else (v if isinstance(v, str) else dumps(v))
                )
    frame.to_parquet(path, index=False)
