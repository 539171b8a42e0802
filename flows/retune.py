"""`retune`: scheduled re-tuning, warm-started from the best configs of earlier runs.

Each run is a new experiment named `<name>-<date>` whose scheduler first evaluates the best
configs of the earlier MLflow parent runs of the same experiment (`points_to_evaluate`), then
searches as usual. All runs log to the MLflow experiment `<name>`, so each retune sees the
previous ones. Running again on the same date resumes that date's experiment.
"""

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows._mlflow_writer import BEST_CONFIG_TAG, BEST_VALUE_TAG, ROLE_TAG
from flows.tracking import resolve_tracking_uri
from flows.tune import SpecLike, tune
from hpo_core.space import ConfigSpace
from hpo_core.spec import ExperimentSpec
from hpo_core.store import SPEC_FILE

logger = logging.getLogger(__name__)


def earlier_best_configs(tracking_uri: str, experiment: str, mode: str,
                         top_k: int) -> list[dict[str, Any]]:
    """The best configs of the finished parent runs in MLflow experiment `experiment`, best
    first, without duplicates (empty if there are none or MLflow cannot be read)."""
    from mlflow import MlflowClient

    try:
        client = MlflowClient(tracking_uri)
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


def valid_configs(spec: ExperimentSpec, configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The configs that belong to the spec's config space (the space may have changed)."""
    if spec.config_space:
        space = ConfigSpace(spec.config_space)
    else:
        from backends.factory import build_backend, resolve_config_space

        backend = build_backend(spec)
        space = resolve_config_space(spec, backend)
        backend.close()
    valid = []
    for config in configs:
        try:
            space.validate(config)
            valid.append(config)
        except ValueError as err:
            logger.warning("warm-start config %s left out: %s", config, err)
    return valid


def dated_spec(spec: ExperimentSpec, day: str, warm: list[dict[str, Any]]) -> ExperimentSpec:
    """`spec` as experiment `<name>-<day>`, evaluating `warm` first; the stored spec of that
    experiment if it exists already (so a second run on the same day resumes it)."""
    name = f"{spec.name}-{day}"
    stored = Path(spec.results_root) / name / SPEC_FILE
    if stored.exists():
        return ExperimentSpec.from_file(stored)
    data = spec.to_dict()
    data["name"] = name
    if warm:
        options = dict(data["scheduler_options"])
        options["points_to_evaluate"] = warm + list(options.get("points_to_evaluate") or [])
        data["scheduler_options"] = options
    return ExperimentSpec.from_dict(data)


@flow(name="retune")
def retune(spec: SpecLike = "deployments/specs/lcbench-asha.yaml", top_k: int = 3,
           date: str | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """Re-run `spec` as `<name>-<date>` (default: today, UTC), warm-started with the `top_k`
    best configs of earlier runs of the same experiment."""
    run_logger = get_run_logger()
    spec = ExperimentSpec.coerce(spec)
    uri = resolve_tracking_uri(tracking_uri or spec.tracking_uri)
    day = date or dt.datetime.now(dt.UTC).date().isoformat()
    mode = spec.mode if isinstance(spec.mode, str) else spec.mode[0]
    warm = valid_configs(spec, earlier_best_configs(uri, spec.name, mode, top_k))
    run_logger.info("re-tuning %s as %s-%s, warm-started with %d earlier best configs",
                    spec.name, spec.name, day, len(warm))
    outcome = tune(dated_spec(spec, day, warm), tracking_uri=uri, mlflow_experiment=spec.name)
    outcome["warm_start_configs"] = warm
    return outcome
