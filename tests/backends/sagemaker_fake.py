"""SageMaker as the backend sees it, offline: a moto server plus botocore Stubber responses.

moto (a real HTTP server) implements CreateTrainingJob, DescribeTrainingJob, ListTrainingJobs,
S3, CloudWatch Logs, IAM and STS, but a moto job is Completed at once and StopTrainingJob is not
implemented. `FakeSageMaker` wraps a moto SageMaker client: creates go to moto; list and
describe answers come from moto with the job status of a simulated training run written over
them, and are returned through a Stubber'd client of the same class (so botocore validates them
against the service model); StopTrainingJob is answered by the Stubber; injected errors
(throttling, ResourceLimitExceeded) are real botocore ClientErrors raised by the Stubber.

The simulated training script runs one epoch per ListTrainingJobs call: it restores its epoch
from `checkpoint.json` in the job's checkpoint S3 prefix, writes a report line (and noise) to
the job's CloudWatch log stream in moto, saves the checkpoint, and ends at `epochs`.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import requests
from botocore.stub import Stubber
from moto.server import ThreadedMotoServer

from hpo_core.report import SYNE_TUNE_PREFIX, format_report

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
EPOCH_SECONDS = 60
CREDENTIALS = {"aws_access_key_id": "AKIATUNESMITHTEST01", "aws_secret_access_key": "SecretKeyNeverWritten0123456789"}


def client(service: str, url: str) -> Any:
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", **CREDENTIALS)


def serve_moto() -> Iterator[str]:
    """A moto server on a free loopback port, for a module-scoped fixture; yields its URL."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def fresh_account(url: str, bucket: str) -> str:
    """Reset moto to an empty account holding an execution role and `bucket`; the role ARN."""
    requests.post(f"{url}/moto-api/reset", timeout=10)
    role = client("iam", url).create_role(
        RoleName="TunesmithSageMakerRole", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    client("s3", url).create_bucket(Bucket=bucket)
    return role


def loss_of(config: dict[str, Any], epoch: int) -> float:
    """A learning curve: better with lr near 1e-2, improving with epochs."""
    return round((math.log10(float(config["lr"])) + 2.0) ** 2 + 1.0 / epoch, 6)


@dataclass
class FakeJob:
    name: str
    trial_id: int
    config: dict[str, Any]
    checkpoint_uri: str
    epochs: int
    created: datetime
    status: str = "InProgress"
    secondary: str = "Starting"
    failure_reason: str | None = None
    stopping: bool = False
    epoch: int = -1  # -1: not started yet
    start_epoch: int = 0
    billable: int = 0
    stream: str = ""
    reported: list[int] = field(default_factory=list)


class FakeSageMaker:
    """A SageMaker client for the backend (see the module docstring).

    Args:
        url: the moto server.
        fail: trial id -> (epoch, FailureReason) of jobs that fail at that epoch.
        stop_outside: trial id -> epoch at which the job is stopped by "someone else".
        print_secret: a value the training script carelessly prints (redaction test).
        upload_seconds: billed seconds after the last epoch (the model upload), seen one poll
            after the last report.
    """

    def __init__(self, url: str, fail: dict[int, tuple[int, str]] | None = None,
                 stop_outside: dict[int, int] | None = None, print_secret: str | None = None,
                 upload_seconds: int = 0):
        self.real = client("sagemaker", url)
        self.meta = self.real.meta
        self._stubbed = client("sagemaker", url)
        self._stubber = Stubber(self._stubbed)
        self._stubber.activate()
        self.logs = client("logs", url)
        self.s3 = client("s3", url)
        self.fail = fail or {}
        self.stop_outside = stop_outside or {}
        self.print_secret = print_secret
        self.upload_seconds = upload_seconds
        self.jobs: dict[str, FakeJob] = {}
        self.requests: dict[str, dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()
        self.errors: dict[str, list[str]] = defaultdict(list)
        self.raised: Counter[str] = Counter()
        try:
            self.logs.create_log_group(logGroupName=LOG_GROUP)
        except self.logs.exceptions.ResourceAlreadyExistsException:
            pass

    # -- error injection ----------------------------------------------------------------------
    def inject(self, operation: str, code: str, times: int = 1) -> None:
        """The next `times` calls of `operation` fail with AWS error `code`."""
        self.errors[operation].extend([code] * times)

    def _maybe_fail(self, operation: str, params: dict[str, Any]) -> None:
        if self.errors[operation]:
            code = self.errors[operation].pop(0)
            self.raised[(operation, code)] += 1
            status = 429 if "Throttl" in code else 400
            self._stubber.add_client_error(operation, service_error_code=code,
                                           service_message=f"injected {code}",
                                           http_status_code=status, expected_params=params)
            getattr(self._stubbed, operation)(**params)

    def _stub(self, operation: str, response: dict[str, Any], params: dict[str, Any]) -> Any:
        response = {k: v for k, v in response.items() if k != "ResponseMetadata"}
        self._stubber.add_response(operation, response, expected_params=params)
        return getattr(self._stubbed, operation)(**params)

    # -- the API the backend uses -----------------------------------------------------------------
    def create_training_job(self, **params: Any) -> Any:
        self.calls["create_training_job"] += 1
        self._maybe_fail("create_training_job", params)
        name = params["TrainingJobName"]
        if name in self.jobs:  # AWS: job names are unique in an account and region
            self._stubber.add_client_error(
                "create_training_job", service_error_code="ResourceInUse",
                service_message=f"Training job names must be unique: {name}",
                expected_params=params)
            self._stubbed.create_training_job(**params)
        response = self.real.create_training_job(**params)
        config = {k: json.loads(v) for k, v in params["HyperParameters"].items()
                  if not k.startswith("sagemaker_")}
        self.requests[name] = params
        self.jobs[name] = FakeJob(
            name=name,
            trial_id=int(params["Environment"]["TUNESMITH_TRIAL_ID"]),
            config=config,
            checkpoint_uri=params["CheckpointConfig"]["S3Uri"],
            epochs=int(config.get("epochs", 3)),
            created=datetime.now(UTC),
        )
        return response

    def list_training_jobs(self, **params: Any) -> Any:
        self.calls["list_training_jobs"] += 1
        self._maybe_fail("list_training_jobs", params)
        self.tick()
        response = self.real.list_training_jobs(**params)
        for summary in response["TrainingJobSummaries"]:
            job = self.jobs.get(summary["TrainingJobName"])
            if job is not None:
                summary["TrainingJobStatus"] = job.status
                if job.status not in ("Completed", "Failed", "Stopped"):
                    summary.pop("TrainingEndTime", None)
        return self._stub("list_training_jobs", response, params)

    def describe_training_job(self, **params: Any) -> Any:
        self.calls["describe_training_job"] += 1
        self._maybe_fail("describe_training_job", params)
        response = self.real.describe_training_job(**params)
        job = self.jobs[params["TrainingJobName"]]
        response.update(TrainingJobStatus=job.status, SecondaryStatus=job.secondary,
                        TrainingStartTime=job.created, BillableTimeInSeconds=job.billable,
                        TrainingTimeInSeconds=job.billable)
        if job.failure_reason:
            response["FailureReason"] = job.failure_reason
        if job.status in ("Completed", "Failed", "Stopped"):
            response["TrainingEndTime"] = job.created + timedelta(seconds=job.billable)
        else:
            response.pop("TrainingEndTime", None)
        return self._stub("describe_training_job", response, params)

    def stop_training_job(self, **params: Any) -> Any:
        self.calls["stop_training_job"] += 1
        self._maybe_fail("stop_training_job", params)
        job = self.jobs[params["TrainingJobName"]]
        if job.status != "InProgress":
            self._stubber.add_client_error(
                "stop_training_job", service_error_code="ValidationException",
                service_message=f"The job {job.name} is not in progress", expected_params=params)
        else:
            job.status, job.secondary, job.stopping = "Stopping", "Stopping", True
            self._stubber.add_response("stop_training_job", {}, expected_params=params)
        return self._stubbed.stop_training_job(**params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    # -- the simulated training runs ---------------------------------------------------------------
    def tick(self) -> None:
        for job in self.jobs.values():
            if job.status == "Stopping":
                job.status, job.secondary = "Stopped", "Stopped"
            elif job.secondary == "Uploading":
                job.billable += self.upload_seconds
                job.status, job.secondary = "Completed", "Completed"
            elif job.status == "InProgress":
                self._train_one_epoch(job)

    def _train_one_epoch(self, job: FakeJob) -> None:
        lines = []
        if job.epoch < 0:
            job.start_epoch = job.epoch = self._load_checkpoint(job)
            job.stream = f"{job.name}/algo-1-{int(job.created.timestamp())}"
            self.logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=job.stream)
            job.secondary = "Training"
            lines.append("Invoking user script with hyperparameters")
            if self.print_secret:
                lines.append(f"DEBUG token={self.print_secret}")
        job.epoch += 1
        job.billable += EPOCH_SECONDS
        fail_epoch, reason = self.fail.get(job.trial_id, (None, None))
        if job.epoch == fail_epoch:
            lines.append("Traceback (most recent call last): RuntimeError: CUDA out of memory")
            job.status, job.secondary, job.failure_reason = "Failed", "Failed", reason
        elif self.stop_outside.get(job.trial_id) == job.epoch:
            job.status, job.secondary = "Stopped", "MaxRuntimeExceeded"
        else:
            self._save_checkpoint(job)
            loss = loss_of(job.config, job.epoch)
            if job.trial_id % 2:  # odd trials report in Syne Tune's format
                lines.append(f"{SYNE_TUNE_PREFIX} " + json.dumps({"epoch": job.epoch, "loss": loss}))
            else:
                lines.append(format_report({"epoch": job.epoch, "loss": loss}))
            job.reported.append(job.epoch)
            lines.append(f"epoch {job.epoch} done")
            if job.epoch >= job.epochs:
                job.status, job.secondary = ("InProgress", "Uploading") if self.upload_seconds \
                    else ("Completed", "Completed")
        start_ms = int(job.created.timestamp() * 1000)
        stamp = start_ms + (job.epoch - job.start_epoch) * EPOCH_SECONDS * 1000
        self.logs.put_log_events(
            logGroupName=LOG_GROUP, logStreamName=job.stream,
            logEvents=[{"timestamp": stamp, "message": line} for line in lines],
        )

    def _checkpoint_key(self, job: FakeJob) -> tuple[str, str]:
        bucket, _, prefix = job.checkpoint_uri.removeprefix("s3://").partition("/")
        return bucket, prefix + "checkpoint.json"

    def _load_checkpoint(self, job: FakeJob) -> int:
        bucket, key = self._checkpoint_key(job)
        try:
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return 0
        return int(json.loads(body)["epoch"])

    def _save_checkpoint(self, job: FakeJob) -> None:
        bucket, key = self._checkpoint_key(job)
        self.s3.put_object(Bucket=bucket, Key=key, Body=json.dumps({"epoch": job.epoch}).encode())

    # -- what tests look at ------------------------------------------------------------------------
    def jobs_of(self, trial_id: int) -> list[FakeJob]:
        return [j for j in self.jobs.values() if j.trial_id == trial_id]
