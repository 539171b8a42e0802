"""Rung bookkeeping shared by the successive-halving family (ASHA, synchronous SH, Hyperband).

A *rung* is a resource level (e.g. epoch 9) with the values recorded there. A *bracket* is a
ladder of rungs starting at a grace period: bracket k of a scheduler with grace period `g`,
reduction factor `eta` and maximum resource `max_t` has the levels `g * eta**(k + j) < max_t`,
then `max_t` itself as its last level.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np


def rung_levels(grace_period: float, reduction_factor: float, max_t: float) -> list[float]:
    """`grace_period * reduction_factor**j` for every j with a level below `max_t`, then `max_t`."""
    levels: list[float] = []
    while (level := grace_period * reduction_factor ** len(levels)) < max_t:
        levels.append(level)
    levels.append(max_t)
    return levels


def bracket_levels(grace_period: float, reduction_factor: float, max_t: float,
                   num_brackets: int) -> list[list[float]]:
    """The rung levels of brackets 0 .. num_brackets-1: bracket k drops the k lowest levels of
    bracket 0, so it starts at `grace_period * eta**k`; the last possible bracket is `[max_t]`.

    Raises ValueError (naming `brackets`) if there are fewer distinct brackets than asked for.
    """
    levels = rung_levels(grace_period, reduction_factor, max_t)
    if isinstance(num_brackets, bool) or not isinstance(num_brackets, int) or not (
        1 <= num_brackets <= len(levels)
    ):
        raise ValueError(
            f"brackets: must be an integer from 1 to {len(levels)} (the number of rung levels), "
            f"got {num_brackets!r}"
        )
    return [levels[k:] for k in range(num_brackets)]


def hyperband_bracket_weights(levels: Sequence[Sequence[float]], reduction_factor: float
                              ) -> np.ndarray:
    """Hyperband's share of new trials per bracket, normalized.

    A bracket with `s` halvings (s + 1 levels) gets `(s_max + 1) / (s + 1) * eta**s` trials in
    Hyperband, where `s_max` is the number of halvings of the first (longest) bracket.
    """
    s_max = len(levels[0]) - 1
    weights = np.array([(s_max + 1) / len(lv) * reduction_factor ** (len(lv) - 1)
                        for lv in levels], dtype=float)
    return weights / weights.sum()


def num_continuing(n: int, reduction_factor: float) -> int:
    """How many of `n` values at a rung are its top 1/eta for the stopping rule: ceil(n / eta)."""
    return math.ceil(n / reduction_factor - 1e-12)


def num_promotable(n: int, reduction_factor: float) -> int:
    """How many of `n` values at a rung may be promoted (ASHA): floor(n / eta)."""
    return math.floor(n / reduction_factor + 1e-12)


class Rung:
    """The values recorded at one resource level, in arrival order, and who was promoted.

    Values are whatever the scheduler ranks (a float to minimize, or a list of floats for
    multi-objective schedulers); they must be JSON-serializable. Scalar values are also kept
    sorted (by value, then arrival), so ranking a rung of n entries costs O(log n), not a sort.
    """

    def __init__(self, level: float):
        self.level = level
        self.values: dict[int, Any] = {}
        self.promoted: set[int] = set()
        self._sorted: list[tuple[float, int, int]] | None = []  # (value, arrival, trial_id)
        self._keys: dict[int, tuple[float, int, int]] = {}

    def __len__(self) -> int:
        return len(self.values)

    def add(self, trial_id: int, value: Any) -> None:
        if trial_id in self.values:
            self.values.pop(trial_id)
            self._sorted = None  # re-recorded (rare): fall back to sorting
        self.values[trial_id] = value
        if self._sorted is not None:
            if isinstance(value, int | float) and not isinstance(value, bool):
                key = (float(value), len(self.values), trial_id)
                self._keys[trial_id] = key
                bisect.insort(self._sorted, key)
            else:
                self._sorted = None

    @property
    def is_sorted(self) -> bool:
        """True when the rung keeps its (scalar) values sorted."""
        return self._sorted is not None

    def position(self, trial_id: int) -> int:
        """0-based rank of a recorded trial, best first (needs `is_sorted`)."""
        assert self._sorted is not None
        return bisect.bisect_left(self._sorted, self._keys[trial_id])

    def ranked(self) -> Iterator[int]:
        """Trial ids best first (needs `is_sorted`)."""
        assert self._sorted is not None
        return (t for _, _, t in self._sorted)

    def entries(self) -> list[tuple[int, Any]]:
        """(trial_id, value) pairs in arrival order."""
        return list(self.values.items())

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "values": list(map(list, self.values.items())),
                "promoted": sorted(self.promoted)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Rung:
        rung = cls(data["level"])
        for t, v in data["values"]:
            rung.add(int(t), v)
        rung.promoted = {int(t) for t in data["promoted"]}
        return rung


def rank_by_value(entries: Sequence[tuple[int, Any]]) -> list[int]:
    """Trial ids best (smallest value) first; equal values keep their arrival order."""
    return [t for t, _ in sorted(entries, key=lambda e: e[1])]


def resource_of(metrics: Mapping[str, Any], resource_attr: str, trial_id: int) -> float:
    """The reported resource (e.g. the epoch); a report without it is a configuration error."""
    value = metrics.get(resource_attr)
    if value is None or isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ValueError(
            f"spec.scheduler_options.resource_attr: trial {trial_id} reported "
            f"{sorted(metrics)} without a number "
            f"{resource_attr!r}; set resource_attr to the reported fidelity"
        )
    return float(value)
