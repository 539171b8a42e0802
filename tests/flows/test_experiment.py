"""The one assembly path: a spec's parts built and checked once; nothing left open on failure."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from flows import experiment
from flows.experiment import Experiment, assemble, build_tuner, check_spec
from hpo_core.spec import ExperimentSpec, SpecError

METRIC = "Train/val_cross_entropy"


def spec(root, **fields) -> ExperimentSpec:
    base = {"name": "assembled", "metric": METRIC, "scheduler": "asha",
            "stop": {"max_trials_completed": 3}, "results_root": str(root)}
    return ExperimentSpec.from_dict({**base, **fields})


@pytest.fixture
def closed(monkeypatch) -> list[str]:
    """Names the backends the assembly built, as they are closed."""
    calls: list[str] = []
    build = experiment.build_backend

    def recording(spec, objective=None):
        backend = build(spec, objective)
        close = backend.close
        backend.close = lambda: (calls.append(spec.name), close())[1]  # type: ignore[method-assign]
        return backend

    monkeypatch.setattr(experiment, "build_backend", recording)
    return calls


def test_the_parts_come_from_the_spec_and_what_the_backend_declares(tmp_path):
    built = assemble(spec(tmp_path, n_workers="auto"))
    fidelity = built.backend.fidelity()
    assert fidelity is not None
    assert built.config_space is built.backend.config_space()
    assert built.scheduler_options == {"resource_attr": fidelity.name,
                                       "max_t": fidelity.values[-1],
                                       "grace_period": fidelity.values[0]}
    assert built.n_workers == built.backend.default_n_workers()
    assert not (tmp_path / "assembled").exists()  # no store until a tuner is asked for
    tuner = built.tuner()
    assert tuner.backend is built.backend and tuner.n_workers == built.n_workers
    assert tuner.run().best_trial_id is not None


def test_a_method_that_runs_another_one_gives_it_the_backends_fidelity_too(tmp_path):
    config = {"batch_size": 64, "learning_rate": 0.01, "max_dropout": 0.2, "max_units": 256,
              "momentum": 0.9, "num_layers": 2, "weight_decay": 0.01}
    earlier = {"configs": [config, {**config, "learning_rate": 0.05}], "values": [0.5, 0.6]}
    built = assemble(spec(tmp_path, scheduler="bounding_box", scheduler_options={
        "transfer_from": [earlier], "scheduler": "asha",
        "scheduler_options": {"reduction_factor": 2}}))
    fidelity = built.backend.fidelity()
    assert fidelity is not None
    assert built.scheduler_options["scheduler_options"] == {
        "reduction_factor": 2, "resource_attr": fidelity.name, "max_t": fidelity.values[-1],
        "grace_period": fidelity.values[0]}  # was: "max_t: required", with a working backend
    assert built.tuner().run().best_trial_id is not None


def test_a_part_that_fails_closes_the_backend_built_for_it(tmp_path, closed):
    with pytest.raises(SpecError, match=r"spec.scheduler_options"):
        assemble(spec(tmp_path, scheduler_options={"reduction_factor": "three"}))
    with pytest.raises(SpecError, match=r"spec.n_workers: .*at most"):
        assemble(spec(tmp_path, n_workers=5000))
    assert closed == ["assembled", "assembled"]


def test_a_store_of_another_experiment_closes_the_backend(tmp_path, closed):
    build_tuner(spec(tmp_path)).run()
    other = assemble(spec(tmp_path, scheduler="random"))
    with pytest.raises(SpecError, match=r"exists at .* with different scheduler"):
        other.tuner()
    assert closed[-1] == "assembled" and len(closed) == 2  # the run's own close, then this one


def first_configs(built: Experiment, n: int = 4) -> list[dict[str, Any]]:
    """The first configs the scheduler of a freshly assembled experiment proposes."""
    try:
        return [built.scheduler.suggest(i).config for i in range(n)]
    finally:
        built.close()


def earlier(root: Path, seed: int) -> str:
    """A finished experiment `earlier` under `root`; its folder."""
    build_tuner(spec(root, name="earlier", scheduler="random", seed=seed,
                     stop={"max_trials_completed": 12})).run()
    return str(root / "earlier")


@pytest.mark.parametrize("method, options", [("zero_shot", {"num_configs": 3}),
                                             ("bounding_box", {"top_k": 3})])
def test_a_transfer_experiment_resumes_from_what_it_read_when_it_started(tmp_path, method,
                                                                         options):
    source = earlier(tmp_path / "sources", seed=1)
    transfer = spec(tmp_path / "runs", scheduler=method,
                    scheduler_options={"transfer_from": [source], **options})
    before = first_configs(assemble(transfer))
    build_tuner(transfer).run()

    shutil.move(source, tmp_path / "moved")
    check_spec(transfer)  # as `show` and `resume` check it
    assert first_configs(assemble(transfer)) == before
    earlier(tmp_path / "sources", seed=2)  # another experiment in the source's place
    assert first_configs(assemble(transfer)) == before
    resumed = build_tuner(spec(tmp_path / "runs", scheduler=method, scheduler_options={
        "transfer_from": [source], **options}, stop={"max_trials_completed": 6}))
    resumed.run()
    assert resumed.status.num_trials_completed >= 6
    assert [resumed.trials[i].config for i in range(4)] == before


def test_a_new_transfer_experiment_without_its_source_is_one_line_naming_it(tmp_path):
    gone = str(tmp_path / "gone")
    with pytest.raises(SpecError, match=r"^spec\.scheduler_options\.transfer_from\[0\]: no "
                                        rf"stored experiment at '{gone}'$"):
        check_spec(spec(tmp_path, scheduler="zero_shot",
                        scheduler_options={"transfer_from": [gone]}))


def test_transfer_to_several_metrics_warns_that_it_ranks_by_the_first(tmp_path, caplog):
    source = earlier(tmp_path / "sources", seed=1)
    transfer = spec(tmp_path, metric=[METRIC, "elapsed_time"], mode=["min", "min"],
                    scheduler="bounding_box", scheduler_options={
                        "transfer_from": [source], "scheduler": "mo_rea"})
    check_spec(transfer)
    build_tuner(transfer).run()
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"experiment assembled: transfer ranks earlier configs by the first metric, {METRIC}, "
        "only"]
