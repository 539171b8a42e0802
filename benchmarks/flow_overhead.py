"""What running an experiment as a Prefect flow tracked in MLflow costs per trial.

The same simulated experiment (FIFO random search on LCBench, 500 trials of ~50 reported epochs
and 7 metrics each) runs three ways, each in a fresh process:

* bare:    `build_tuner(spec).run()`: the tuner alone, no Prefect, no MLflow;
* flow:    an empty Prefect flow first (the start-up: Prefect's temporary local server and one
           flow run), then `run_tune(spec)`: the `tune` flow with MLflow on SQLite (an existing
           database, as after a first experiment), artifacts, plot, and the MLflow queue
           drained at the end. Flow time = both; timing the start-up in the same process keeps
           the server's start-up variance out of the difference.

overhead per trial = (flow - bare - startup) / trials. Medians over `--repeats` runs. A flow on
a fresh MLflow database (its tables created on the fly) is timed once more for information.

    python benchmarks/flow_overhead.py [--trials 500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def spec(root: Path, name: str, trials: int) -> dict[str, Any]:
    return {
        "name": name, "metric": "Train/val_cross_entropy", "mode": "min", "scheduler": "random",
        "backend": "simulated",
        "backend_options": {"blackbox": "lcbench", "task": "blood-transfusion-service-center"},
        "stop": {"max_trials_completed": trials}, "n_workers": 4, "seed": 0,
        "results_root": str(root / "experiments"),
    }


def child(mode: str, root: Path, name: str, trials: int, uri: str) -> dict[str, Any]:
    """One measurement, in this (fresh) process; imports are done before the clock starts."""
    if mode == "bare":
        from flows.experiment import build_tuner
        from hpo_core.spec import ExperimentSpec

        start = time.perf_counter()
        tuner = build_tuner(ExperimentSpec.from_dict(spec(root, name, trials)))
        tuner.run()
        return {"seconds": time.perf_counter() - start, "trials": len(tuner.trials)}
    from prefect import flow

    from flows.tune import run_tune

    @flow(name="noop")
    def noop() -> int:
        return 1

    start = time.perf_counter()
    noop()  # starts Prefect's temporary server: the start-up, timed in the same process
    started = time.perf_counter()
    outcome = run_tune(spec(root, name, trials), tracking_uri=uri)
    end = time.perf_counter()
    assert outcome["mlflow_error"] is None, outcome["mlflow_error"]
    return {"startup": started - start, "seconds": end - start,
            "trials": outcome["counts"]["trials"]}


def measure(mode: str, root: Path, name: str, trials: int, uri: str) -> dict[str, Any]:
    env = {**os.environ, "PREFECT_HOME": str(root / "prefect-home"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
    env.pop("PREFECT_API_URL", None)
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--root", str(root), "--name", name,
         "--trials", str(trials), "--uri", uri],
        env=env, cwd=root, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def create_mlflow_db(uri: str) -> None:
    code = f"from mlflow import MlflowClient; MlflowClient({uri!r}).search_experiments()"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                   env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=("bare", "flow"))
    parser.add_argument("--root", type=Path)
    parser.add_argument("--name", default="overhead")
    parser.add_argument("--uri", default="")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.root, args.name, args.trials, args.uri)))
        return

    # everything under a temporary folder, removed at the end (stores, MLflow, Prefect home)
    with tempfile.TemporaryDirectory(prefix="tunesmith-flow-overhead-") as tmp:
        root = Path(tmp)
        warm_uri = f"sqlite:///{root / 'mlflow.db'}"
        create_mlflow_db(warm_uri)
        bare, startup, flow = [], [], []
        trials = args.trials
        for i in range(args.repeats):
            bare.append(measure("bare", root, f"bare-{i}", trials, "")["seconds"])
            result = measure("flow", root, f"flow-{i}", trials, warm_uri)
            startup.append(result["startup"])
            flow.append(result["seconds"])
            trials = result["trials"]
            print(f"run {i + 1}: bare {bare[-1]:.2f}s, flow {flow[-1]:.2f}s of which start-up "
                  f"{startup[-1]:.2f}s: {(flow[-1] - startup[-1] - bare[-1]) / trials * 1000:.2f} "
                  "ms per trial", flush=True)
        cold = measure("flow", root, "flow-cold", args.trials, f"sqlite:///{root / 'cold.db'}")
    b, s, f = (statistics.median(x) for x in (bare, startup, flow))
    per_trial = statistics.median(
        (fi - si - bi) / trials * 1000 for bi, si, fi in zip(bare, startup, flow, strict=True))
    print(f"experiment: FIFO random search, LCBench, {trials} trials, 4 workers (medians of "
          f"{args.repeats}; machine load {os.getloadavg()[0]:.1f})")
    print(f"bare tuner:             {b:8.2f} s")
    print(f"prefect start-up:       {s:8.2f} s  (temporary server + an empty flow run)")
    print(f"tune flow + MLflow:     {f:8.2f} s  (start-up included; existing MLflow database)")
    print(f"tune flow, fresh db:    {cold['seconds']:8.2f} s  (MLflow creates its tables)")
    print(f"flow_overhead_ms_per_trial={per_trial:.2f}")


if __name__ == "__main__":
    main()
