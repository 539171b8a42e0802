"""`compare`: HPO methods x seeds on a simulated blackbox, aggregated, plotted and logged.

Each (method, seed) is one simulated experiment (one Prefect task). The flow aggregates the best
value each run reached (mean and standard deviation over seeds), plots the mean incumbent
trajectory of every method against simulated time, publishes both as Prefect artifacts and
logs them to one MLflow run.
"""

# No `from __future__ import annotations` (see flows/tune.py).
import base64
import datetime as dt
import logging
import math
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.artifacts import artifact_key
from flows.runner import build_tuner
from flows.tracking import default_artifact_location, flatten, redact, resolve_tracking_uri
from hpo_core.spec import ExperimentSpec
from hpo_core.store import load_experiment

GRID_POINTS = 200


@task(task_run_name="{method}-seed{seed}", cache_policy=NO_CACHE, persist_result=False)
def run_method(method: str, seed: int, base: dict[str, Any]) -> pd.DataFrame:
    """One simulated experiment; its incumbent trajectory (time, best)."""
    spec = ExperimentSpec.from_dict({**base, "name": f"{base['name']}-{method}-s{seed}",
                                     "scheduler": method, "seed": seed})
    tuner = build_tuner(spec)
    tuner.run()
    return load_experiment(tuner.store.path).trajectory()


def mean_curves(trajectories: dict[tuple[str, int], pd.DataFrame], end: float) -> pd.DataFrame:
    """Mean and standard deviation over seeds of each method's best-so-far on a time grid."""
    grid = np.linspace(0.0, end, GRID_POINTS)
    rows = []
    for method in sorted({m for m, _ in trajectories}):
        curves = []
        for (m, _), traj in trajectories.items():
            if m != method or traj.empty:
                continue
            index = np.searchsorted(traj["time"].to_numpy(), grid, side="right") - 1
            best = traj["best"].to_numpy()[np.maximum(index, 0)]
            curves.append(np.where(index >= 0, best, np.nan))
        stacked = np.vstack(curves) if curves else np.full((1, len(grid)), np.nan)
        with warnings.catch_warnings():  # before a method's first result: NaN, as meant
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(stacked, axis=0), np.nanstd(stacked, axis=0)
        rows += [{"method": method, "time": t, "mean": a, "std": s}
                 for t, a, s in zip(grid, mean, std, strict=True)]
    return pd.DataFrame(rows)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no runs)"
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(r[k]) for k in head) + " |" for r in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def plot_curves(curves: pd.DataFrame, metric: str, mode: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for method, group in curves.groupby("method"):
        ax.step(group["time"], group["mean"], where="post", label=method)
        ax.fill_between(group["time"], group["mean"] - group["std"],
                        group["mean"] + group["std"], step="post", alpha=0.15)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel(f"best {metric} ({mode}), mean over seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@flow(name="compare")
def compare(
    methods: list[str] = ["random", "asha", "hyperband"],  # noqa: B006 - a flow parameter
    seeds: list[int] = [0, 1, 2],  # noqa: B006
    metric: str = "Train/val_cross_entropy",
    mode: str = "min",
    backend_options: dict[str, Any] | None = None,
    stop: dict[str, Any] | None = None,
    n_workers: int = 4,
    name: str = "compare",
    results_root: str | None = None,
    tracking_uri: str | None = None,
    track: bool = True,
) -> dict[str, Any]:
    """Run every method with every seed on the blackbox of `backend_options` (default:
    LCBench, blood-transfusion-service-center) until `stop` (default: 1 simulated hour)."""
    root = results_root or tempfile.mkdtemp(prefix="tunesmith-compare-")
    base = {
        "name": name, "metric": metric, "mode": mode, "backend": "simulated",
        "backend_options": backend_options or {"blackbox": "lcbench",
                                               "task": "blood-transfusion-service-center"},
        "stop": stop or {"max_time": 3600}, "n_workers": n_workers, "results_root": root,
    }
    for method in methods:  # a bad method or option fails here, before anything runs
        ExperimentSpec.from_dict({**base, "scheduler": method})
    futures = {(m, s): run_method.submit(m, s, base) for m in methods for s in seeds}
    trajectories = {key: future.result() for key, future in futures.items()}
    finals = pd.DataFrame([
        {"method": m, "seed": s, "best": float(t["best"].iloc[-1]) if not t.empty else math.nan}
        for (m, s), t in trajectories.items()
    ])
    table = finals.groupby("method")["best"].agg(["mean", "std", "count"]).reset_index()
    table = table.sort_values("mean", ascending=mode == "min").reset_index(drop=True)
    end = max((float(t["time"].iloc[-1]) for t in trajectories.values() if not t.empty),
              default=1.0)
    end = float((stop or {}).get("max_time", end))
    folder = Path(root) / f"{name}-summary"
    folder.mkdir(parents=True, exist_ok=True)
    curves = mean_curves(trajectories, end)
    plot = plot_curves(curves, metric, mode, folder / "comparison.png")
    table.to_csv(folder / "comparison.csv", index=False)
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in table.to_dict(orient="records")]
    create_table_artifact(rows, key=artifact_key(name, "comparison"),
                          description=f"best {metric} ({mode}) per method over {len(seeds)} seeds")
    image = base64.b64encode(plot.read_bytes()).decode("ascii")
    create_markdown_artifact(
        f"# {name}: {', '.join(methods)} x {len(seeds)} seeds\n\n"
        + markdown_table(rows) + f"\n\n![comparison](data:image/png;base64,{image})\n",
        key=artifact_key(name, "comparison-summary"))
    run_id = _log_to_mlflow(tracking_uri, name, base, table, [plot, folder / "comparison.csv"]) \
        if track else None
    if results_root is None:
        shutil.rmtree(root, ignore_errors=True)
    return {"table": rows, "mlflow_run_id": run_id}


def _log_to_mlflow(tracking_uri: str | None, name: str, base: dict[str, Any],
                   table: pd.DataFrame, files: list[Path]) -> str | None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    uri = resolve_tracking_uri(tracking_uri)
    try:
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(name)
        eid = experiment.experiment_id if experiment else client.create_experiment(
            name, artifact_location=default_artifact_location(uri, name))
        run = client.create_run(eid, run_name=f"{name}-{dt.datetime.now():%Y%m%d-%H%M%S}",
                                tags={"tunesmith.role": "comparison"})
        params = [Param(k, v[:6000]) for k, v in flatten(redact(base)).items()
                  if k not in ("name", "results_root")]
        metrics = [Metric(f"{row.method}_{stat}", float(getattr(row, stat)), 0, 0)
                   for row in table.itertuples() for stat in ("mean", "std")
                   if not math.isnan(float(getattr(row, stat)))]
        client.log_batch(run.info.run_id, metrics=metrics, params=params)
        for path in files:
            client.log_artifact(run.info.run_id, str(path))
        client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id
    except Exception as err:  # noqa: BLE001 - the comparison itself is in the artifacts
        logging.getLogger(__name__).warning("comparison not logged to MLflow at %s: %s", uri, err)
        return None
