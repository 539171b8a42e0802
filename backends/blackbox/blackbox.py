"""The blackbox format: a table of configs x seeds x fidelities -> objectives.

A `Blackbox` holds

* `configs`: one row per tabulated configuration (a DataFrame, columns = hyperparameters);
* `objectives`: a dense float32 array of shape (configs, seeds, fidelities, objectives); NaN
  marks a fidelity a curve does not reach;
* `fidelity_name` (e.g. "epoch") and its sorted `fidelity_values`;
* `objective_names`, their `modes` ("min"/"max"), the `default_metric`, and `time_attr`: the
  objective holding the cumulative elapsed seconds of training up to each fidelity;
* `config_space`: the space the configs were drawn from.

On disk a blackbox is a folder: `configs.parquet`, `objectives.parquet` (the dense array
flattened in C order, one column per objective) and `meta.json` (everything else).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hpo_core.space import ConfigSpace, as_config_space

FORMAT_VERSION = 1
CONFIGS_FILE = "configs.parquet"
OBJECTIVES_FILE = "objectives.parquet"
META_FILE = "meta.json"
#: Keys of the tuner's own columns in results.parquet; a blackbox must not report them.
RESERVED_NAMES = frozenset({"trial_id", "time", "status", "decision"})


class BlackboxError(ValueError):
    """An invalid blackbox or blackbox request; the message names the field."""


class Blackbox:
    """Tabulated learning curves with their config space and metadata (see the module doc)."""

    def __init__(
        self,
        configs: pd.DataFrame,
        objectives: np.ndarray,
        config_space: ConfigSpace | Mapping[str, Any],
        fidelity_name: str,
        fidelity_values: Sequence[float],
        objective_names: Sequence[str],
        time_attr: str,
        modes: Mapping[str, str] | None = None,
        default_metric: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ):
        self.config_space = as_config_space(config_space)
        self.configs = configs.reset_index(drop=True)
        self.objectives = np.asarray(objectives, dtype=np.float32)
        self.fidelity_name = fidelity_name
        self.fidelity_values = np.asarray(fidelity_values)
        self.objective_names = list(objective_names)
        self.time_attr = time_attr
        self.modes = {name: "min" for name in self.objective_names}
        self.modes.update(modes or {})
        self.default_metric = default_metric or next(
            (n for n in self.objective_names if n != time_attr), time_attr
        )
        self.metadata = dict(metadata or {})
        self._validate()
        self._objective_index = {n: i for i, n in enumerate(self.objective_names)}
        self._fidelity_index = {v: i for i, v in enumerate(self.fidelity_values.tolist())}
        self._config_index: dict[Hashable, int] | None = None

    def _validate(self) -> None:
        names = self.objective_names
        if self.objectives.ndim != 4:
            raise BlackboxError(
                "objectives: expected an array (configs, seeds, fidelities, objectives), got "
                f"shape {self.objectives.shape}"
            )
        expected = (len(self.configs), self.objectives.shape[1], len(self.fidelity_values),
                    len(names))
        if self.objectives.shape != expected:
            raise BlackboxError(f"objectives: shape {self.objectives.shape}, expected {expected}")
        if len(set(names)) != len(names):
            raise BlackboxError(f"objective_names: duplicates in {names}")
        clash = sorted((set(names) | {self.fidelity_name}) & RESERVED_NAMES)
        if clash:
            raise BlackboxError(
                f"objective_names: {clash} are the tuner's own result columns; rename them "
                "(e.g. 'time' -> 'elapsed_time')"
            )
        if self.fidelity_name in names:
            raise BlackboxError(f"fidelity_name: {self.fidelity_name!r} is also an objective")
        if self.time_attr not in names:
            raise BlackboxError(f"time_attr: {self.time_attr!r} is not among the objectives {names}")
        if self.default_metric not in names:
            raise BlackboxError(
                f"default_metric: {self.default_metric!r} is not among the objectives {names}"
            )
        for name, mode in self.modes.items():
            if name not in names:
                raise BlackboxError(f"modes.{name}: not an objective; objectives are {names}")
            if mode not in ("min", "max"):
                raise BlackboxError(f"modes.{name}: must be 'min' or 'max', got {mode!r}")
        if len(self.fidelity_values) == 0:
            raise BlackboxError("fidelity_values: empty")
        if np.any(np.diff(self.fidelity_values.astype(float)) <= 0):
            raise BlackboxError("fidelity_values: must be strictly increasing")
        missing = [n for n in self.config_space.names if n not in self.configs.columns]
        if missing:
            raise BlackboxError(f"configs: no column for the hyperparameters {missing}")

    # -- sizes and names -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.metadata.get("name", "blackbox"))

    @property
    def num_configs(self) -> int:
        return self.objectives.shape[0]

    @property
    def num_seeds(self) -> int:
        return self.objectives.shape[1]

    @property
    def max_fidelity(self) -> float:
        return self.fidelity_values[-1].item()

    def objective_index(self, name: str) -> int:
        try:
            return self._objective_index[name]
        except KeyError:
            raise BlackboxError(
                f"metric: {name!r} is not an objective of blackbox {self.name!r}; "
                f"it has {self.objective_names}"
            ) from None

    def fidelity_index(self, value: float) -> int:
        """Position of a fidelity value in `fidelity_values` (the largest one not above it)."""
        index = self._fidelity_index.get(value)
        if index is None:
            index = int(np.searchsorted(self.fidelity_values, value, side="right")) - 1
            if index < 0:
                raise BlackboxError(
                    f"{self.fidelity_name}: {value!r} is below the first fidelity "
                    f"{self.fidelity_values[0]}"
                )
        return index

    # -- lookups -------------------------------------------------------------------------------
    def config(self, index: int) -> dict[str, Any]:
        """The tabulated config at row `index` (Python scalars)."""
        values = {name: self.configs[name].iat[int(index)] for name in self.config_space.names}
        config = {k: v.item() if isinstance(v, np.generic) else v for k, v in values.items()}
        return {**config, **self.config_space.fixed}

    def config_key(self, config: Mapping[str, Any]) -> Hashable:
        """A hashable key of a config's hyperparameter values (3 and 3.0 are the same key)."""
        key = tuple(map(config.__getitem__, self.config_space.domains))
        try:
            hash(key)
        except TypeError:  # unhashable values (e.g. list-valued choices)
            return self.config_space.config_key(config)
        return key

    def index_of(self, config: Mapping[str, Any]) -> int | None:
        """Row of a tabulated config equal to `config`, or None if it is not in the table."""
        return self.index_of_key(self.config_key(config))

    def index_of_key(self, key: Hashable) -> int | None:
        """Row of the tabulated config with `config_key` `key`, or None."""
        if self._config_index is None:
            self._config_index = {}
            for i, config in enumerate(self.all_configs()):
                self._config_index.setdefault(self.config_key(config), i)
        return self._config_index.get(key)

    def all_configs(self) -> list[dict[str, Any]]:
        """Every tabulated config, in row order (hyperparameters only, Python scalars)."""
        names = self.config_space.names
        columns = [self.configs[n].tolist() for n in names]
        return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]

    def curve(self, index: int, seed: int = 0) -> np.ndarray:
        """All fidelities of one config and seed: a (fidelities, objectives) view."""
        return self.objectives[index, seed]

    def values(self, metric: str, fidelity: float | None = None) -> np.ndarray:
        """One objective for every config and seed at a fidelity (default: the last one)."""
        f = len(self.fidelity_values) - 1 if fidelity is None else self.fidelity_index(fidelity)
        return self.objectives[:, :, f, self.objective_index(metric)]

    def best_value(self, metric: str | None = None, mode: str | None = None) -> float:
        """Best value of `metric` over configs at the max fidelity, averaged over seeds.

        The reference for regret: `regret = |best found - best_value|`.
        """
        metric = metric or self.default_metric
        mode = mode or self.modes[metric]
        with warnings.catch_warnings():  # configs whose curves end early are NaN here
            warnings.simplefilter("ignore", RuntimeWarning)
            values = np.nanmean(self.values(metric).astype(np.float64), axis=1)
        return float(np.nanmin(values) if mode == "min" else np.nanmax(values))

    # -- persistence ---------------------------------------------------------------------------
    def meta_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "config_space": self.config_space.to_json(),
            "fidelity_name": self.fidelity_name,
            "fidelity_values": self.fidelity_values.tolist(),
            "objective_names": self.objective_names,
            "time_attr": self.time_attr,
            "modes": self.modes,
            "default_metric": self.default_metric,
            "shape": list(self.objectives.shape),
            "metadata": self.metadata,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the blackbox to folder `path` (created if needed)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.configs.to_parquet(path / CONFIGS_FILE, index=False, compression="zstd")
        columns = {n: self.objectives[..., i].ravel() for i, n in enumerate(self.objective_names)}
        # Few distinct values (accuracies on a small set) compress best with a dictionary;
        # continuous ones (losses, times) with byte-stream-split.
        discrete = [n for n, v in columns.items() if len(np.unique(v)) * 4 < len(v)]
        pq.write_table(
            pa.table(columns), path / OBJECTIVES_FILE, compression="zstd", compression_level=19,
            use_dictionary=discrete or False,
            use_byte_stream_split=[n for n in columns if n not in discrete] or False,
        )
        (path / META_FILE).write_text(json.dumps(self.meta_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Blackbox:
        """Read a blackbox folder written by `save`."""
        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.exists():
            raise FileNotFoundError(f"no blackbox at {path} (missing {META_FILE})")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise BlackboxError(
                f"{meta_path}: format_version {meta.get('format_version')!r}, "
                f"expected {FORMAT_VERSION}"
            )
        # no threads: see `hpo_core.store.store.read_rows` (pyarrow's abort at exit)
        table = pq.read_table(path / OBJECTIVES_FILE, use_threads=False)
        names = meta["objective_names"]
        shape = tuple(meta["shape"])
        objectives = np.empty(shape, dtype=np.float32)
        for i, name in enumerate(names):
            objectives[..., i] = table.column(name).to_numpy().reshape(shape[:3])
        return cls(
            configs=pd.read_parquet(path / CONFIGS_FILE, use_threads=False),
            objectives=objectives,
            config_space=ConfigSpace.from_json(meta["config_space"]),
            fidelity_name=meta["fidelity_name"],
            fidelity_values=meta["fidelity_values"],
            objective_names=names,
            time_attr=meta["time_attr"],
            modes=meta["modes"],
            default_metric=meta["default_metric"],
            metadata=meta.get("metadata"),
        )

    def __repr__(self) -> str:
        return (
            f"Blackbox({self.name!r}: {self.num_configs} configs x {self.num_seeds} seeds x "
            f"{len(self.fidelity_values)} {self.fidelity_name}s, objectives {self.objective_names})"
        )
