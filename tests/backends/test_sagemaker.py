"""SageMakerBackend against a real moto server, with Stubber responses for what moto lacks."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile
import time

import boto3
import pytest
from botocore.stub import Stubber
from sagemaker_fake import EPOCH_SECONDS, FakeSageMaker, client, fresh_account, loss_of, serve_moto

from backends.aws_pricing import TRAINING_PRICES_US_EAST_1, job_cost
from backends.aws_retry import Backoff, call_with_retry
from backends.sagemaker import SageMakerBackend, SageMakerSetupError
from backends.sagemaker.backend import CLOSE_POLL_SECONDS
from backends.sagemaker.jobs import JOB_NAME_PATTERN, job_name, name_prefix, package_source
from hpo_core.secrets import MASK
from hpo_core.trial import EventKind, Trial

BUCKET = "tunesmith-test-bucket"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3-cpu-py311"
PRICE = TRAINING_PRICES_US_EAST_1["ml.m5.xlarge"]


@pytest.fixture(scope="module")
def moto_url():
    yield from serve_moto()


@pytest.fixture
def aws(moto_url):
    """A fresh moto account with a role and a bucket; returns (url, role ARN)."""
    return moto_url, fresh_account(moto_url, BUCKET)


def make_backend(url, fake, tmp_path=None, **options):
    clients = {"sagemaker": fake, "s3": client("s3", url), "logs": client("logs", url),
               "sts": client("sts", url), "iam": client("iam", url)}
    defaults = dict(role="TunesmithSageMakerRole", bucket=BUCKET, image_uri=IMAGE,
                    clients=clients, experiment="exp", poll_interval=0.005, instance_count=2,
                    hyperparameters={"epochs": 3}, retry_base_delay=0.001)
    backend = SageMakerBackend(**{**defaults, **options})
    if tmp_path is not None:
        backend.set_trial_root(tmp_path / "trials")
    return backend


def run_until(backend, done, max_polls=40):
    events = []
    for _ in range(max_polls):
        events.extend(backend.poll())
        if done(events):
            return events
    raise AssertionError(f"not done after {max_polls} polls: {events}")


def ended(trial_ids):
    return lambda events: {e.trial_id for e in events
                           if e.kind in (EventKind.COMPLETED, EventKind.FAILED)} >= set(trial_ids)


# -- job names and requests ------------------------------------------------------------------------
def test_job_names_are_valid_unique_and_traceable():
    prefix = name_prefix("my_experiment.v2__with-a-very-long-name-that-goes-on-and-on-and-on")
    names = {job_name(prefix, token, trial, attempt)
             for token in ("a1b2c3", "d4e5f6") for trial in (0, 7, 123456) for attempt in (0, 12)}
    assert len(names) == 12
    for name in names:
        assert len(name) <= 63 and JOB_NAME_PATTERN.match(name), name
        assert name.startswith("my-experiment-v2-with-a-very-lon")
    assert job_name(name_prefix("exp"), "a1b2c3", 17, 2) == "exp-a1b2c3-17-2"
    assert name_prefix("___") == "tunesmith"


def test_source_tarball_is_reproducible(tmp_path):
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"junk")
    first = package_source(tmp_path)
    os.utime(tmp_path / "train.py", (1, 1))
    assert package_source(tmp_path) == first
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        assert tar.getnames() == ["train.py"]


def test_create_request_carries_settings_secrets_apart(aws, tmp_path, monkeypatch):
    url, role = aws
    source = tmp_path / "src"
    source.mkdir()
    (source / "train.py").write_text("print('train')\n")
    monkeypatch.setenv("WANDB_API_KEY", "wandb-secret-value-123")
    fake = FakeSageMaker(url)
    backend = make_backend(
        url, fake, entry_point="train.py", source_dir=str(source), use_spot=True, max_run=600,
        max_wait=1200, secret_hyperparameters=["wandb_api_key"], inputs={"train": "s3://d/x"},
        tags={"team": "ml"}, instance_type="ml.g5.xlarge", instance_count=1)
    backend.start(Trial(4, {"lr": 0.01, "optimizer": "adam"}))
    (request,) = fake.requests.values()
    hp = request["HyperParameters"]
    assert json.loads(hp["lr"]) == 0.01 and json.loads(hp["optimizer"]) == "adam"
    assert json.loads(hp["epochs"]) == 3
    assert json.loads(hp["sagemaker_program"]) == "train.py"
    submit = json.loads(hp["sagemaker_submit_directory"])
    assert re.fullmatch(rf"s3://{BUCKET}/exp/source/[0-9a-f]{{16}}/sourcedir.tar.gz", submit)
    bucket, _, key = submit.removeprefix("s3://").partition("/")
    body = client("s3", url).get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:  # the code, and the reporter for it
        assert tar.getnames() == ["train.py", "hpo_core/__init__.py", "hpo_core/report.py"]
        assert b"[tunesmith]:" in tar.extractfile("hpo_core/report.py").read()
    assert "wandb_api_key" not in hp
    assert request["Environment"]["wandb_api_key"] == "wandb-secret-value-123"
    assert request["Environment"]["TUNESMITH_CHECKPOINT_DIR"] == "/opt/ml/checkpoints"
    assert request["CheckpointConfig"]["S3Uri"] == f"s3://{BUCKET}/exp/4/checkpoints/"
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 1200}
    assert request["EnableManagedSpotTraining"] is True
    assert request["RoleArn"] == role
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    assert tags["tunesmith:experiment"] == "exp" and tags["tunesmith:trial"] == "4"
    assert tags["team"] == "ml"
    assert request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == "s3://d/x"
    # moto accepted the request: the job exists there under its name
    described = client("sagemaker", url).describe_training_job(TrainingJobName=request["TrainingJobName"])
    assert described["CheckpointConfig"]["S3Uri"] == f"s3://{BUCKET}/exp/4/checkpoints/"


def test_warm_pool_and_option_errors_name_the_field(aws):
    url, _ = aws
    fake = FakeSageMaker(url)
    backend = make_backend(url, fake, keep_alive=300)
    backend.start(Trial(0, {"lr": 0.1}))
    (request,) = fake.requests.values()
    assert request["ResourceConfig"]["KeepAlivePeriodInSeconds"] == 300
    assert "EnableManagedSpotTraining" not in request
    with pytest.raises(ValueError, match="max_wait"):
        make_backend(url, fake, use_spot=True, max_run=600, max_wait=60)
    with pytest.raises(ValueError, match="instance_count"):
        make_backend(url, fake, instance_count=0)
    with pytest.raises(ValueError, match="entry_point"):
        make_backend(url, fake, entry_point="missing.py", source_dir=".")
    with pytest.raises(ValueError, match="secret_hyperparameters.*NOT_SET_ANYWHERE"):
        make_backend(url, fake, secret_hyperparameters=["not_set_anywhere"])


@pytest.mark.parametrize("options, message", [
    ({"price_per_hour": "abc"}, "price_per_hour: must be a number >= 0, got 'abc'"),
    ({"price_per_hour": -1}, "price_per_hour: must be a number >= 0, got -1"),
    ({"poll_interval": "abc"}, "poll_interval: must be a number of seconds > 0"),
    ({"poll_interval": 0}, "poll_interval: must be a number of seconds > 0 "
                           "(0 would keep a core busy polling), got 0"),
    ({"close_timeout": -5}, "close_timeout: must be a number >= 0"),
    ({"s3_prefix": 5}, "s3_prefix: must be a key prefix"),
    ({"inputs": ["s3://b/x"]}, "inputs: must be a mapping of names to values, got list"),
    ({"hyperparameters": [1]}, "hyperparameters: must be a mapping"),
    ({"cost_attr": ""}, "cost_attr: must be a metric name"),
    ({"instance_type": "ml.m5.xlarge "}, "instance_type: expected a type like 'ml.m5.xlarge'"),
    # SageMaker shows hyperparameters and tags in its console: no secret there
    ({"hyperparameters": {"api_key": {"secret": "env:API_TOKEN"}}},
     "hyperparameters.api_key: a secret reference is not allowed here"),
    ({"tags": {"owner": {"secret": "env:API_TOKEN"}}},
     "tags.owner: a secret reference is not allowed here"),
])
def test_bad_option_values_are_one_error_naming_the_option(aws, options, message):
    url, _ = aws
    with pytest.raises(ValueError, match=r"^backend_options\." + re.escape(message)):
        make_backend(url, FakeSageMaker(url), **options)


# -- fail fast on a bad setup ----------------------------------------------------------------------
def test_missing_role_fails_before_any_job(aws):
    url, _ = aws
    fake = FakeSageMaker(url)
    with pytest.raises(SageMakerSetupError, match="role.*'NoSuchRole' does not exist"):
        make_backend(url, fake, role="arn:aws:iam::123456789012:role/NoSuchRole")
    with pytest.raises(SageMakerSetupError, match="bucket.*does not exist"):
        make_backend(url, fake, bucket="no-such-bucket-here")
    assert fake.calls["create_training_job"] == 0


@pytest.mark.parametrize("options, message", [
    ({"role": "NoSuchRole"}, "backend_options.role: IAM role 'NoSuchRole' does not exist"),
    ({"bucket": "no-such-bucket-here"}, "backend_options.bucket: S3 bucket 'no-such-bucket-here'"),
    ({"endpoint_url": "http://127.0.0.1:9"}, "backend_options.region: cannot reach AWS"),
])
def test_a_setup_that_cannot_run_jobs_is_one_error_line(aws, tmp_path, monkeypatch, capsys,
                                                        options, message):
    """Through `tunesmith run`: one `error:` line and exit 2 (they were tracebacks, exit 1;
    an endpoint that cannot be reached was botocore's own traceback)."""
    url, _ = aws
    assert run_spec(url, tmp_path, monkeypatch, {"max_trials_started": 1}, **options) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def run_spec(url: str, tmp_path, monkeypatch, stop: dict, **options) -> int:
    """`tunesmith run --no-flow` of a SageMaker spec against moto at `url`: its exit code."""
    from flows.cli import main

    for name, value in (("AWS_ACCESS_KEY_ID", "AKIAX"), ("AWS_SECRET_ACCESS_KEY", "x"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    (tmp_path / "train.py").write_text("print('x')\n")
    spec = {"name": "sm-setup", "metric": "loss", "scheduler": "random",
            "config_space": {"lr": {"type": "uniform", "lower": 0, "upper": 1}},
            "backend": "sagemaker", "stop": stop, "results_root": str(tmp_path / "exp"),
            "backend_options": {"role": "TunesmithSageMakerRole", "bucket": BUCKET,
                                "image_uri": IMAGE, "endpoint_url": url,
                                "entry_point": "train.py", "source_dir": str(tmp_path),
                                **options}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    return main(["run", str(tmp_path / "spec.json"), "--no-flow"])


def test_rejected_credentials_fail_fast(aws):
    url, _ = aws
    sts = client("sts", url)
    stubber = Stubber(sts)
    stubber.add_client_error("get_caller_identity", service_error_code="InvalidClientTokenId",
                             service_message="The security token included in the request is invalid.",
                             http_status_code=403)
    stubber.activate()
    fake = FakeSageMaker(url)
    clients = {"sagemaker": fake, "s3": client("s3", url), "logs": client("logs", url),
               "sts": sts, "iam": client("iam", url)}
    with pytest.raises(SageMakerSetupError, match="InvalidClientTokenId"):
        SageMakerBackend(role="TunesmithSageMakerRole", bucket=BUCKET, image_uri=IMAGE,
                         clients=clients, experiment="exp")


def test_no_credentials_fail_fast(aws, monkeypatch, tmp_path):
    url, _ = aws
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(SageMakerSetupError, match="no AWS credentials"):
        SageMakerBackend(role="TunesmithSageMakerRole", bucket=BUCKET, image_uri=IMAGE,
                         boto_session=boto3.Session(region_name="us-east-1"), endpoint_url=url,
                         experiment="exp")


# -- metrics, costs, failures ----------------------------------------------------------------------
def test_metrics_from_log_events_and_cost(aws, tmp_path):
    url, _ = aws
    fake = FakeSageMaker(url)
    backend = make_backend(url, fake, tmp_path)
    backend.start(Trial(0, {"lr": 0.01}))
    backend.start(Trial(1, {"lr": 0.1}))
    events = run_until(backend, ended([0, 1]))
    for trial_id, lr in ((0, 0.01), (1, 0.1)):  # trial 1 reports in Syne Tune's format
        results = [e.metrics for e in events if e.trial_id == trial_id and e.kind == EventKind.RESULT]
        assert [m["epoch"] for m in results] == [1, 2, 3]
        assert [m["loss"] for m in results] == [loss_of({"lr": lr}, k) for k in (1, 2, 3)]
        # while running: elapsed log time x 2 instances x price; at the end: billable time
        assert results[1]["cost"] == pytest.approx(job_cost(EPOCH_SECONDS, 2, PRICE))
        exact = job_cost(3 * EPOCH_SECONDS, 2, PRICE)
        assert results[-1]["cost"] == pytest.approx(exact)
        (completed,) = [e for e in events if e.trial_id == trial_id and e.kind == EventKind.COMPLETED]
        assert completed.metrics == {"cost": pytest.approx(exact)}
        assert backend.trial_cost(trial_id) == pytest.approx(exact)
    record = json.loads((tmp_path / "trials" / "0" / "sagemaker.json").read_text())
    assert record["jobs"][0]["status"] == "Completed"
    assert record["jobs"][0]["billable_seconds"] == 3 * EPOCH_SECONDS
    assert record["cost"] == pytest.approx(job_cost(3 * EPOCH_SECONDS, 2, PRICE))
    assert "epoch 2 done" in (tmp_path / "trials" / "0" / "stdout").read_text()
    assert all(e.time == pytest.approx(e.time) and e.time >= 0 for e in events)


def test_polls_list_once_and_describe_only_changes(aws):
    url, _ = aws
    fake = FakeSageMaker(url)
    backend = make_backend(url, fake, hyperparameters={"epochs": 5}, poll_interval=0.05)
    for i in range(4):
        backend.start(Trial(i, {"lr": 0.01}))
    run_until(backend, ended(range(4)))
    polls = fake.calls["list_training_jobs"]
    assert polls == 5  # one ListTrainingJobs per poll for all four jobs
    assert fake.calls["describe_training_job"] == 4  # one per job: InProgress -> Completed
    import time
    t0 = time.monotonic()
    backend.start(Trial(9, {"lr": 0.01}))
    backend.poll()
    backend.poll()
    assert time.monotonic() - t0 >= 0.05  # the least poll interval


def test_failed_job_is_a_failed_trial_with_its_reason(aws):
    url, _ = aws
    fake = FakeSageMaker(url, fail={1: (2, "AlgorithmError: ExecuteUserScriptError: CUDA out of memory")},
                         stop_outside={2: 2})
    backend = make_backend(url, fake)
    for i in range(3):
        backend.start(Trial(i, {"lr": 0.01}))
    events = run_until(backend, ended([0, 1, 2]))
    kinds = {e.trial_id: e for e in events if e.kind != EventKind.RESULT}
    assert kinds[0].kind == EventKind.COMPLETED
    assert kinds[1].kind == EventKind.FAILED and "CUDA out of memory" in kinds[1].reason
    assert kinds[2].kind == EventKind.FAILED and "MaxRuntimeExceeded" in kinds[2].reason


def test_throttling_and_capacity_are_retried(aws, caplog):
    url, _ = aws
    fake = FakeSageMaker(url)
    fake.inject("create_training_job", "ResourceLimitExceeded", times=2)
    fake.inject("create_training_job", "ThrottlingException", times=1)
    fake.inject("list_training_jobs", "ThrottlingException", times=2)
    fake.inject("describe_training_job", "ThrottlingException", times=1)
    backend = make_backend(url, fake, retry_base_delay=0.001, retry_max_delay=0.002)
    with caplog.at_level(logging.WARNING, logger="backends.sagemaker"):
        backend.start(Trial(0, {"lr": 0.01}))  # waits for capacity, stays pending
        backend.start(Trial(1, {"lr": 0.01}))
        events = run_until(backend, ended([0, 1]))
    assert fake.raised[("create_training_job", "ResourceLimitExceeded")] == 2
    assert fake.raised[("list_training_jobs", "ThrottlingException")] == 2
    assert fake.raised[("describe_training_job", "ThrottlingException")] == 1
    assert {e.trial_id for e in events if e.kind == EventKind.COMPLETED} == {0, 1}
    assert not [e for e in events if e.kind == EventKind.FAILED]
    assert "cannot create a job yet (ResourceLimitExceeded" in caplog.text


def test_throttling_past_retries_skips_a_poll_not_the_experiment(aws):
    url, _ = aws
    fake = FakeSageMaker(url)
    backend = make_backend(url, fake, retry_attempts=2)
    backend.start(Trial(0, {"lr": 0.01}))
    fake.inject("list_training_jobs", "ThrottlingException", times=2)
    assert backend.poll() == []
    events = run_until(backend, ended([0]))
    assert [e.metrics["epoch"] for e in events if e.kind == EventKind.RESULT] == [1, 2, 3]


def test_pause_and_resume_continue_from_the_same_checkpoint(aws, tmp_path):
    url, _ = aws
    fake = FakeSageMaker(url)
    backend = make_backend(url, fake, tmp_path, hyperparameters={"epochs": 4})
    backend.start(Trial(0, {"lr": 0.01}))
    run_until(backend, lambda ev: any(e.kind == EventKind.RESULT and e.metrics["epoch"] == 2
                                      for e in ev))
    backend.pause(0)
    assert fake.calls["stop_training_job"] == 1
    backend.resume(Trial(0, {"lr": 0.01}, num_results=2))
    # the new job waits until the stopped one has ended (its last checkpoint is uploaded then)
    events = run_until(backend, ended([0]))
    first, second = fake.jobs_of(0)
    assert first.status == "Stopped" and second.status == "Completed"
    assert first.checkpoint_uri == second.checkpoint_uri == f"s3://{BUCKET}/exp/0/checkpoints/"
    assert second.start_epoch == 2 and second.reported == [3, 4]
    assert [e.metrics["epoch"] for e in events if e.kind == EventKind.RESULT] == [3, 4]
    stopped_cost = job_cost(2 * EPOCH_SECONDS, 2, PRICE)
    assert backend.trial_cost(0) == pytest.approx(stopped_cost + job_cost(2 * EPOCH_SECONDS, 2, PRICE))
    record = json.loads((tmp_path / "trials" / "0" / "sagemaker.json").read_text())
    assert [j["status"] for j in record["jobs"]] == ["Stopped", "Completed"]


def test_stop_ends_the_job_and_emits_nothing(aws):
    url, _ = aws
    fake = FakeSageMaker(url)
    backend = make_backend(url, fake, hyperparameters={"epochs": 5})
    backend.start(Trial(0, {"lr": 0.01}))
    backend.poll()
    backend.stop(0)
    events = [e for _ in range(3) for e in backend.poll()]
    assert events == []
    assert fake.jobs_of(0)[0].status == "Stopped"
    assert backend.trial_cost(0) == pytest.approx(job_cost(EPOCH_SECONDS, 2, PRICE))


def test_checkpoint_copy_for_pbt(aws):
    url, _ = aws
    s3 = client("s3", url)
    for name in ("checkpoint.json", "weights/model.pt"):
        s3.put_object(Bucket=BUCKET, Key=f"exp/0/checkpoints/{name}", Body=b'{"epoch": 2}')
    fake = FakeSageMaker(url)
    backend = make_backend(url, fake, hyperparameters={"epochs": 4})
    backend.start(Trial(1, {"lr": 0.01}, checkpoint_from=0))
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="exp/1/")["Contents"])
    assert keys == ["exp/1/checkpoints/checkpoint.json", "exp/1/checkpoints/weights/model.pt"]
    events = run_until(backend, ended([1]))
    assert [e.metrics["epoch"] for e in events if e.kind == EventKind.RESULT] == [3, 4]


def test_state_dict_round_trip_follows_running_jobs(aws, tmp_path):
    url, _ = aws
    fake = FakeSageMaker(url)
    backend = make_backend(url, fake, tmp_path, hyperparameters={"epochs": 4})
    backend.start(Trial(0, {"lr": 0.01}))
    first = run_until(backend, lambda ev: len(ev) >= 1)
    state = json.loads(json.dumps(backend.state_dict()))
    restarted = make_backend(url, fake, tmp_path, hyperparameters={"epochs": 4})
    restarted.load_state_dict(state)
    restarted.resume(Trial(0, {"lr": 0.01}, num_results=1))
    events = run_until(restarted, ended([0]))
    assert len(fake.jobs) == 1  # the running job was followed again, not started twice
    epochs = [e.metrics["epoch"] for e in first + events if e.kind == EventKind.RESULT]
    assert epochs == [1, 2, 3, 4]


def test_a_job_the_ended_session_stopped_after_its_snapshot_goes_on_in_a_new_job(aws, tmp_path):
    """SIGTERM: the state is saved, then the backend closes and stops the running job (that
    stop is in no snapshot). The resume finds the job Stopped: the trial goes on from its
    checkpoint in a new job (before: 'stopped outside tunesmith', a failed trial)."""
    url, _ = aws
    fake = FakeSageMaker(url)
    backend = make_backend(url, fake, tmp_path, hyperparameters={"epochs": 4})
    backend.start(Trial(0, {"lr": 0.01}))
    first = run_until(backend, lambda ev: any(e.kind == EventKind.RESULT and e.metrics["epoch"] == 2
                                              for e in ev))
    state = json.loads(json.dumps(backend.state_dict()))  # the snapshot
    backend.close()  # stops the job
    restarted = make_backend(url, fake, tmp_path, hyperparameters={"epochs": 4})
    restarted.load_state_dict(state)
    restarted.resume(Trial(0, {"lr": 0.01}, num_results=2))
    events = run_until(restarted, ended([0]))
    assert [e.kind for e in events if e.kind != EventKind.RESULT] == [EventKind.COMPLETED]
    first_job, second_job = fake.jobs_of(0)
    assert first_job.status == "Stopped" and second_job.start_epoch == 2
    epochs = [e.metrics["epoch"] for e in first + events if e.kind == EventKind.RESULT]
    assert epochs == [1, 2, 3, 4]


def test_a_job_a_kill_stopped_before_any_snapshot_had_it_goes_on_in_a_new_job(aws, tmp_path):
    """A kill while a trial launched: its job exists, no snapshot has it, and the backend's
    close stopped it. The resume starts the trial again under the same job name (AWS answers
    ResourceInUse): the stopped job is the ended session's, so the trial goes on in a new job
    (before: adopted as if running, then 'stopped outside tunesmith', a failed trial)."""
    url, _ = aws
    fake = FakeSageMaker(url)
    backend = make_backend(url, fake, tmp_path, hyperparameters={"epochs": 3})
    state = json.loads(json.dumps(backend.state_dict()))  # the last snapshot: no job yet
    backend.start(Trial(0, {"lr": 0.01}))
    run_until(backend, lambda _: fake.jobs_of(0) != [])
    backend.close()  # stops the job
    restarted = make_backend(url, fake, tmp_path, hyperparameters={"epochs": 3})
    restarted.load_state_dict(state)
    restarted.start(Trial(0, {"lr": 0.01}))  # the journal's start, replayed
    events = run_until(restarted, ended([0]))
    assert [e.kind for e in events if e.kind != EventKind.RESULT] == [EventKind.COMPLETED]
    assert [job.status for job in fake.jobs_of(0)] == ["Stopped", "Completed"]


def test_close_does_not_wait_out_a_long_poll_interval(aws, tmp_path):
    """A kill's close: the stopped jobs are checked every CLOSE_POLL_SECONDS at most (before:
    the rest of a 30 s poll interval went by first)."""
    url, _ = aws
    fake = FakeSageMaker(url)
    backend = make_backend(url, fake, tmp_path, hyperparameters={"epochs": 50})
    backend.start(Trial(0, {"lr": 0.01}))
    run_until(backend, lambda _: fake.jobs_of(0) != [])
    backend.poll_interval = 30.0
    started = time.monotonic()
    backend.close()
    assert time.monotonic() - started < CLOSE_POLL_SECONDS + 3
    assert [job.status for job in fake.jobs_of(0)] == ["Stopped"]


def test_retry_helper_backs_off_with_jitter():
    from botocore.exceptions import ClientError

    delays, calls = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ClientError({"Error": {"Code": "ThrottlingException"}}, "ListTrainingJobs")
        return "ok"

    assert call_with_retry(flaky, Backoff(1.0, 10.0, seed=0), attempts=5, sleep=delays.append) == "ok"
    assert len(delays) == 2 and 0 <= delays[0] <= 1.0 and 0 <= delays[1] <= 2.0
    with pytest.raises(ClientError):
        call_with_retry(lambda: (_ for _ in ()).throw(
            ClientError({"Error": {"Code": "ValidationException"}}, "X")), Backoff(), sleep=delays.append)
    assert len(delays) == 2


# -- secrets ---------------------------------------------------------------------------------------
def test_secrets_never_reach_files_logs_or_events(aws, tmp_path, caplog, monkeypatch):
    url, role = aws
    secret = "hf_SuperSecretToken_9f8e7d"
    fake = FakeSageMaker(url, print_secret=secret,
                         fail={1: (2, f"AlgorithmError: bad token {secret}")})
    with caplog.at_level(logging.DEBUG, logger="backends"):
        backend = make_backend(url, fake, tmp_path, secret_hyperparameters={"hf_token": secret})
        backend.start(Trial(0, {"lr": 0.01}))
        backend.start(Trial(1, {"lr": 0.01}))
        events = run_until(backend, ended([0, 1]))
        (tmp_path / "state.json").write_text(json.dumps(backend.state_dict()))
    assert all(r["Environment"]["hf_token"] == secret for r in fake.requests.values())
    assert all("hf_token" not in r["HyperParameters"] for r in fake.requests.values())
    written = "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    assert f"token={MASK}" in written  # the script's careless line, masked
    for text in (written, caplog.text, repr(events)):
        assert secret not in text
        assert "SecretKeyNeverWritten" not in text and "AKIATUNESMITHTEST01" not in text
        assert role not in text
    (failed,) = [e for e in events if e.kind == EventKind.FAILED]
    assert failed.reason.endswith(f"bad token {MASK}")


@pytest.mark.filterwarnings("ignore")
def test_options_from_a_model_trainer(aws, monkeypatch, tmp_path):
    pytest.importorskip("sagemaker.train", reason="the sagemaker SDK (extra 'sagemaker') is absent")
    url, role = aws
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)  # the SDK talks to AWS on its own: to moto
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")
    from sagemaker.core.helper.session_helper import Session
    from sagemaker.train import ModelTrainer
    from sagemaker.train.configs import Compute, SourceCode, StoppingCondition

    from backends.sagemaker.sdk import options_from_model_trainer

    (tmp_path / "train.py").write_text("print('x')\n")
    boto_session = boto3.Session(region_name="us-east-1", aws_access_key_id="AKIAX",
                                 aws_secret_access_key="x")
    trainer = ModelTrainer(
        sagemaker_session=Session(boto_session=boto_session, default_bucket=BUCKET),
        role=role,
        training_image=IMAGE,
        source_code=SourceCode(source_dir=str(tmp_path), entry_script="train.py"),
        compute=Compute(instance_type="ml.g5.xlarge", instance_count=2, keep_alive_period_in_seconds=120),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=900),
        hyperparameters={"epochs": 3},
    )
    options = options_from_model_trainer(trainer)
    assert options["image_uri"] == IMAGE and options["role"] == role
    assert options["instance_type"] == "ml.g5.xlarge" and options["instance_count"] == 2
    assert options["keep_alive"] == 120 and options["max_run"] == 900
    assert options["entry_point"] == "train.py" and options["bucket"] == BUCKET
    assert options["hyperparameters"] == {"epochs": 3}
    fake = FakeSageMaker(url)
    clients = {"sagemaker": fake, "s3": client("s3", url), "logs": client("logs", url),
               "sts": client("sts", url), "iam": client("iam", url)}
    backend = SageMakerBackend.from_model_trainer(trainer, clients=clients, experiment="exp",
                                                  poll_interval=0.005)
    backend.start(Trial(0, {"lr": 0.01}))
    events = run_until(backend, ended([0]))
    assert [e.metrics["epoch"] for e in events if e.kind == EventKind.RESULT] == [1, 2, 3]
    (request,) = fake.requests.values()
    assert request["ResourceConfig"]["KeepAlivePeriodInSeconds"] == 120
    assert json.loads(request["HyperParameters"]["sagemaker_program"]) == "train.py"


def test_wake_cuts_the_poll_wait_short_without_calling_aws(aws):
    import threading
    import time

    url, _ = aws
    fake = FakeSageMaker(url)
    backend = make_backend(url, fake, poll_interval=30.0)
    backend.start(Trial(0, {"lr": 0.01}))
    backend.poll()  # the first poll does not wait
    lists = fake.calls["list_training_jobs"]
    threading.Timer(0.2, backend.wake).start()
    started = time.monotonic()
    assert backend.poll() == []
    assert time.monotonic() - started < 5.0
    assert fake.calls["list_training_jobs"] == lists  # the woken poll asked AWS nothing


def test_a_cost_limit_without_a_known_price_is_one_error_before_any_job(aws, tmp_path,
                                                                         monkeypatch, capsys):
    url, _ = aws
    assert run_spec(url, tmp_path, monkeypatch, {"max_cost": 0.05},
                    instance_type="ml.zz9.mega") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: spec.backend_options.price_per_hour: max_cost sums the "
                              "jobs' cost, and no price is known for instance type "
                              "'ml.zz9.mega'"), err
    assert not (tmp_path / "exp" / "sm-setup" / "state.json").exists()  # no job ran
