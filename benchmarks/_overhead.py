"""Set-up shared by the trial-overhead benchmarks (`function_overhead.py`, `dask_overhead.py`).

- `quiet_state()`: Prefect and MLflow state in a temporary folder (set before Prefect is
  imported), removed at exit, and the Prefect server of `_flow_setup.prefect_for_flows`.
- `OBJECTIVE` / `SCRIPT`: the trivial trial (10 reports) as a tunesmith function and script.
- `run_tune(...)`: one experiment through `tunesmith.tune`; its tuning time (first trial's
  start to the end, on the tuner's clock) and the whole call's time, checked complete.
- `run_ray(...)`: Ray Tune 2.60 (in its own venv) on the same function with `reuse_actors=True`,
  in a subprocess: its `Tuner.fit()` time and its `ray.init()` time.
- `figures(...)`: one line, per-trial time and trials/minute.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._flow_setup import prefect_for_flows

OBJECTIVE = """\
from tunesmith import report


def objective(config):
    for epoch in range(1, 11):
        report(epoch=epoch, loss=(config["x"] - 0.3) ** 2 + 1 / epoch)
"""

SCRIPT = """\
from hpo_core.report import get_config, report

config = get_config()
for epoch in range(1, 11):
    report(epoch=epoch, loss=(config["x"] - 0.3) ** 2 + 1 / epoch)
"""

RAY_DRIVER = """\
import json, logging, os, sys, time
n_trials, n_workers, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
started = time.perf_counter()
import ray
from ray import tune

ray.init(num_cpus=n_workers, include_dashboard=False, log_to_driver=False,
         logging_level=logging.ERROR, _temp_dir=os.path.join(folder, "ray"))
init = time.perf_counter() - started


def objective(config):
    for epoch in range(1, 11):
        tune.report({"epoch": epoch, "loss": (config["x"] - 0.3) ** 2 + 1 / epoch})


tuner = tune.Tuner(
    objective, param_space={"x": tune.uniform(0.0, 1.0)},
    tune_config=tune.TuneConfig(metric="loss", mode="min", num_samples=n_trials,
                                max_concurrent_trials=n_workers, reuse_actors=True),
    run_config=tune.RunConfig(storage_path=os.path.join(folder, "results"), verbose=0))
fit_started = time.perf_counter()
results = tuner.fit()
wall = time.perf_counter() - fit_started
reports = sum(len(r.metrics_dataframe) for r in results)
print(json.dumps({"init": init, "wall": wall, "trials": len(results),
                  "errors": results.num_errors, "reports": reports}))
ray.shutdown()
"""


@dataclass
class Timing:
    """One experiment's times: `tuning` (the trials, once the tool is up) and `total` (the
    whole call, start-up and shutdown included), seconds."""

    trials: int
    tuning: float
    total: float


@contextmanager
def quiet_state(prefix: str) -> Iterator[None]:
    """Prefect's home in a temporary folder (before Prefect is imported), analytics and MLflow
    telemetry off, and a Prefect server that ends without a word at exit, so the figure stays
    the last line (`_flow_setup.prefect_for_flows`; the folder is removed after it)."""
    prefect_for_flows(prefix)
    yield


def figures(label: str, trials: int, wall: float) -> float:
    """Print `label: N trials in S s -> s per trial, trials/minute`; returns s per trial."""
    per_trial = wall / trials
    print(f"{label}: {trials} trials in {wall:.2f} s -> {per_trial:.3f} s per trial, "
          f"{60 * trials / wall:.0f} trials/minute")
    return per_trial


def run_tune(entry_point: str, folder: Path, trials: int, workers: int, name: str,
             **options: Any) -> Timing:
    """One experiment of `trials` trivial trials (random search) through `tunesmith.tune`,
    tracked in MLflow on SQLite under `folder`; every trial must complete with 10 reports."""
    from tunesmith import tune, uniform

    started = time.perf_counter()
    result = tune(entry_point, {"x": uniform(0.0, 1.0)}, metric="loss", method="random",
                  stop={"max_trials_started": trials}, n_workers=workers, name=name,
                  results_root=folder / "experiments",
                  tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", **options)
    total = time.perf_counter() - started
    state = result.experiment.state
    first_start = min(t["start_time"] for t in state["trials"].values())
    done = [t["status"] for t in state["trials"].values()].count("completed")
    assert done == trials and len(result.results) == 10 * trials, (done, len(result.results))
    return Timing(trials, float(state["time"]) - first_start, total)


def run_peer(python: Path, driver: str, args: list[str], folder: Path) -> dict[str, Any]:
    """Run `driver` with a peer's interpreter in `folder`; its last stdout line, as JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "driver.py"
    path.write_text(driver)
    completed = subprocess.run([str(python), str(path), *args], capture_output=True, text=True,
                               cwd=folder, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"peer run failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run_ray(python: Path, folder: Path, trials: int, workers: int) -> Timing:
    """Ray Tune 2.60's function trainable, `reuse_actors=True`, `max_concurrent_trials` and
    `num_cpus` = `workers`: tuning = `Tuner.fit()`, total = with `ray.init()`."""
    out = run_peer(python, RAY_DRIVER, [str(trials), str(workers), str(folder)], folder)
    assert out["trials"] == trials and out["errors"] == 0, out
    print(f"ray tune 2.60 (reuse_actors=True, {workers} CPUs): ray.init {out['init']:.2f} s; "
          f"{(out['init'] + out['wall']) / trials:.3f} s per trial with it; "
          f"{out['reports']} reports")
    return Timing(trials, out["wall"], out["init"] + out["wall"])
