"""`compare`: HPO methods x tasks x seeds on a simulated benchmark, as a Prefect flow.

Every (method, task, seed) is one simulated experiment, run in a worker process (one Prefect task
each, waiting on its process). The flow then analyses them (`hpo_core.comparison`: normalized
regret over time, final regret, average rank, 95% intervals, a paired test of the two best
methods), writes tables, plots and a report under `<results_root>/<name>-summary/`
(`flows/comparison.py`), publishes them as Prefect artifacts and logs them to one MLflow run.
"""

# No `from __future__ import annotations` (see flows/tune.py).
import base64
import datetime as dt
import logging
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.artifacts import artifact_key
from flows.comparison import (
    DEFAULT_BLACKBOX,
    ComparisonPlan,
    comparison_defaults,
    process_pool,
    run_one,
    write_outputs,
)
from flows.mlflow_client import open_client
from flows.tracking import default_artifact_location, resolve_tracking_uri
from hpo_core.comparison import Comparison, Run, analyse

#: MLflow opens experiments with this tag in its classic runs view (not the GenAI one)
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


@task(task_run_name="{label}", cache_policy=NO_CACHE, persist_result=False)
def run_in_process(label: str, spec: dict[str, Any], pool: ProcessPoolExecutor) -> dict[str, Any]:
    """One simulated experiment in a worker process of `pool`."""
    return pool.submit(run_one, spec).result()


@flow(name="compare", flow_run_name="compare-{name}")
def compare(
    methods: list[str] = ["random", "asha", "bohb"],  # noqa: B006 - a flow parameter
    tasks: list[str] | None = None,
    seeds: list[int] = [0, 1, 2],  # noqa: B006
    blackbox: str = DEFAULT_BLACKBOX,
    metric: str | None = None,
    mode: str | None = None,
    max_time: float = 3600.0,
    n_workers: int = 4,
    processes: int = 2,
    backend_options: dict[str, Any] | None = None,
    method_options: dict[str, dict[str, Any]] | None = None,
    name: str = "compare",
    results_root: str = "experiments",
    tracking_uri: str | None = None,
    track: bool = True,
) -> dict[str, Any]:
    """Run every method on every task of `blackbox` with every seed for `max_time` simulated
    seconds and compare them (see the module doc). Tasks, metric and mode left out are the
    blackbox's (`comparison_defaults`: on yahpo-lcbench tasks 3945 and 7593, val_accuracy, max).
    `backend_options` go to every run's simulated backend (e.g. `start_delay`); `method_options`
    are per method scheduler options."""
    tasks, metric, mode = comparison_defaults(
        blackbox, None if tasks is None else [str(t) for t in tasks], metric, mode)
    plan = ComparisonPlan(name=name, methods=list(methods), tasks=[str(t) for t in tasks],
                          seeds=[int(s) for s in seeds], metric=metric, mode=mode,
                          max_time=float(max_time), results_root=results_root, blackbox=blackbox,
                          n_workers=n_workers, backend_options=backend_options,
                          method_options=method_options)
    plan.validate()
    logger = get_run_logger()
    with process_pool(processes) as pool:
        futures = [run_in_process.submit(f"{s['scheduler']}-t{s['backend_options']['task']}"
                                         f"-s{s['seed']}", s, pool) for s in plan.specs()]
        records = [future.result() for future in futures]
    comparison = analyse([Run(**r) for r in records], mode)
    title = (f"{name}: {len(plan.methods)} methods x {len(plan.tasks)} tasks x "
             f"{len(plan.seeds)} seeds, {blackbox} {metric} ({mode})")
    outputs = write_outputs(comparison, Path(results_root) / f"{name}-summary", title)
    # one line, as the `tune` flow's: the table is in the artifacts and the CLI prints it
    logger.info("%s", _summary_line(comparison, title, outputs["paths"]["report"].parent))
    _publish(comparison, outputs, name, title)
    run_id = _log_to_mlflow(tracking_uri, plan, comparison, outputs) if track else None
    return {"summary": _records(comparison.overall), "per_task": _records(comparison.per_task),
            "paired_test": outputs["paired_test"], "text": outputs["text"],
            "folder": str(outputs["paths"]["report"].parent), "mlflow_run_id": run_id,
            "flow_run_id": str(runtime.flow_run.id)}


def _summary_line(comparison: Comparison, title: str, folder: Path) -> str:
    """`<title>; best: asha (area 0.2424, final 0.1170, rank 1.25); tables, plots and report:
    <folder>` (the overall table is ordered by area, best first)."""
    best = comparison.overall.iloc[0]
    figures = ", ".join(f"{figure} {best[figure]:.{2 if figure == 'rank' else 4}f}"
                        for figure in ("area", "final", "rank"))
    return f"{title}; best: {best['method']} ({figures}); tables, plots and report: {folder}"


def _records(frame: Any) -> list[dict[str, Any]]:
    """Rows with NaN as None (JSON, Prefect tables)."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in frame.to_dict(orient="records")]


def _publish(comparison: Comparison, outputs: dict[str, Any], name: str, title: str) -> None:
    create_table_artifact(_records(comparison.overall), key=artifact_key(name, "comparison"),
                          description=title)
    images = "".join(
        f"\n\n![{key}](data:image/png;base64,"
        f"{base64.b64encode(outputs['paths'][key].read_bytes()).decode('ascii')})"
        for key in ("regret_plot", "rank_plot"))
    create_markdown_artifact(outputs["report"] + images,
                             key=artifact_key(name, "comparison-report"), description=title)


def _log_to_mlflow(tracking_uri: str | None, plan: ComparisonPlan, comparison: Comparison,
                   outputs: dict[str, Any]) -> str | None:
    from mlflow.entities import Metric, Param

    uri = resolve_tracking_uri(tracking_uri)
    try:
        client = open_client(uri)
        experiment = client.get_experiment_by_name(plan.name)
        eid = experiment.experiment_id if experiment else client.create_experiment(
            plan.name, artifact_location=default_artifact_location(uri, plan.name),
            tags=EXPERIMENT_KIND)
        run = client.create_run(eid, run_name=f"{plan.name}-{dt.datetime.now():%Y%m%d-%H%M%S}",
                                tags={"tunesmith.role": "comparison"})
        params = {"methods": ",".join(plan.methods), "tasks": ",".join(plan.tasks),
                  "seeds": ",".join(map(str, plan.seeds)), "blackbox": plan.blackbox,
                  "metric": plan.metric, "mode": plan.mode, "max_time": plan.max_time,
                  "n_workers": plan.n_workers}
        metrics = [Metric(f"{row['method']}.{figure}", float(row[figure]), 0, 0)
                   for row in comparison.overall.to_dict(orient="records")
                   for figure in ("area", "final", "rank") if not math.isnan(row[figure])]
        client.log_batch(run.info.run_id, metrics=metrics,
                         params=[Param(k, str(v)) for k, v in params.items()])
        for path in outputs["paths"].values():
            client.log_artifact(run.info.run_id, str(path))
        client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id
    except Exception as err:  # noqa: BLE001 - the comparison itself is in the artifacts
        logging.getLogger(__name__).warning("comparison not logged to MLflow at %s: %s", uri, err)
        return None
