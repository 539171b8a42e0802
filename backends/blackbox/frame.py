"""A blackbox from your own logged learning curves (one row per config, seed and fidelity)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from backends.blackbox.blackbox import RESERVED_NAMES, Blackbox, BlackboxError
from backends.blackbox.infer import infer_config_space
from hpo_core.space import ConfigSpace, as_config_space


def _check_columns(frame: pd.DataFrame, argument: str, columns: Sequence[str]) -> None:
    for column in columns:
        if column not in frame.columns:
            raise BlackboxError(
                f"{argument}: column {column!r} is not in the frame; it has {list(frame.columns)}"
            )


def _check_space(space: ConfigSpace, frame: pd.DataFrame, config_columns: Sequence[str]) -> None:
    for name in space.names:
        if name not in config_columns:
            raise BlackboxError(f"config_space.{name}: not among config_columns {list(config_columns)}")
    for column in config_columns:
        if column not in space:
            raise BlackboxError(f"config_columns: {column!r} is not in config_space")
        domain = space.domains.get(column)
        if domain is None:
            continue
        for value in pd.unique(frame[column]):
            value = value.item() if isinstance(value, np.generic) else value
            if not domain.contains(value):
                raise BlackboxError(
                    f"config_space.{column}: column {column!r} holds {value!r}, outside {domain!r}"
                )


def blackbox_from_dataframe(
    frame: pd.DataFrame,
    config_columns: Sequence[str],
    fidelity_column: str,
    objective_columns: Sequence[str],
    time_column: str,
    config_space: ConfigSpace | Mapping[str, Any] | None = None,
    seed_column: str | None = None,
    modes: Mapping[str, str] | None = None,
    default_metric: str | None = None,
    time_is_cumulative: bool = True,
    time_attr: str | None = None,
    name: str = "custom",
) -> Blackbox:
    """Build a blackbox from logged learning curves, one row per (config, seed, fidelity).

    Args:
        frame: the logged rows.
        config_columns: the hyperparameter columns; equal values mean the same config.
        fidelity_column: the fidelity of each row (e.g. "epoch").
        objective_columns: the metrics to replay (the time column may be among them).
        time_column: elapsed training seconds (cumulative unless `time_is_cumulative=False`,
            then per fidelity step and summed here).
        config_space: the space the configs come from; inferred from the values when left out
            (see `backends.blackbox.infer`).
        seed_column: repetition of the same config (optional).
        modes: "min"/"max" per objective (default "min").
        default_metric: the objective a spec uses when it names none (default: the first one).
        time_attr: the name of the time objective (default: `time_column`, or "elapsed_time"
            when that is one of the tuner's own column names such as "time").
        name: recorded in the blackbox's metadata.
    """
    if not isinstance(frame, pd.DataFrame):
        raise BlackboxError(f"frame: must be a pandas DataFrame, got {type(frame).__name__}")
    if isinstance(config_columns, str) or not config_columns:
        raise BlackboxError("config_columns: must be a non-empty list of column names")
    if isinstance(objective_columns, str):
        raise BlackboxError("objective_columns: must be a list of column names")
    _check_columns(frame, "config_columns", config_columns)
    _check_columns(frame, "fidelity_column", [fidelity_column])
    _check_columns(frame, "objective_columns", objective_columns)
    _check_columns(frame, "time_column", [time_column])
    if seed_column is not None:
        _check_columns(frame, "seed_column", [seed_column])
    if frame.empty:
        raise BlackboxError("frame: has no rows")
    objectives = list(dict.fromkeys([*objective_columns, time_column]))
    keys = [*config_columns, fidelity_column, *([seed_column] if seed_column else [])]
    used = keys + objectives
    twice = sorted({c for c in used if used.count(c) > 1})
    if twice:
        raise BlackboxError(f"columns: {twice} are given for more than one role")
    for column in keys:
        if frame[column].isna().any():
            raise BlackboxError(f"{column}: has missing values (row {int(frame[column].isna().argmax())})")
    values = {}
    for column in objectives:
        try:
            values[column] = pd.to_numeric(frame[column], errors="raise").to_numpy(np.float64)
        except (TypeError, ValueError) as err:
            raise BlackboxError(f"objective_columns: column {column!r} is not numeric ({err})") from None
    if not pd.api.types.is_numeric_dtype(frame[fidelity_column]):
        raise BlackboxError(f"fidelity_column: column {fidelity_column!r} is not numeric")
    if np.isnan(values[time_column]).any():
        raise BlackboxError(f"time_column: column {time_column!r} has missing values")

    config_codes = frame.groupby(list(config_columns), sort=False).ngroup().to_numpy()
    seed_values, seed_codes = (
        np.unique(frame[seed_column].to_numpy(), return_inverse=True) if seed_column
        else (np.zeros(1), np.zeros(len(frame), dtype=int))
    )
    fidelities, fid_codes = np.unique(frame[fidelity_column].to_numpy(), return_inverse=True)
    curve = config_codes * len(seed_values) + seed_codes
    order = np.lexsort((fid_codes, curve))
    same_curve = curve[order][1:] == curve[order][:-1]
    duplicated = same_curve & (fid_codes[order][1:] == fid_codes[order][:-1])
    if duplicated.any():
        row = frame.iloc[order[1:][duplicated][0]]
        raise BlackboxError(
            f"frame: more than one row for the same config, seed and {fidelity_column!r}: "
            f"{ {c: row[c] for c in keys} }"
        )
    time = values[time_column][order]
    if not time_is_cumulative:
        starts = np.r_[True, ~same_curve]
        totals = np.cumsum(time)
        time = totals - np.repeat((totals - time)[starts], np.diff(np.r_[np.flatnonzero(starts),
                                                                         len(time)]))
        values[time_column][order] = time
    decreasing = same_curve & (np.diff(time) < 0)
    if decreasing.any():
        row = frame.iloc[order[1:][decreasing][0]]
        raise BlackboxError(
            f"time_column: {time_column!r} decreases along the curve of "
            f"{ {c: row[c] for c in config_columns} } at {fidelity_column}={row[fidelity_column]}; "
            "it must be cumulative (or pass time_is_cumulative=False)"
        )

    first_rows = np.unique(config_codes, return_index=True)[1]
    configs = frame.iloc[first_rows][list(config_columns)].reset_index(drop=True)
    if config_space is None:
        space = infer_config_space(configs, config_columns)
    else:
        space = as_config_space(config_space)
        _check_space(space, configs, config_columns)
    dense = np.full((len(configs), len(seed_values), len(fidelities), len(objectives)), np.nan,
                    dtype=np.float32)
    dense[config_codes, seed_codes, fid_codes] = np.stack([values[c] for c in objectives], axis=1)

    time_attr = time_attr or (time_column if time_column not in RESERVED_NAMES else "elapsed_time")
    names = [time_attr if c == time_column else c for c in objectives]
    modes = dict(modes or {})
    if time_column in modes:
        modes[time_attr] = modes.pop(time_column)
    default_metric = default_metric or next((c for c in objective_columns if c != time_column),
                                            time_column)
    if default_metric == time_column:
        default_metric = time_attr
    return Blackbox(
        configs=configs,
        objectives=dense,
        config_space=space,
        fidelity_name=fidelity_column,
        fidelity_values=fidelities.tolist(),
        objective_names=names,
        time_attr=time_attr,
        modes=modes,
        default_metric=default_metric,
        metadata={"name": name, "seeds": [v.item() if isinstance(v, np.generic) else v
                                          for v in seed_values] if seed_column else [0]},
    )
