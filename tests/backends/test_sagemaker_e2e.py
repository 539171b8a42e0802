"""Whole experiments on the SageMaker backend: moto + Stubber, metrics read from log events."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from sagemaker_fake import FakeSageMaker, client, fresh_account, loss_of, serve_moto

from backends.aws_pricing import TRAINING_PRICES_US_EAST_1, job_cost
from backends.factory import build_backend
from backends.sagemaker import SageMakerBackend, SageMakerSetupError
from backends.sagemaker.jobs import JOB_NAME_PATTERN
from flows.experiment import build_tuner
from hpo_core.secrets import MASK
from hpo_core.spec import ExperimentSpec
from hpo_core.store import load_experiment
from hpo_core.trial import TrialStatus

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "tunesmith-e2e-bucket"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3-cpu-py311"
SECRET = "sk-live-e2e-secret-4f2a9c"


@pytest.fixture(scope="module")
def moto_url():
    yield from serve_moto()


@pytest.fixture
def aws(moto_url):
    """A fresh moto account with a role and a bucket; returns (url, role ARN)."""
    return moto_url, fresh_account(moto_url, BUCKET)


def asha_spec(tmp_path, scheduler: str, **overrides) -> ExperimentSpec:
    data = dict(
        name=f"sm-{scheduler.replace('_', '-')}",
        metric="loss",
        mode="min",
        config_space={"lr": {"type": "loguniform", "lower": 1e-4, "upper": 1.0}},
        scheduler=scheduler,
        scheduler_options={"max_t": 9, "grace_period": 1, "reduction_factor": 3,
                           "resource_attr": "epoch"},
        backend="sagemaker",
        backend_options={
            "role": "TunesmithSageMakerRole", "bucket": BUCKET, "image_uri": IMAGE,
            "instance_type": "ml.m5.xlarge", "instance_count": 2,
            "hyperparameters": {"epochs": 9}, "secret_hyperparameters": ["api_token"],
            "poll_interval": 0.005, "retry_base_delay": 0.001, "retry_max_delay": 0.01,
        },
        stop={"max_trials_started": 8},
        n_workers=3,
        seed=1,
        max_failures=3,
        results_root=str(tmp_path),
    )
    data.update(overrides)
    return ExperimentSpec.from_dict(data)


def backend_for(spec: ExperimentSpec, url: str, fake: FakeSageMaker) -> SageMakerBackend:
    clients = {"sagemaker": fake, "s3": client("s3", url), "logs": client("logs", url),
               "sts": client("sts", url), "iam": client("iam", url)}
    return SageMakerBackend(**spec.backend_options, clients=clients)


def test_asha_experiment_on_sagemaker(aws, tmp_path, caplog, monkeypatch):
    url, role = aws
    monkeypatch.setenv("API_TOKEN", SECRET)
    spec = asha_spec(tmp_path, "asha")
    fake = FakeSageMaker(url, fail={2: (2, "AlgorithmError: ExecuteUserScriptError: CUDA out of memory")},
                         print_secret=SECRET)
    fake.inject("list_training_jobs", "ThrottlingException", times=2)
    fake.inject("create_training_job", "ResourceLimitExceeded", times=1)
    with caplog.at_level(logging.INFO):
        tuner = build_tuner(spec, backend=backend_for(spec, url, fake))
        result = tuner.run()

    assert result.reason == "max_trials_started 8 reached"  # and all 8 trials ran to their end
    trials = tuner.trials
    assert len(trials) == 8
    # a failed job is a failed trial, with SageMaker's FailureReason; the experiment went on
    assert trials[2].status == TrialStatus.FAILED
    assert "CUDA out of memory" in trials[2].failure_reason
    assert trials[2].failure_reason.startswith("training job sm-asha-")
    # ASHA stopped trials at rungs: their jobs were stopped through StopTrainingJob; a trial
    # ASHA stops at max_t ran its course: completed, not stopped (issue 15)
    ended = [t for t in trials.values()
             if t.status in (TrialStatus.STOPPED, TrialStatus.COMPLETED)]
    assert len(ended) == 7
    assert all(t.last_result["epoch"] == 9 for t in ended if t.status == TrialStatus.COMPLETED)
    early = [t for t in ended if t.last_result["epoch"] < 9]
    assert all(t.status == TrialStatus.STOPPED for t in early)
    assert early and fake.calls["stop_training_job"] >= len(early)
    for trial in early:
        (job,) = fake.jobs_of(trial.trial_id)
        assert job.status == "Stopped"
    # throttled calls were retried, the capacity error was waited out
    assert fake.raised[("list_training_jobs", "ThrottlingException")] == 2
    assert fake.raised[("create_training_job", "ResourceLimitExceeded")] == 1
    assert len(fake.jobs) == 8
    # metrics came from the log events; costs with them
    experiment = load_experiment(tmp_path / spec.name)
    frame = experiment.results
    assert len(frame) == tuner.status.num_results > 8
    price = TRAINING_PRICES_US_EAST_1["ml.m5.xlarge"]
    for row in frame.itertuples():
        assert row.loss == loss_of({"lr": row.config_lr}, row.epoch)
        # an estimate from the log time while the job runs; the billed time once it ended
        seconds = 60 * 9 if row.epoch == 9 else 60 * (row.epoch - 1)
        assert row.cost == pytest.approx(job_cost(seconds, 2, price))
    assert experiment.best_value() == pytest.approx(frame["loss"].min())
    assert tuner.status.total_cost == pytest.approx(
        sum(t.last_result["cost"] for t in trials.values() if t.last_result))
    # jobs: valid names, tagged and laid out per experiment and trial
    for name, request in fake.requests.items():
        assert JOB_NAME_PATTERN.match(name) and len(name) <= 63
        trial_id = int(request["Environment"]["TUNESMITH_TRIAL_ID"])
        assert name.startswith("sm-asha-") and f"-{trial_id}-0" in name
        assert request["CheckpointConfig"]["S3Uri"] == f"s3://{BUCKET}/sm-asha/{trial_id}/checkpoints/"
        tags = {t["Key"]: t["Value"] for t in request["Tags"]}
        assert tags == {**tags, "tunesmith:experiment": "sm-asha", "tunesmith:trial": str(trial_id)}
        assert request["Environment"]["api_token"] == SECRET
        assert "api_token" not in request["HyperParameters"]
    # nothing the experiment wrote holds the secret, the role ARN or the credentials
    written = "".join(p.read_text(errors="replace") for p in (tmp_path / spec.name).rglob("*")
                      if p.is_file() and p.suffix != ".parquet")
    assert f"token={MASK}" in written
    for text in (written, caplog.text, frame.to_csv()):
        assert SECRET not in text and role not in text
        assert "SecretKeyNeverWritten" not in text and "AKIATUNESMITHTEST01" not in text


def test_promotion_asha_resumes_jobs_from_their_checkpoint(aws, tmp_path, monkeypatch):
    url, _ = aws
    monkeypatch.setenv("API_TOKEN", SECRET)
    spec = asha_spec(tmp_path, "asha_promotion", n_workers=2, stop={"max_trials_started": 6})
    fake = FakeSageMaker(url)
    tuner = build_tuner(spec, backend=backend_for(spec, url, fake))
    tuner.run()

    resumed = {t: fake.jobs_of(t) for t in tuner.trials if len(fake.jobs_of(t)) > 1}
    assert resumed, "promotion ASHA resumed no trial"
    frame = load_experiment(tmp_path / spec.name).results
    for trial_id, jobs in resumed.items():
        assert len({job.checkpoint_uri for job in jobs}) == 1  # the same S3 checkpoint prefix
        for before, after in zip(jobs, jobs[1:], strict=False):
            assert before.status == "Stopped"  # paused through StopTrainingJob
            assert after.start_epoch == before.reported[-1]  # restored from the checkpoint
        epochs = list(frame[frame.trial_id == trial_id].epoch)
        assert epochs == list(range(1, len(epochs) + 1))  # no epoch lost or repeated
        names = [job.name for job in jobs]
        assert names == [n.rsplit("-", 1)[0] + f"-{i}" for i, n in enumerate(names)]
    record = json.loads((tmp_path / spec.name / "trials" / str(trial_id) / "sagemaker.json").read_text())
    assert [j["name"] for j in record["jobs"]] == names
    assert record["cost"] == pytest.approx(sum(j["cost"] for j in record["jobs"]))


def test_max_cost_ends_the_experiment(aws, tmp_path, monkeypatch):
    url, _ = aws
    monkeypatch.setenv("API_TOKEN", SECRET)
    price = TRAINING_PRICES_US_EAST_1["ml.m5.xlarge"]
    budget = 3.5 * job_cost(9 * 60, 2, price)  # about three and a half full trials
    spec = asha_spec(tmp_path, "random", scheduler_options={}, n_workers=2,
                     stop={"max_cost": budget, "max_trials_started": 20})
    fake = FakeSageMaker(url)
    tuner = build_tuner(spec, backend=backend_for(spec, url, fake))
    result = tuner.run()
    assert result.reason.startswith("max_cost")
    assert budget <= tuner.status.total_cost < budget + 2 * job_cost(9 * 60, 2, price)
    completed = [t for t in tuner.trials.values() if t.status == TrialStatus.COMPLETED]
    assert len(completed) >= 2
    # the jobs still running at the end were stopped, and close() waited for them to end
    assert all(fake.jobs_of(t.trial_id)[0].status in ("Stopped", "Completed")
               for t in tuner.trials.values())
    assert tuner.backend.total_cost == pytest.approx(
        sum(job_cost(job.billable, 2, price) for job in fake.jobs.values()))


def test_billed_cost_of_a_completed_trial_reaches_the_tuner(aws, tmp_path, monkeypatch):
    url, _ = aws
    monkeypatch.setenv("API_TOKEN", SECRET)
    spec = asha_spec(tmp_path, "random", scheduler_options={}, n_workers=2,
                     stop={"max_trials_started": 2})
    fake = FakeSageMaker(url, upload_seconds=45)  # billed after the last report
    tuner = build_tuner(spec, backend=backend_for(spec, url, fake))
    tuner.run()
    price = TRAINING_PRICES_US_EAST_1["ml.m5.xlarge"]
    billed = job_cost(9 * 60 + 45, 2, price)
    for trial in tuner.trials.values():
        assert trial.status == TrialStatus.COMPLETED
        assert trial.last_result["cost"] == pytest.approx(job_cost(8 * 60, 2, price))  # estimate
    assert tuner.status.total_cost == pytest.approx(2 * billed)  # the billed cost, from the end


def test_example_spec_builds_the_backend_against_an_endpoint(aws, tmp_path, monkeypatch):
    url, role = aws
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATUNESMITHTEST01")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SecretKeyNeverWritten0123456789")
    spec = ExperimentSpec.from_file(ROOT / "examples" / "sagemaker-asha.yaml")
    spec.backend_options.update(endpoint_url=url, bucket=BUCKET,
                                source_dir=str(ROOT / spec.backend_options["source_dir"]))
    backend = build_backend(spec)  # through the factory, as `tunesmith run` does
    assert isinstance(backend, SageMakerBackend)
    assert backend.settings.role_arn == role  # resolved from the role name through IAM
    assert backend.settings.keep_alive == 600 and backend.hourly_price == 0.115
    spec.backend_options["bucket"] = "no-such-bucket-e2e"
    with pytest.raises(SageMakerSetupError, match="backend_options.bucket: S3 bucket"):
        build_backend(spec)


def test_tune_flow_runs_each_job_as_a_prefect_task(aws, tmp_path, monkeypatch, prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.tune import tune

    url, role = aws
    monkeypatch.setenv("API_TOKEN", SECRET)
    fake = FakeSageMaker(url, fail={1: (1, "AlgorithmError: ExecuteUserScriptError: exit code 1")},
                         print_secret=SECRET)
    fake.inject("list_training_jobs", "ThrottlingException", times=1)
    clients = {"sagemaker": fake, "s3": client("s3", url), "logs": client("logs", url),
               "sts": client("sts", url), "iam": client("iam", url)}
    # the flow builds the backend from the spec; hand it the clients that reach moto + Stubber
    monkeypatch.setattr("backends.sagemaker.backend.make_clients", lambda *args: clients)
    spec = asha_spec(tmp_path, "asha_promotion", n_workers=2, stop={"max_trials_started": 5})

    # MLflow on SQLite inside tmp_path: its database and artifacts are scanned for secrets below
    outcome = tune(spec, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert outcome.get("mlflow_parent_run_id")

    assert outcome["counts"]["trials"] == 5 and outcome["counts"]["failed"] == 1
    assert outcome["best_value"] == pytest.approx(
        load_experiment(tmp_path / spec.name).results["loss"].min())
    resumed = [t for t in range(5) if len(fake.jobs_of(t)) > 1]
    assert resumed, "promotion ASHA resumed no trial"
    with get_client(sync_client=True) as prefect:
        runs = prefect.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[outcome["flow_run_id"]])))
        flow_run = prefect.read_flow_run(outcome["flow_run_id"])
    segments = [r for r in runs if r.name.startswith("trial-")]
    assert len(segments) == len(fake.jobs)  # one task per training job
    assert sum(" resume " in r.name for r in segments) == len(fake.jobs) - 5
    failed = [r for r in segments if r.name.startswith("trial-1 ")]
    assert failed[0].state.is_failed() and "exit code 1" in failed[0].state.message
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert list((tmp_path / "mlartifacts").rglob("spec.json")), "MLflow artifacts not scanned"
    assert SECRET.encode() not in stored and role.encode() not in stored
    assert SECRET not in json.dumps(flow_run.parameters, default=str)
