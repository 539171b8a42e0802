"""`retune`: scheduled re-tuning that learns from the earlier runs of the same experiment.

Each run is a new experiment named `<name>-<date>`. With `transfer="top_k"` (the default) its
scheduler first evaluates the best configs of the earlier MLflow parent runs
(`points_to_evaluate`), then searches as usual; `"zero_shot"` evaluates a portfolio chosen from
all trials of the earlier runs first; `"bounding_box"` runs the same method on the box of the
earlier runs' best configs (`hpo_core.transfer`; the earlier runs are read from the store, else
from MLflow). All runs log to the MLflow experiment `<name>`, so each retune sees the previous
ones. Running again on the same date resumes that date's experiment."""

import datetime as dt
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

from prefect import get_run_logger

from flows._mlflow_writer import (
    BEST_CONFIG_TAG,
    BEST_VALUE_TAG,
    PARENT_TAG,
    ROLE_TAG,
    STATUS_TAG,
)
from flows.mlflow_client import open_client
from flows.tracking import resolve_tracking_uri
from flows.tune import SpecLike, masked_flow, tune
from hpo_core.space import ConfigSpace
from hpo_core.spec import ExperimentSpec
from hpo_core.store import RESULTS_FILE, SPEC_FILE
from hpo_core.transfer import load_tasks, zero_shot_portfolio
from hpo_core.trial import TrialStatus

logger = logging.getLogger(__name__)
#: the date a re-tuned experiment is named after: `<name>-<YYYY-MM-DD>`
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

TRANSFERS = ("top_k", "zero_shot", "bounding_box")


def earlier_best_configs(tracking_uri: str, experiment: str, mode: str,
                         top_k: int) -> list[dict[str, Any]]:
    """The best configs of the finished parent runs in MLflow experiment `experiment`, best
    first, without duplicates (empty if there are none or MLflow cannot be read)."""
    try:
        client = open_client(tracking_uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return []
        runs = client.search_runs(
            [found.experiment_id],
            filter_string=f"tags.`{ROLE_TAG}` = 'parent' and attributes.status = 'FINISHED'",
            max_results=1000,
        )
    except Exception as err:  # noqa: BLE001 - no warm start is better than no retune
        logger.warning("cannot read earlier runs of %s from %s: %s", experiment, tracking_uri, err)
        return []
    scored = []
    for run in runs:
        config, value = run.data.tags.get(BEST_CONFIG_TAG), run.data.tags.get(BEST_VALUE_TAG)
        if config and value:
            scored.append((float(value) if mode == "min" else -float(value), config))
    configs: list[dict[str, Any]] = []
    for _, text in sorted(scored, key=lambda item: item[0]):
        config = json.loads(text)
        if config not in configs:
            configs.append(config)
    return configs[:top_k]


def earlier_evaluations(tracking_uri: str, experiment: str, metric: str,
                        mode: str) -> list[dict[str, Any]]:
    """Each finished parent run of MLflow experiment `experiment` as inline evaluations for
    `hpo_core.transfer`: its trials' params and values (each child run's best `metric` in
    `mode`, as the views read a trial; failed trials left out); empty if MLflow cannot be
    read."""
    try:
        client = open_client(tracking_uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return []
        ids = [found.experiment_id]
        parents = client.search_runs(
            ids, filter_string=f"tags.`{ROLE_TAG}` = 'parent' and attributes.status = 'FINISHED'",
            max_results=1000)
        tasks = []
        for parent in parents:
            children = client.search_runs(
                ids, filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
                max_results=10000)
            trials = []
            for child in children:
                if metric not in child.data.metrics or \
                        child.data.tags.get(STATUS_TAG) == TrialStatus.FAILED.value:
                    continue
                history = [m.value for m in client.get_metric_history(child.info.run_id, metric)
                           if math.isfinite(m.value)]
                if history:
                    trials.append((dict(child.data.params),
                                   min(history) if mode == "min" else max(history)))
            if trials:
                tasks.append({"name": parent.info.run_name, "mode": mode,
                              "configs": [c for c, _ in trials],
                              "values": [float(v) for _, v in trials]})
        return tasks
    except Exception as err:  # noqa: BLE001 - no warm start is better than no retune
        logger.warning("cannot read earlier runs of %s from %s: %s", experiment, tracking_uri, err)
        return []


def earlier_experiments(spec: ExperimentSpec, exclude: str) -> list[str]:
    """Folders of the earlier runs of `spec` in the store: `<name>` and `<name>-<YYYY-MM-DD>`
    (the run `exclude` left out; not another experiment whose name merely starts with
    `<name>-`), those with results."""
    root = Path(spec.results_root)
    prefix = f"{spec.name}-"
    names = [spec.name] + sorted(p.name for p in root.glob(f"{prefix}*")
                                 if DATE.fullmatch(p.name[len(prefix):]))
    return [str(root / n) for n in names if n != exclude and (root / n / RESULTS_FILE).exists()]


def space_and_options(spec: ExperimentSpec) -> tuple[ConfigSpace, dict[str, Any]]:
    """The spec's config space and its scheduler options as the experiment will use them
    (the backend's space, and its fidelity where the method takes one, when the spec leaves
    them out)."""
    from flows.experiment import assemble

    experiment = assemble(spec)
    try:
        return experiment.config_space, experiment.scheduler_options
    finally:
        experiment.close()


def valid_configs(space: ConfigSpace, configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The configs that belong to `space` (the space may have changed)."""
    valid = []
    for config in configs:
        try:
            space.validate(config)
            valid.append(config)
        except ValueError as err:
            logger.warning("warm-start config %s left out: %s", config, err)
    return valid


def dated_spec(spec: ExperimentSpec, day: str, warm: list[dict[str, Any]],
               box: dict[str, Any] | None = None) -> ExperimentSpec:
    """`spec` as experiment `<name>-<day>`, evaluating `warm` first, and with `box` (the options
    of `bounding_box`) run on a bounding box."""
    data = spec.to_dict()
    data["name"] = f"{spec.name}-{day}"
    if warm:
        options = dict(data["scheduler_options"])
        options["points_to_evaluate"] = warm + list(options.get("points_to_evaluate") or [])
        data["scheduler_options"] = options
    if box is not None:
        data["scheduler_options"] = {**box, "scheduler": data["scheduler"],
                                     "scheduler_options": data["scheduler_options"]}
        data["scheduler"] = "bounding_box"
    return ExperimentSpec.from_dict(data)


@masked_flow(name="retune")
def retune(spec: SpecLike = "deployments/specs/lcbench-asha.yaml", top_k: int = 3,
           date: str | None = None, tracking_uri: str | None = None,
           transfer: str = "top_k") -> dict[str, Any]:
    """Re-run `spec` as `<name>-<date>` (YYYY-MM-DD; default: today, UTC), learning from its
    earlier runs.

    `transfer`: "top_k" evaluates the `top_k` best configs of the earlier MLflow parent runs
    first; "zero_shot" evaluates a portfolio of `top_k` configs chosen from all trials of the
    earlier runs (`hpo_core.transfer`); "bounding_box" runs the spec's method on the box of
    the `top_k` best configs of each earlier run. The earlier runs are read from the store
    (`<name>` and `<name>-<date>` under the spec's results root), else from MLflow."""
    if transfer not in TRANSFERS:
        raise ValueError(f"transfer: expected one of {list(TRANSFERS)}, got {transfer!r}")
    if date is not None and (not isinstance(date, str) or not DATE.fullmatch(date)):
        raise ValueError(f"date: expected YYYY-MM-DD, got {date!r}")
    run_logger = get_run_logger()
    spec = ExperimentSpec.coerce(spec)
    uri = resolve_tracking_uri(tracking_uri or spec.tracking_uri)
    day = date or dt.datetime.now(dt.UTC).date().isoformat()
    metric = spec.metric if isinstance(spec.metric, str) else spec.metric[0]
    mode = spec.mode if isinstance(spec.mode, str) else spec.mode[0]
    stored = Path(spec.results_root) / f"{spec.name}-{day}" / SPEC_FILE
    if stored.exists():  # a second run on the same day resumes that experiment as it began
        run_logger.info("resuming %s-%s as it was started (its warm start included); transfer "
                        "%s is not applied again", spec.name, day, transfer)
        outcome = tune(ExperimentSpec.from_file(stored), tracking_uri=uri,
                       mlflow_experiment=spec.name)
        return {**outcome, "warm_start_configs": [], "transfer": None}
    space, options = space_and_options(spec)
    sources: list[Any] = []
    box = None
    if transfer == "top_k":
        warm = valid_configs(space, earlier_best_configs(uri, spec.name, mode, top_k))
    else:
        sources = earlier_experiments(spec, f"{spec.name}-{day}") or \
            earlier_evaluations(uri, spec.name, metric, mode)
        warm = []
        if sources and transfer == "zero_shot":
            warm = zero_shot_portfolio(space, load_tasks(sources, metric, mode), top_k)
        elif sources:
            box = {"transfer_from": sources, "top_k": top_k}
            spec = ExperimentSpec.from_dict({**spec.to_dict(), "scheduler_options": options})
    run_logger.info("re-tuning %s as %s-%s (transfer %s from %s), warm-started with %d configs",
                    spec.name, spec.name, day, transfer,
                    "the earlier MLflow parent runs" if transfer == "top_k"
                    else f"{len(sources)} earlier runs", len(warm))
    outcome = tune(dated_spec(spec, day, warm, box), tracking_uri=uri,
                   mlflow_experiment=spec.name)
    return {**outcome, "warm_start_configs": warm, "transfer": transfer}
