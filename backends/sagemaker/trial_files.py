"""A trial's files from SageMaker: `stdout` (its jobs' logs) and `sagemaker.json` (its jobs,
statuses and costs), secrets masked in both (the lines come masked; the record is masked
here)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from backends.aws_pricing import PRICING_SOURCE
from backends.sagemaker.costs import Pricing
from backends.sagemaker.jobs import JobSettings
from hpo_core.secrets import mask_values
from hpo_core.store import atomic_write_text


def append_output(folder: Path, lines: Iterable[str]) -> None:
    """Append log lines (already masked) to the trial's `stdout`."""
    with (folder / "stdout").open("a") as f:
        f.writelines(line + "\n" for line in lines)


def write_record(folder: Path, trial_id: int, experiment: str, settings: JobSettings,
                 pricing: Pricing, cost_done: float, jobs: Iterable[Mapping[str, Any]]) -> None:
    """The trial's `sagemaker.json` (its jobs as `Job.to_dict()` gives them, its checkpoint
    URI, the price used and the cost of its ended jobs), masked and written atomically."""
    record = {
        "trial_id": trial_id,
        "experiment": experiment,
        "checkpoint_uri": settings.checkpoint_uri(experiment, trial_id),
        "instance_type": settings.instance_type,
        "instance_count": settings.instance_count,
        "price_per_hour": pricing.hourly_price,
        "price_source": PRICING_SOURCE,
        "cost": cost_done if pricing.hourly_price is not None else None,
        "jobs": [{k: v for k, v in job.items() if k not in ("tail", "trial_id", "stop_sent")}
                 for job in jobs],
    }
    atomic_write_text(folder / "sagemaker.json", json.dumps(mask_values(record), indent=1))
