"""What a trial is worth: its best report of the metric, in the experiment's mode.

The one definition every view uses (the CLI's run, list and show, the store's analysis, the
Prefect artifacts, MLflow's child runs and the live status view), so that they all name the
same best trial with the same value. The step of a report is its resource level (the
scheduler's `resource_attr`, e.g. the epoch) where it reports one, else its 1-based position
among the trial's reports. Ties go to the earlier report, as in the tuner. In an experiment
with a constraint (a method's `constraint_attr`: feasible where it is <= 0), only feasible
reports count (`is_feasible`): the best trial is the best feasible one.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrialValue:
    """A trial's best report: the metric's value, the step and the time it came at."""

    value: float
    step: float
    time: float = 0.0

    def better_than(self, other: TrialValue | None, mode: str) -> bool:
        """Strictly better than `other` (None: anything is better) in `mode`."""
        if other is None:
            return True
        return self.value < other.value if mode == "min" else self.value > other.value


def metric_value(metrics: Mapping[str, Any], metric: str) -> float | None:
    """The report's value of `metric` as a finite float, else None."""
    value = metrics.get(metric)
    if value is None or isinstance(value, bool) or not isinstance(value, numbers.Real | str):
        return None
    try:
        value = float(value)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def report_step(metrics: Mapping[str, Any], index: int, resource_attr: str | None) -> float:
    """The report's resource level (an int where it is whole), else `index`."""
    level = metrics.get(resource_attr) if resource_attr else None
    if isinstance(level, numbers.Real) and not isinstance(level, bool) and math.isfinite(level):
        value = float(level)
        return int(value) if value.is_integer() else value
    return index


def is_feasible(metrics: Mapping[str, Any], constraint: str | None) -> bool:
    """Whether a report may be the best: always without a constraint, else where it reports
    the constraint as a number <= 0."""
    if constraint is None:
        return True
    value = metric_value(metrics, constraint)
    return value is not None and value <= 0.0


def no_best(metric: str, constraint: str | None) -> str:
    """Why there is no best yet: `no trial reported <metric>`, with a constraint `... with
    <constraint> <= 0` (every report broke it, or none carried it)."""
    text = f"no trial reported {metric}"
    return text if constraint is None else f"{text} with {constraint} <= 0"


def sentence(text: str) -> str:
    """`text` with its first letter capitalized (and nothing else changed)."""
    return text[:1].upper() + text[1:]


def best_report(reports: Iterable[Mapping[str, Any]], metric: str, mode: str,
                resource_attr: str | None = None, constraint: str | None = None
                ) -> TrialValue | None:
    """The best of one trial's reports (in the order they came), None if none has `metric`
    (and, with a `constraint`, is feasible)."""
    best: TrialValue | None = None
    for index, metrics in enumerate(reports, start=1):
        value = metric_value(metrics, metric)
        if value is None or not is_feasible(metrics, constraint):
            continue
        candidate = TrialValue(value, report_step(metrics, index, resource_attr),
                               float(metrics.get("time", 0.0) or 0.0))
        if candidate.better_than(best, mode):
            best = candidate
    return best


def format_value(value: Any, digits: int = 4) -> str:
    """A metric value for people: `digits` significant digits (0.4813, 1.235e-05); '-' if None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return f"{float(value):.{digits}g}"
