"""What a trial's training jobs cost: an estimate while a job runs, the exact figure once it
ended (billable seconds x instances x the hourly price; for managed spot the billable time
already reflects the savings). Prices: `backends.aws_pricing` unless given."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from backends.aws_pricing import job_cost, price_per_hour

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pricing:
    """How an experiment's jobs are priced; `hourly_price` None: unknown, no cost reported."""

    hourly_price: float | None
    instance_count: int
    cost_attr: str  # the metric that carries a trial's cost

    @classmethod
    def of(cls, instance_type: str, instance_count: int, cost_attr: str,
           price_per_hour: float | None = None) -> Pricing:
        """The given price, else the table's (with a warning when the table has none)."""
        price = price_per_hour if price_per_hour is not None else _table_price(instance_type)
        return cls(price, instance_count, cost_attr)

    def job(self, billable_seconds: float | None) -> float | None:
        """The exact cost of an ended job (None without a price)."""
        if self.hourly_price is None:
            return None
        return job_cost(billable_seconds or 0.0, self.instance_count, self.hourly_price)

    def add_estimate(self, metrics: dict[str, Any], cost_done: float, start: float | None,
                     timestamp: float | None) -> None:
        """Put the trial's cost so far into a report (unless the script reported it): its
        ended jobs' cost plus the running job's time since `start` (epoch seconds) up to
        the report's `timestamp`."""
        if self.hourly_price is None or self.cost_attr in metrics:
            return
        elapsed = (timestamp - start) if timestamp is not None and start is not None else 0.0
        metrics[self.cost_attr] = cost_done + job_cost(elapsed, self.instance_count,
                                                       self.hourly_price)


def _table_price(instance_type: str) -> float | None:
    price = price_per_hour(instance_type)
    if price is None:
        logger.warning("no price known for %s: trials report no cost (set price_per_hour)",
                       instance_type)
    return price
