"""SageMaker backend: every trial runs as a SageMaker training job; a resume is a new job.

A job gets the trial's config as hyperparameters, its own checkpoint prefix
`s3://<bucket>/<experiment>/<trial>/checkpoints/` (SageMaker syncs `/opt/ml/checkpoints` there
and restores it into the next job of the trial, which is how pause and resume work), and tags
naming the experiment and the trial. Reports (`[tunesmith]: {...}` or Syne Tune's
`[tune-metric]: {...}` lines) are read from the job's CloudWatch log stream. Statuses come from
one batched `ListTrainingJobs` per poll, and one `DescribeTrainingJob` per job whose status
changed. A trial's cost (billable seconds x instances x the hourly price) is reported with
every result as `cost` (an estimate while the job runs, exact once it ended).

Throttling and `ResourceLimitExceeded` never fail the experiment: the job is created on a later
poll. A job that fails is a failed trial with SageMaker's `FailureReason`. Bad credentials, a
missing role or bucket raise `SageMakerSetupError` before any job starts.

Secret hyperparameters (`secret_hyperparameters`) reach the job as environment variables,
never as hyperparameters, and are masked in everything the backend writes and emits.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from backends.aws_pricing import PRICING_SOURCE, job_cost, price_per_hour
from backends.aws_retry import (
    THROTTLING_CODES,
    Backoff,
    call_with_retry,
    error_code,
    error_message,
)
from backends.sagemaker_jobs import (
    ROLE_ARN_PATTERN,
    JobSettings,
    digest,
    job_name,
    name_prefix,
    new_token,
    package_source,
    reporter_files,
    resolve_secrets,
)
from backends.sagemaker_logs import LOG_GROUP, LogReader, LogTail
from hpo_core.backend import TrialBackend
from hpo_core.report import ReportParser
from hpo_core.secrets import mask_text, mask_values, remember
from hpo_core.store import atomic_write_text
from hpo_core.trial import EventKind, Trial, TrialEvent

logger = logging.getLogger(__name__)

FINAL_STATUSES = frozenset({"Completed", "Failed", "Stopped"})
#: CreateTrainingJob errors that mean "not now": the job is created on a later poll.
RETRY_CREATE_CODES = THROTTLING_CODES | {"ResourceLimitExceeded", "CapacityError",
                                         "InsufficientCapacityError", "InternalFailure",
                                         "ServiceUnavailable"}
LIST_CREATION_MARGIN_S = 600.0
MAX_COPY_OBJECT_BYTES = 5 * 1024**3  # CopyObject's limit
MISSING_POLLS_BEFORE_DESCRIBE = 3


class SageMakerSetupError(RuntimeError):
    """The AWS setup cannot run jobs (credentials, role, bucket, region); nothing was started."""


@dataclass
class _Job:
    """One training job of a trial, as last seen."""

    name: str
    trial_id: int
    created_at: float
    status: str = "InProgress"
    secondary_status: str | None = None
    failure_reason: str | None = None
    billable_seconds: float | None = None
    training_start: float | None = None  # epoch seconds
    first_log_time: float | None = None
    cost: float | None = None
    stop_requested: bool = False
    stop_sent: bool = False
    done: bool = False  # ended and accounted for
    missing: int = 0  # polls in a row without the job in ListTrainingJobs
    tail: LogTail = field(default_factory=lambda: LogTail(""))
    parser: ReportParser | None = None

    def to_dict(self) -> dict[str, Any]:
        keys = ("name", "trial_id", "created_at", "status", "secondary_status", "failure_reason",
                "billable_seconds", "training_start", "first_log_time", "cost", "stop_requested",
                "stop_sent", "done")
        return {**{k: getattr(self, k) for k in keys}, "tail": self.tail.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> _Job:
        job = cls(**{k: v for k, v in data.items() if k != "tail"})
        job.tail = LogTail.from_dict(data["tail"])
        return job


@dataclass
class _TrialRun:
    """The jobs of one trial and what the tuner wants of it."""

    trial_id: int
    config: dict[str, Any]
    want: str = "run"  # run | pause | stop | done
    jobs: list[str] = field(default_factory=list)
    pending: bool = False  # a job is to be created
    pending_name: str | None = None  # kept across retries, so a retried create is idempotent
    create_failures: int = 0
    next_try: float = 0.0
    copy_from: int | None = None
    cost_done: float = 0.0  # exact cost of its ended jobs

    def to_dict(self) -> dict[str, Any]:
        return {"trial_id": self.trial_id, "want": self.want, "jobs": list(self.jobs),
                "pending": self.pending, "pending_name": self.pending_name,
                "copy_from": self.copy_from, "cost_done": self.cost_done}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> _TrialRun:
        return cls(config={}, **dict(data))


class SageMakerBackend(TrialBackend):
    """Runs each trial as a SageMaker training job.

    Args:
        role: the execution role (ARN, or name resolved with iam:GetRole).
        bucket: S3 bucket for code, checkpoints and outputs (`s3://bucket/[s3_prefix/]<experiment>/`).
        image_uri: the training image (a SageMaker framework container such as the PyTorch
            DLC, or your own image).
        entry_point: the script to run, relative to `source_dir` (or a path whose folder is the
            source dir); uploaded as a tar.gz and passed as `sagemaker_program` /
            `sagemaker_submit_directory`. Leave out for images that bring their own entry.
        source_dir: folder uploaded with the entry point.
        bundle_reporter: add `hpo_core/report.py` to the uploaded code (unless the source dir
            has an `hpo_core`), so `from hpo_core.report import report` works in the job.
        instance_type, instance_count, volume_size_gb: the compute of each job.
        max_run: MaxRuntimeInSeconds of each job.
        use_spot, max_wait: managed spot training and its MaxWaitTimeInSeconds (>= max_run).
        keep_alive: warm pool KeepAlivePeriodInSeconds (0: none).
        hyperparameters: fixed hyperparameters added to every trial's config.
        secret_hyperparameters: names (values from the launcher's environment) or a mapping of
            names to values; passed to jobs as environment variables and masked everywhere.
        environment: more environment variables of the jobs.
        inputs: input channels, name -> s3:// URI.
        tags: more tags of the jobs.
        experiment: names jobs and S3 prefixes (default: the experiment folder's name).
        s3_prefix: key prefix inside the bucket.
        region, endpoint_url, boto_session, clients: where and how to reach AWS (`clients`
            maps "sagemaker", "s3", "logs", "sts", "iam" to ready boto3 clients).
        price_per_hour: USD per instance-hour (default: `backends.aws_pricing`, us-east-1).
        cost_attr: the metric that carries the trial's cost.
        poll_interval: least seconds between two polls of the AWS APIs (`wake()` ends a
            poll's wait early without polling them).
        close_timeout: seconds `close()` waits for stopped jobs to end (to record their cost).
        validate: check credentials, role and bucket now (else at the first start).
        retry_attempts, retry_base_delay, retry_max_delay: backoff on throttling.
        sleep: how the backoff waits between retries.
    """

    def __init__(
        self,
        *,
        role: str,
        bucket: str,
        image_uri: str,
        entry_point: str | None = None,
        source_dir: str | None = None,
        bundle_reporter: bool = True,
        instance_type: str = "ml.m5.xlarge",
        instance_count: int = 1,
        volume_size_gb: int = 30,
        max_run: int = 3600,
        use_spot: bool = False,
        max_wait: int | None = None,
        keep_alive: int = 0,
        input_mode: str = "File",
        hyperparameters: Mapping[str, Any] | None = None,
        secret_hyperparameters: Iterable[str] | Mapping[str, str] | None = None,
        environment: Mapping[str, str] | None = None,
        inputs: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        experiment: str | None = None,
        s3_prefix: str = "",
        region: str | None = None,
        endpoint_url: str | None = None,
        boto_session: Any | None = None,
        clients: Mapping[str, Any] | None = None,
        price_per_hour: float | None = None,
        cost_attr: str = "cost",
        poll_interval: float = 10.0,
        close_timeout: float = 180.0,
        log_group: str = LOG_GROUP,
        validate: bool = True,
        retry_attempts: int = 6,
        retry_base_delay: float = 1.0,
        retry_max_delay: float = 60.0,
        sleep: Callable[[float], Any] = time.sleep,
    ):
        super().__init__()
        if not isinstance(role, str) or not role:
            raise ValueError("backend_options.role: the SageMaker execution role is required")
        self._secrets = resolve_secrets(secret_hyperparameters)
        remember(v for v in self._secrets.values() if isinstance(v, str))
        self._source_dir, entry_point = _source_layout(entry_point, source_dir)
        self._bundle_reporter = bundle_reporter
        self._clients = self._make_clients(clients, boto_session, region, endpoint_url)
        self.region = region or getattr(self._clients["sagemaker"].meta, "region_name", None)
        self._role_given = role
        self.settings = JobSettings(
            image_uri=image_uri,
            role_arn=role,  # a role name becomes its ARN in validate()
            bucket=bucket,
            s3_prefix=s3_prefix,
            entry_point=entry_point,
            instance_type=instance_type,
            instance_count=instance_count,
            volume_size_gb=volume_size_gb,
            max_run=max_run,
            use_spot=use_spot,
            max_wait=max_wait,
            keep_alive=keep_alive,
            input_mode=input_mode,
            inputs=dict(inputs or {}),
            hyperparameters=dict(hyperparameters or {}),
            environment=dict(environment or {}),
            tags=dict(tags or {}),
        )
        self.settings.validate()
        if poll_interval < 0:
            raise ValueError(f"backend_options.poll_interval: must be >= 0, got {poll_interval}")
        self.poll_interval = float(poll_interval)
        self.close_timeout = float(close_timeout)
        self.cost_attr = cost_attr
        self.hourly_price = price_per_hour if price_per_hour is not None \
            else _table_price(instance_type)
        self._experiment = experiment
        self._token = new_token()
        self._source_uri: str | None = None
        self._backoff = Backoff(retry_base_delay, retry_max_delay)
        self._retry_attempts = retry_attempts
        self._sleep = sleep
        self._woken = threading.Event()
        self._logs = LogReader(self._clients["logs"], self._call, log_group)
        self._jobs: dict[str, _Job] = {}
        self._trials: dict[int, _TrialRun] = {}
        self._queued: list[TrialEvent] = []
        self._t0 = time.monotonic()
        self._last_poll: float | None = None
        self._validated = False
        if validate:
            self.validate()

    # -- setup ---------------------------------------------------------------------------------
    @classmethod
    def from_model_trainer(cls, trainer: Any, **options: Any) -> SageMakerBackend:
        """A backend with the settings of a `sagemaker` SDK v3 `ModelTrainer` (the optional
        `tunesmith[sagemaker]` extra); `options` override them."""
        from backends.sagemaker_sdk import options_from_model_trainer

        return cls(**{**options_from_model_trainer(trainer), **options})

    @staticmethod
    def _make_clients(clients: Mapping[str, Any] | None, boto_session: Any | None,
                      region: str | None, endpoint_url: str | None) -> dict[str, Any]:
        given = dict(clients or {})
        needed: tuple[Literal["sagemaker", "s3", "logs", "sts", "iam"], ...] = (
            "sagemaker", "s3", "logs", "sts", "iam")
        if all(name in given for name in needed):
            return given
        import boto3
        from botocore.config import Config
        from botocore.exceptions import NoRegionError

        session = boto_session or boto3.Session(region_name=region)
        config = Config(retries={"mode": "standard", "max_attempts": 3},
                        user_agent_extra="tunesmith")
        try:
            for name in needed:
                if name not in given:
                    given[name] = session.client(name, region_name=region,
                                                 endpoint_url=endpoint_url, config=config)
        except NoRegionError:
            raise SageMakerSetupError(
                "backend_options.region: no AWS region configured (set region, or AWS_REGION)"
            ) from None
        return given

    def validate(self) -> None:
        """Check credentials (STS), the role (IAM) and the bucket (S3) before any job starts."""
        sts, iam, s3 = self._clients["sts"], self._clients["iam"], self._clients["s3"]
        try:
            account = self._call(sts.get_caller_identity)["Account"]
        except NoCredentialsError:
            raise SageMakerSetupError(
                "no AWS credentials found: configure a profile, AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY or an instance role (see docs/sagemaker.md)"
            ) from None
        except ClientError as err:
            raise SageMakerSetupError(
                f"AWS rejected the credentials ({error_code(err)}): {error_message(err)}"
            ) from None
        role_name = self._role_given.rsplit("/", 1)[-1]
        try:
            arn = self._call(iam.get_role, RoleName=role_name)["Role"]["Arn"]
            self.settings.role_arn = arn
        except ClientError as err:
            code = error_code(err)
            if code == "NoSuchEntity":
                raise SageMakerSetupError(
                    f"backend_options.role: IAM role {role_name!r} does not exist in account "
                    f"{account}; create it (see docs/sagemaker.md)"
                ) from None
            if code not in ("AccessDenied", "AccessDeniedException") or \
                    not ROLE_ARN_PATTERN.match(self._role_given):
                raise SageMakerSetupError(
                    f"backend_options.role: cannot read IAM role {role_name!r} "
                    f"({code}): {error_message(err)}"
                ) from None
            logger.warning("cannot check IAM role %r (no iam:GetRole permission); going on",
                           role_name)
        try:
            self._call(s3.head_bucket, Bucket=self.settings.bucket)
        except ClientError as err:
            code = error_code(err)
            what = "does not exist" if code in ("404", "NoSuchBucket", "NotFound") else \
                f"is not accessible ({code})"
            raise SageMakerSetupError(
                f"backend_options.bucket: S3 bucket {self.settings.bucket!r} {what}"
            ) from None
        self._validated = True

    @property
    def experiment(self) -> str:
        if self._experiment is None:
            if self.context is None or self.context.experiment is None:
                raise SageMakerSetupError(
                    "backend_options.experiment: not set, and the backend's trial context "
                    "names no experiment (run it through a Tuner with an experiment store, or "
                    "set experiment)"
                )
            self._experiment = self.context.experiment
        return self._experiment

    @property
    def job_prefix(self) -> str:
        """The start of this experiment's job names (what ListTrainingJobs filters on)."""
        return name_prefix(self.experiment)

    def _ensure_ready(self) -> None:
        if not self._validated:
            self.validate()
        if self._source_dir is not None and self._source_uri is None:  # with an entry point
            self._source_uri = self._upload_source(self._source_dir)

    def _upload_source(self, folder: Path) -> str:
        data = package_source(folder, reporter_files(folder) if self._bundle_reporter else None)
        root = self.settings.s3_root(self.experiment)
        uri = f"{root}/source/{digest(data)}/sourcedir.tar.gz"
        bucket, key = _split_s3(uri)
        self._call(self._clients["s3"].put_object, Bucket=bucket, Key=key, Body=data)
        logger.info("uploaded %s (%d bytes) to %s", folder, len(data), uri)
        return uri

    def _call(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        return call_with_retry(fn, self._backoff, self._retry_attempts, sleep=self._sleep, **kwargs)

    # -- the TrialBackend contract ---------------------------------------------------------------
    def max_n_workers(self) -> int:
        """Far above AWS's default quotas of concurrent training jobs; the quota is the limit."""
        return 1000

    def now(self) -> float:
        return time.monotonic() - self._t0

    def start(self, trial: Trial) -> None:
        self._ensure_ready()
        run = self._trials.get(trial.trial_id)
        if run is not None and self._reattach(run, trial):
            return
        run = _TrialRun(trial.trial_id, dict(trial.config), copy_from=trial.checkpoint_from)
        self._trials[trial.trial_id] = run
        self._request_job(run)

    def resume(self, trial: Trial) -> None:
        self._ensure_ready()
        run = self._trials.setdefault(trial.trial_id, _TrialRun(trial.trial_id, {}))
        run.config = dict(trial.config)
        if self._reattach(run, trial):
            return
        self._request_job(run)

    def pause(self, trial_id: int) -> None:
        self._end(trial_id, "pause")

    def stop(self, trial_id: int) -> None:
        self._end(trial_id, "stop")

    def poll(self) -> list[TrialEvent]:
        polled = self._wait_for_interval()  # woken early: the AWS APIs are polled next time
        events, self._queued = self._queued, []
        if polled:
            for job in self._jobs.values():
                if job.stop_requested and not job.stop_sent and job.status not in FINAL_STATUSES:
                    self._send_stop(job)
            self._refresh_statuses()
            for job in list(self._jobs.values()):
                if not job.done:
                    events.extend(self._follow(job))
            for run in list(self._trials.values()):
                if run.pending:
                    self._launch(run)
            events.extend(self._queued)
            self._queued = []
        stamp = self.now()
        for event in events:
            event.time = stamp
        return events

    def close(self) -> None:
        """Stop every job still running (their checkpoints stay in S3), and wait up to
        `close_timeout` seconds for them to end, so their billed cost is recorded."""
        for run in self._trials.values():
            run.pending = False
        for job in self._jobs.values():
            if job.status not in FINAL_STATUSES and not job.stop_sent:
                job.stop_requested = True
                self._send_stop(job)
        deadline = time.monotonic() + self.close_timeout
        while any(not job.done for job in self._jobs.values()) and time.monotonic() < deadline:
            if not self._wait_for_interval():
                continue
            self._refresh_statuses()
            for job in list(self._jobs.values()):
                if not job.done and job.status in FINAL_STATUSES:
                    self._follow(job)
        left = sorted(job.name for job in self._jobs.values() if not job.done)
        if left:
            logger.warning("jobs still ending after %.0fs, their cost is not recorded: %s",
                           self.close_timeout, ", ".join(left))

    def state_dict(self) -> dict[str, Any]:
        return mask_values({
            "token": self._token,
            "experiment": self._experiment,
            "trials": {str(k): run.to_dict() for k, run in self._trials.items()},
            "jobs": {name: job.to_dict() for name, job in self._jobs.items()},
        })

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._token = state.get("token") or self._token
        self._experiment = self._experiment or state.get("experiment")
        self._trials = {int(k): _TrialRun.from_dict(v) for k, v in state.get("trials", {}).items()}
        self._jobs = {name: _Job.from_dict(v) for name, v in state.get("jobs", {}).items()}

    # -- costs -----------------------------------------------------------------------------------
    def trial_cost(self, trial_id: int) -> float | None:
        """Exact cost of the trial's ended jobs (USD), None without a price."""
        run = self._trials.get(trial_id)
        if run is None or self.hourly_price is None:
            return None
        return run.cost_done

    @property
    def total_cost(self) -> float | None:
        """Exact cost of all ended jobs so far (USD), None without a price."""
        if self.hourly_price is None:
            return None
        return sum(run.cost_done for run in self._trials.values())

    # -- starting jobs ---------------------------------------------------------------------------
    def _current_job(self, run: _TrialRun) -> _Job | None:
        return self._jobs[run.jobs[-1]] if run.jobs else None

    def _reattach(self, run: _TrialRun, trial: Trial) -> bool:
        """After a restart: continue following a job of the trial that is still running."""
        job = self._current_job(run)
        if job is None or job.status in FINAL_STATUSES or job.stop_requested:
            return False
        run.want = "run"
        run.config = dict(trial.config)
        job.parser = None
        logger.info("trial %s: following its running job %s again", run.trial_id, job.name)
        return True

    def _request_job(self, run: _TrialRun) -> None:
        run.want = "run"
        run.pending = True
        run.next_try = 0.0
        self._launch(run)

    def _launch(self, run: _TrialRun) -> None:
        if not run.pending or run.want != "run" or self.now() < run.next_try:
            return
        previous = self._current_job(run)
        if previous is not None and previous.status not in FINAL_STATUSES:
            return  # its final checkpoint is uploaded when it ends: wait for that
        if run.copy_from is not None and not self._copy_checkpoint(run, run.copy_from):
            return
        name = run.pending_name or job_name(self.job_prefix, self._token,
                                            run.trial_id, len(run.jobs))
        run.pending_name = name
        try:
            request = self.settings.request(name, self.experiment, run.trial_id, run.config,
                                            self._source_uri, self._secrets, self.region)
            self._clients["sagemaker"].create_training_job(**request)
        except (ClientError, BotoCoreError) as err:
            code = error_code(err)
            if code != "ResourceInUse":  # ResourceInUse: an earlier try went through
                if isinstance(err, BotoCoreError) or code in RETRY_CREATE_CODES:
                    hint = (f"; check the service quota '{self.settings.instance_type} for "
                            "training job usage'" if code == "ResourceLimitExceeded" else "")
                    self._retry_later(
                        run, f"{code or type(err).__name__}: {error_message(err)}{hint}")
                else:
                    self._fail_pending(run, f"CreateTrainingJob {name} failed ({code}): "
                                            f"{error_message(err)}")
                return
        except ValueError as err:
            self._fail_pending(run, str(err))
            return
        self._jobs[name] = _Job(name, run.trial_id, created_at=time.time(), tail=LogTail(name))
        run.jobs.append(name)
        run.pending, run.pending_name, run.create_failures = False, None, 0
        logger.info("trial %s: started training job %s", run.trial_id, name)
        self._write_trial_file(run)

    def _retry_later(self, run: _TrialRun, why: str) -> None:
        delay = self._backoff.delay(run.create_failures)
        run.create_failures += 1
        run.next_try = self.now() + delay
        logger.warning("trial %s: cannot create a job yet (%s); trying again in %.1fs",
                       run.trial_id, mask_text(why), delay)

    def _fail_pending(self, run: _TrialRun, reason: str) -> None:
        run.pending, run.pending_name, run.want = False, None, "done"
        self._queued.append(TrialEvent(EventKind.FAILED, run.trial_id, self.now(),
                                       reason=mask_text(reason)))

    def _copy_checkpoint(self, run: _TrialRun, source_id: int) -> bool:
        """Seed the trial's checkpoint prefix with a copy of trial `source_id`'s (PBT); False to
        wait (the source job is still writing its last checkpoint, or S3 throttles)."""
        source = self._trials.get(int(source_id))
        source_job = self._current_job(source) if source is not None else None
        if source_job is not None and source_job.stop_requested and \
                source_job.status not in FINAL_STATUSES:
            return False
        s3 = self._clients["s3"]
        bucket, src_prefix = _split_s3(self.settings.checkpoint_uri(self.experiment, source_id))
        _, dst_prefix = _split_s3(self.settings.checkpoint_uri(self.experiment, run.trial_id))
        try:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": src_prefix}
            copied = 0
            while True:
                page = self._call(s3.list_objects_v2, **kwargs)
                for obj in page.get("Contents", []):
                    key = dst_prefix + obj["Key"][len(src_prefix):]
                    source_key = {"Bucket": bucket, "Key": obj["Key"]}
                    if obj.get("Size", 0) > MAX_COPY_OBJECT_BYTES:  # multipart, by boto3
                        s3.copy(CopySource=source_key, Bucket=bucket, Key=key)
                    else:
                        self._call(s3.copy_object, Bucket=bucket, Key=key, CopySource=source_key)
                    copied += 1
                if not page.get("IsTruncated"):
                    break
                kwargs["ContinuationToken"] = page["NextContinuationToken"]
        except (ClientError, BotoCoreError) as err:
            if isinstance(err, ClientError) and error_code(err) not in THROTTLING_CODES:
                self._fail_pending(run, f"copying the checkpoint of trial {run.copy_from} "
                                        f"failed ({error_code(err)}): {error_message(err)}")
            else:
                self._retry_later(run, f"checkpoint copy: {error_message(err)}")
            return False
        logger.info("trial %s: copied %d checkpoint objects of trial %s", run.trial_id, copied,
                    run.copy_from)
        run.copy_from = None
        return True

    # -- stopping jobs ---------------------------------------------------------------------------
    def _end(self, trial_id: int, want: str) -> None:
        run = self._trials.get(trial_id)
        if run is None:
            return
        run.want = want
        run.pending, run.pending_name = False, None
        job = self._current_job(run)
        if job is not None and job.status not in FINAL_STATUSES and not job.stop_requested:
            job.stop_requested = True
            self._send_stop(job)

    def _send_stop(self, job: _Job) -> None:
        try:
            self._call(self._clients["sagemaker"].stop_training_job, TrainingJobName=job.name)
            job.stop_sent = True
        except (ClientError, BotoCoreError) as err:
            if error_code(err) == "ValidationException":  # it ended meanwhile
                job.stop_sent = True
                return
            logger.warning("stopping job %s failed (%s); trying again at the next poll",
                           job.name, error_message(err))

    # -- following jobs --------------------------------------------------------------------------
    def wake(self) -> None:
        self._woken.set()

    def _wait_for_interval(self) -> bool:
        """Wait out the poll interval; False when `wake()` cut the wait short."""
        if self._last_poll is not None:
            wait = self.poll_interval - (time.monotonic() - self._last_poll)
            if wait > 0 and self._woken.wait(wait):
                self._woken.clear()
                return False
        self._woken.clear()
        self._last_poll = time.monotonic()
        return True

    def _refresh_statuses(self) -> None:
        """One ListTrainingJobs (paginated) for all jobs; a describe for each changed job."""
        active = [j for j in self._jobs.values() if j.status not in FINAL_STATUSES]
        if not active:
            return
        sm = self._clients["sagemaker"]
        kwargs: dict[str, Any] = {
            "NameContains": f"{self.job_prefix}-",
            "CreationTimeAfter": min(j.created_at for j in active) - LIST_CREATION_MARGIN_S,
            "MaxResults": 100,
        }
        statuses: dict[str, str] = {}
        try:
            while True:
                page = self._call(sm.list_training_jobs, **kwargs)
                for summary in page["TrainingJobSummaries"]:
                    statuses[summary["TrainingJobName"]] = summary["TrainingJobStatus"]
                if not page.get("NextToken"):
                    break
                kwargs["NextToken"] = page["NextToken"]
        except (ClientError, BotoCoreError) as err:
            logger.warning("listing training jobs failed (%s); trying again at the next poll",
                           error_message(err))
            return
        for job in active:
            status = statuses.get(job.name)
            if status is None:
                job.missing += 1
                if job.missing < MISSING_POLLS_BEFORE_DESCRIBE:
                    continue  # listings lag behind creation
            elif status == job.status:
                job.missing = 0
                continue
            self._describe(job)

    def _describe(self, job: _Job) -> None:
        try:
            info = self._call(self._clients["sagemaker"].describe_training_job,
                              TrainingJobName=job.name)
        except (ClientError, BotoCoreError) as err:
            logger.warning("describing job %s failed (%s); trying again at the next poll",
                           job.name, error_message(err))
            return
        job.missing = 0
        job.status = info["TrainingJobStatus"]
        job.secondary_status = info.get("SecondaryStatus")
        reason = info.get("FailureReason")
        job.failure_reason = None if reason is None else mask_text(reason)
        start, end = info.get("TrainingStartTime"), info.get("TrainingEndTime")
        if start is not None:
            job.training_start = start.timestamp()
        billable = info.get("BillableTimeInSeconds")
        if billable is None:
            billable = info.get("TrainingTimeInSeconds")
        if billable is None and start is not None and end is not None:
            billable = (end - start).total_seconds()
        job.billable_seconds = None if billable is None else float(billable)

    def _follow(self, job: _Job) -> list[TrialEvent]:
        """Reports of a job since the last poll, and its end once it ended."""
        run = self._trials[job.trial_id]
        following = run.want == "run" and self._current_job(run) is job \
            and not job.stop_requested
        final = job.status in FINAL_STATUSES
        events: list[TrialEvent] = []
        if following:
            try:
                events = self._read_reports(job, run, final)
            except (ClientError, BotoCoreError) as err:
                logger.warning("reading the logs of %s failed (%s); trying again at the next poll",
                               job.name, error_message(err))
                return []
        if final:
            events.extend(self._finish(job, run, following, events))
        return events

    def _read_reports(self, job: _Job, run: _TrialRun, final: bool) -> list[TrialEvent]:
        if job.parser is None:
            job.parser = ReportParser(source=f"trial {job.trial_id} ({job.name})")
        lines: list[str] = []
        events: list[TrialEvent] = []
        for timestamp, message in self._logs.read(job.tail, final=final):
            if job.first_log_time is None:
                job.first_log_time = timestamp
            lines.append(mask_text(message))
            for metrics in job.parser.feed(message + "\n"):
                events.append(self._result(job, run, metrics, timestamp))
        if final:
            for metrics in job.parser.flush():
                events.append(self._result(job, run, metrics, None))
        if lines:
            self._append_output(job, lines)
        return events

    def _result(self, job: _Job, run: _TrialRun, metrics: dict[str, Any],
                timestamp: float | None) -> TrialEvent:
        metrics = mask_values(metrics)
        if self.hourly_price is not None and self.cost_attr not in metrics:
            start = job.training_start or job.first_log_time
            elapsed = (timestamp - start) if timestamp is not None and start is not None else 0.0
            metrics[self.cost_attr] = run.cost_done + job_cost(
                elapsed, self.settings.instance_count, self.hourly_price)
        return TrialEvent(EventKind.RESULT, job.trial_id, self.now(), metrics=metrics)

    def _finish(self, job: _Job, run: _TrialRun, following: bool,
                results: list[TrialEvent]) -> list[TrialEvent]:
        job.done = True
        if self.hourly_price is not None:
            job.cost = job_cost(job.billable_seconds or 0.0, self.settings.instance_count,
                                self.hourly_price)
            run.cost_done += job.cost
        self._write_trial_file(run)
        if not following:
            return []  # paused or stopped by the tuner: it expects no more events
        run.want = "done"
        if job.status == "Completed":
            final_metrics: dict[str, Any] = {}
            if self.hourly_price is not None:
                final_metrics[self.cost_attr] = run.cost_done
                if results and results[-1].metrics is not None \
                        and self.cost_attr in results[-1].metrics:
                    results[-1].metrics[self.cost_attr] = run.cost_done
            logger.info("trial %s: job %s completed", run.trial_id, job.name)
            return [TrialEvent(EventKind.COMPLETED, run.trial_id, self.now(),
                               metrics=final_metrics or None)]
        if job.status == "Failed":
            reason = f"training job {job.name} failed: {job.failure_reason or 'no reason given'}"
        else:
            reason = (f"training job {job.name} was stopped outside tunesmith "
                      f"({job.secondary_status or 'Stopped'})")
        return [TrialEvent(EventKind.FAILED, run.trial_id, self.now(),
                           reason=mask_text(reason))]

    # -- files -----------------------------------------------------------------------------------
    def _append_output(self, job: _Job, lines: list[str]) -> None:
        if self.trial_root is None:
            return
        with (self.trial_dir(job.trial_id) / "stdout").open("a") as f:
            f.writelines(line + "\n" for line in lines)

    def _write_trial_file(self, run: _TrialRun) -> None:
        """trials/<id>/sagemaker.json: the trial's jobs, statuses and costs (secrets masked)."""
        if self.trial_root is None:
            return
        record = {
            "trial_id": run.trial_id,
            "experiment": self.experiment,
            "checkpoint_uri": self.settings.checkpoint_uri(self.experiment, run.trial_id),
            "instance_type": self.settings.instance_type,
            "instance_count": self.settings.instance_count,
            "price_per_hour": self.hourly_price,
            "price_source": PRICING_SOURCE,
            "cost": run.cost_done if self.hourly_price is not None else None,
            "jobs": [
                {k: v for k, v in self._jobs[name].to_dict().items()
                 if k not in ("tail", "trial_id", "stop_sent")}
                for name in run.jobs
            ],
        }
        path = self.trial_dir(run.trial_id) / "sagemaker.json"
        atomic_write_text(path, json.dumps(mask_values(record), indent=1))


def _table_price(instance_type: str) -> float | None:
    price = price_per_hour(instance_type)
    if price is None:
        logger.warning("no price known for %s: trials report no cost (set price_per_hour)",
                       instance_type)
    return price


def _source_layout(entry_point: str | None, source_dir: str | None) -> tuple[Path | None, str | None]:
    """(the folder to upload, the entry point relative to it)."""
    if entry_point is None:
        if source_dir is not None:
            raise ValueError("backend_options.source_dir: needs an entry_point")
        return None, None
    if source_dir is None:
        path = Path(entry_point)
        folder, entry = path.parent, path.name
    else:
        folder, entry = Path(source_dir), entry_point
    if not folder.is_dir():
        raise ValueError(f"backend_options.source_dir: {str(folder)!r} is not a folder")
    if not (folder / entry).is_file():
        raise ValueError(f"backend_options.entry_point: {entry!r} is not a file in {str(folder)!r}")
    return folder, Path(entry).as_posix()


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key
