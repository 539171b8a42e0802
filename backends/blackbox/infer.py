"""Inferring a config space from the values a table holds.

Numbers become a range over the observed values: integers `randint`, reals `uniform`, each
log-scaled (`lograndint`, `loguniform`) when all values are positive and span two
orders of magnitude or more. Anything else (strings, booleans, mixed) becomes a `choice` of the
observed values. A column with a single value is a fixed value, not a domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from hpo_core.space import Categorical, ConfigSpace, Domain, Float, Integer

LOG_SPAN = 100.0  # max/min from which a positive range is searched on a log scale


def _python(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def infer_domain(values: pd.Series, column: str) -> Domain:
    """A domain covering every value of a column (see the module doc for the rules)."""
    field = f"config_space.{column}"
    if values.isna().any():
        raise ValueError(f"{column}: has missing values; every config needs a value")
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        categories = sorted({_python(v) for v in values.tolist()}, key=lambda v: (str(type(v)), v))
        return Categorical(categories, field=field)
    lower, upper = _python(values.min()), _python(values.max())
    log = lower > 0 and upper / lower >= LOG_SPAN
    if pd.api.types.is_integer_dtype(values):
        return Integer(int(lower), int(upper), log=log, field=field)
    return Float(float(lower), float(upper), log=log, field=field)


def infer_config_space(frame: pd.DataFrame, columns: Sequence[str]) -> ConfigSpace:
    """A config space for `columns` of `frame`; single-valued columns become fixed values."""
    entries: dict[str, Any] = {}
    for column in columns:
        values = frame[column]
        if values.nunique(dropna=False) == 1:
            entries[column] = _python(values.iloc[0])
        else:
            entries[column] = infer_domain(values, column)
    return ConfigSpace(entries)
