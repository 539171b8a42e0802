"""`smoke`: a seconds-long simulated experiment that fails loudly when the engine misbehaves.

For CI and health checks of a deployment: ASHA on the bundled LCBench blackbox through the
`tune` flow, in a temporary results folder. It fails when no trial ran, when the best value is
no better than the first trial's, or when the results were not written.
"""

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow

from flows.tune import tune
from hpo_core.store import RESULTS_FILE, STATE_FILE


class SmokeTestFailure(AssertionError):
    """The engine did not do what a healthy engine does."""


def smoke_spec(results_root: str, trials: int) -> dict[str, Any]:
    return {
        "name": "smoke",
        "metric": "Train/val_cross_entropy",
        "mode": "min",
        "scheduler": "asha",
        "scheduler_options": {"reduction_factor": 3},
        "backend": "simulated",
        "backend_options": {"blackbox": "lcbench", "task": "blood-transfusion-service-center"},
        "stop": {"max_trials_completed": trials},
        "n_workers": 4,
        "seed": 0,
        "results_root": results_root,
    }


def check_outcome(outcome: dict[str, Any], trials: int) -> None:
    """Raise SmokeTestFailure unless the experiment ran, improved and wrote its results."""
    counts = outcome.get("counts", {})
    if counts.get("trials", 0) < trials or counts.get("results", 0) == 0:
        raise SmokeTestFailure(f"expected at least {trials} trials with reports, got {counts}")
    store = Path(outcome["store_path"])
    for name in (RESULTS_FILE, STATE_FILE):
        if not (store / name).is_file():
            raise SmokeTestFailure(f"{name} was not written to {store}")
    results = pd.read_parquet(store / RESULTS_FILE, use_threads=False)  # see store.read_rows
    if len(results) != counts["results"]:
        raise SmokeTestFailure(f"{RESULTS_FILE} holds {len(results)} reports, "
                               f"the tuner counted {counts['results']}")
    metric, sign = outcome["metric"], 1.0 if outcome["mode"] == "min" else -1.0
    first = results[results["trial_id"] == results["trial_id"].min()][metric]
    first_best = sign * (first.min() if sign > 0 else first.max())
    if outcome.get("best_value") is None or not sign * outcome["best_value"] < first_best:
        raise SmokeTestFailure(f"no improvement over the first trial: best "
                               f"{outcome.get('best_value')}, first trial {sign * first_best}")


@flow(name="smoke", retries=0)
def smoke(trials: int = 24, results_root: str | None = None,
          tracking_uri: str | None = None) -> dict[str, Any]:
    """Run the smoke experiment; MLflow tracking only if `tracking_uri` is given."""
    root = results_root or tempfile.mkdtemp(prefix="tunesmith-smoke-")
    try:
        outcome = tune.with_options(retries=0)(
            smoke_spec(root, trials), tracking_uri=tracking_uri, track=tracking_uri is not None)
        check_outcome(outcome, trials)
    finally:
        if results_root is None:
            shutil.rmtree(root, ignore_errors=True)
    return outcome
