"""`retune` with transfer: warm starts from a stored experiment (zero-shot portfolio, bounding
box) and, when the store has none, from the trials MLflow holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hpo_core.spec import ExperimentSpec
from hpo_core.store import load_experiment

pytestmark = pytest.mark.usefixtures("prefect_harness")


def base_spec(root: Path) -> dict[str, Any]:
    return {
        "name": "nightly", "metric": "Train/val_cross_entropy", "scheduler": "asha",
        "backend_options": {"blackbox": "lcbench", "task": "blood-transfusion-service-center"},
        "stop": {"max_trials_completed": 12}, "n_workers": 2, "seed": 3,
        "results_root": str(root / "experiments"),
    }


@pytest.fixture(scope="module")
def earlier(prefect_harness, tmp_path_factory) -> tuple[Path, str]:
    """A finished experiment `nightly` in a store and in MLflow: (root, tracking URI)."""
    from flows.tune import tune

    root = tmp_path_factory.mktemp("transfer")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tune(base_spec(root), tracking_uri=uri)
    return root, uri


def ranked_configs(path: Path) -> tuple[list[dict[str, Any]], list[float]]:
    """The configs of an experiment best first (each trial counting with its value, its best
    report, as the views read it), and the first value each of them reported."""
    experiment = load_experiment(path)
    values = experiment.trial_values()  # what transfer ranks by
    ranked = sorted(values, key=lambda t: (values[t].value, t))
    firsts = experiment.results.groupby("trial_id").head(1).set_index("trial_id")
    configs = [experiment.state["trials"][str(t)]["config"] for t in ranked]
    return configs, [float(firsts.loc[t, experiment.metric]) for t in ranked]


def test_zero_shot_warm_starts_from_the_stored_experiment(earlier, tmp_path: Path) -> None:
    from flows.retune import retune

    root, uri = earlier
    configs, values = ranked_configs(root / "experiments" / "nightly")
    outcome = retune(base_spec(root), top_k=2, date="2026-01-02", tracking_uri=uri,
                     transfer="zero_shot")
    assert outcome["transfer"] == "zero_shot" and len(outcome["warm_start_configs"]) == 2
    # one earlier task: the portfolio starts with its best config, which scores the same again
    assert outcome["warm_start_configs"][0] == configs[0]
    dated = load_experiment(Path(outcome["store_path"]))
    assert dated.state["trials"]["0"]["config"] == configs[0]
    first = dated.results[dated.results["trial_id"] == 0][dated.metric].iloc[0]
    assert first == pytest.approx(values[0])  # the same config reports the same again

    # with an empty store, the same portfolio comes from the trials that MLflow holds
    # (the earlier run and the one above)
    again = retune(base_spec(tmp_path), top_k=2, date="2026-01-03", tracking_uri=uri,
                   transfer="zero_shot")
    assert again["warm_start_configs"][0] == configs[0]


def test_bounding_box_searches_the_box_of_the_earlier_best_configs(earlier) -> None:
    from flows.retune import earlier_experiments, retune

    root, uri = earlier
    # the box holds the top 3 of each earlier run in the store (other tests' retunes too)
    sources = earlier_experiments(ExperimentSpec.from_dict(base_spec(root)), "nightly-2026-02-01")
    best = [config for source in sources for config in ranked_configs(Path(source))[0][:3]]
    outcome = retune(base_spec(root), top_k=3, date="2026-02-01", tracking_uri=uri,
                     transfer="bounding_box")

    stored = ExperimentSpec.from_file(Path(outcome["store_path"]) / "spec.json")
    assert stored.scheduler == "bounding_box"
    assert stored.scheduler_options["scheduler"] == "asha"
    assert stored.scheduler_options["scheduler_options"]["max_t"] > 1  # the backend's fidelity
    dated = load_experiment(Path(outcome["store_path"]))
    numeric = [n for n, v in best[0].items() if isinstance(v, float)]
    assert numeric and len(dated.state["trials"]) >= 12
    for trial in dated.state["trials"].values():
        for name in numeric:
            low, high = min(c[name] for c in best), max(c[name] for c in best)
            assert low <= trial["config"][name] <= high, (name, trial["config"])


def test_unknown_transfer_is_an_error(tmp_path: Path) -> None:
    from flows.retune import retune

    with pytest.raises(ValueError, match="transfer: expected one of"):
        retune(base_spec(tmp_path), transfer="warm")


def test_earlier_runs_are_the_spec_s_own_not_experiments_that_share_its_prefix(
        tmp_path: Path) -> None:
    from flows.retune import earlier_experiments
    from hpo_core.store import RESULTS_FILE

    root = tmp_path / "experiments"
    for name in ("nightly", "nightly-2026-01-02", "nightly-2026-01-03", "nightly-moasha",
                 "nightly-2026-01-02-copy"):
        (root / name).mkdir(parents=True)
        (root / name / RESULTS_FILE).write_bytes(b"")
    spec = ExperimentSpec.from_dict(base_spec(tmp_path))
    assert [Path(p).name for p in earlier_experiments(spec, "nightly-2026-01-03")] == [
        "nightly", "nightly-2026-01-02"]


def test_a_date_that_is_not_yyyy_mm_dd_is_an_error_naming_it(tmp_path: Path) -> None:
    from flows.retune import retune

    with pytest.raises(ValueError, match=r"^date: expected YYYY-MM-DD, got 'moasha'$"):
        retune.fn(base_spec(tmp_path), date="moasha")
