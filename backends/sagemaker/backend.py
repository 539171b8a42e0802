"""`SageMakerBackend`: the TrialBackend contract over SageMaker training jobs.

Its options become the jobs' settings (`jobs.JobSettings`), the AWS checks and the code upload
(`aws_setup`), and the pricing (`costs`); the jobs themselves are followed by
`follower.JobFollower`. This module paces the polls (`poll_interval`, `wake()`), keeps the
backend's state, and sums costs.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from backends.aws_retry import Backoff, call_with_retry
from backends.sagemaker.aws_setup import (
    SageMakerSetupError,
    check_setup,
    make_clients,
    source_layout,
    upload_source,
)
from backends.sagemaker.costs import Pricing
from backends.sagemaker.follower import JobFollower, JobLaunch
from backends.sagemaker.jobs import JobSettings, new_token, resolve_secrets
from backends.sagemaker.logs import LOG_GROUP, LogReader
from hpo_core.backend import TrialBackend, poll_interval_seconds
from hpo_core.secrets import is_reference, mask_values, remember
from hpo_core.trial import Trial, TrialEvent

logger = logging.getLogger(__name__)

#: seconds between the checks `close()` makes of the jobs it stopped
CLOSE_POLL_SECONDS = 2.0


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
        experiment: names jobs and S3 prefixes (default: the experiment's name, from the
            trial context the tuner hands over).
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
        if not isinstance(role, str) or not role:
            raise ValueError("backend_options.role: the SageMaker execution role is required")
        hyperparameters, environment, inputs, tags = (
            _mapping(value, name, references=name == "environment") for name, value in (
                ("hyperparameters", hyperparameters), ("environment", environment),
                ("inputs", inputs), ("tags", tags)))
        poll_interval, close_timeout = (poll_interval_seconds(poll_interval),
                                        _seconds(close_timeout, "close_timeout"))
        if price_per_hour is not None:
            price_per_hour = _seconds(price_per_hour, "price_per_hour")  # a number >= 0 too
        if not isinstance(cost_attr, str) or not cost_attr:
            raise ValueError(f"backend_options.cost_attr: must be a metric name, got {cost_attr!r}")
        secrets = resolve_secrets(secret_hyperparameters)
        remember(v for v in secrets.values() if isinstance(v, str))
        self._source_dir, entry_point = source_layout(entry_point, source_dir)
        self._bundle_reporter = bundle_reporter
        self._clients = make_clients(clients, boto_session, region, endpoint_url)
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
        self.poll_interval = poll_interval
        self.close_timeout = close_timeout
        self.pricing = Pricing.of(instance_type, instance_count, cost_attr, price_per_hour)
        self._experiment = experiment
        self._backoff = Backoff(retry_base_delay, retry_max_delay)
        self._retry_attempts = retry_attempts
        self._sleep = sleep
        self._woken: queue.SimpleQueue[None] = queue.SimpleQueue()  # wake() is reentrant
        self._t0 = time.monotonic()
        self._last_poll: float | None = None
        self._validated = False
        self._follower = JobFollower(
            sagemaker=self._clients["sagemaker"], s3=self._clients["s3"], call=self._call,
            logs=LogReader(self._clients["logs"], self._call, log_group),
            launch=JobLaunch(self.settings, new_token(), secrets, self.region),
            pricing=self.pricing, backoff=self._backoff, experiment=lambda: self.experiment,
            trial_dir=lambda tid: None if self.context is None else self.trial_dir(tid),
            now=self.now)
        if validate:
            self.validate()

    # -- setup ---------------------------------------------------------------------------------
    @classmethod
    def from_model_trainer(cls, trainer: Any, **options: Any) -> SageMakerBackend:
        """A backend with the settings of a `sagemaker` SDK v3 `ModelTrainer` (the optional
        `tunesmith[sagemaker]` extra); `options` override them."""
        from backends.sagemaker.sdk import options_from_model_trainer

        return cls(**{**options_from_model_trainer(trainer), **options})

    def validate(self) -> None:
        """Check credentials (STS), the role (IAM) and the bucket (S3) before any job starts."""
        arn = check_setup(self._clients, self._call, self._role_given, self.settings.bucket)
        if arn is not None:
            self.settings.role_arn = arn
        self._validated = True

    @property
    def experiment(self) -> str:
        """The experiment's name in job names and S3 keys: the `experiment` option, else the
        name in the trial context the tuner hands over."""
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
        return self._follower.job_prefix

    @property
    def hourly_price(self) -> float | None:
        """USD per instance-hour (None: unknown, no cost reported)."""
        return self.pricing.hourly_price

    @property
    def cost_attr(self) -> str:
        """The metric that carries a trial's cost."""
        return self.pricing.cost_attr

    def _ensure_ready(self) -> None:
        if not self._validated:
            self.validate()
        launch = self._follower.launch
        if self._source_dir is not None and launch.source_uri is None:  # with an entry point
            launch.source_uri = upload_source(self._clients["s3"], self._call, self._source_dir,
                                              self._bundle_reporter,
                                              self.settings.s3_root(self.experiment))

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
        self._follower.start(trial)

    def resume(self, trial: Trial) -> None:
        self._ensure_ready()
        self._follower.resume(trial)

    def pause(self, trial_id: int) -> None:
        self._follower.end(trial_id, "pause")

    def stop(self, trial_id: int) -> None:
        self._follower.end(trial_id, "stop")

    def poll(self) -> list[TrialEvent]:
        polled = self._wait_for_interval()  # woken early: the AWS APIs are polled next time
        events = self._follower.take_events()
        if polled:
            events += self._follower.poll()
        stamp = self.now()
        for event in events:
            event.time = stamp
        return events

    def wake(self) -> None:
        self._woken.put(None)

    def close(self) -> None:
        """Stop every job still running (their checkpoints stay in S3), and wait up to
        `close_timeout` seconds for them to end, so their billed cost is recorded."""
        self._follower.stop_all()
        jobs = self._follower.jobs
        deadline = time.monotonic() + self.close_timeout
        # every CLOSE_POLL_SECONDS at most, not `poll_interval` (a kill would wait it out)
        while any(not job.done for job in jobs.values()) and time.monotonic() < deadline:
            self._woke(min(self.poll_interval, CLOSE_POLL_SECONDS))
            self._follower.follow_ends()
        left = sorted(job.name for job in jobs.values() if not job.done)
        if left:
            logger.warning("jobs still ending after %.0fs, their cost is not recorded: %s",
                           self.close_timeout, ", ".join(left))

    def state_dict(self) -> dict[str, Any]:
        return mask_values({"token": self._follower.launch.token, "experiment": self._experiment,
                            **self._follower.state_dict()})

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        launch = self._follower.launch
        launch.token = state.get("token") or launch.token
        self._experiment = self._experiment or state.get("experiment")
        self._follower.load_state_dict(state)

    # -- costs -----------------------------------------------------------------------------------
    def trial_cost(self, trial_id: int) -> float | None:
        """Exact cost of the trial's ended jobs (USD), None without a price."""
        run = self._follower.trials.get(trial_id)
        if run is None or self.hourly_price is None:
            return None
        return run.cost_done

    @property
    def total_cost(self) -> float | None:
        """Exact cost of all ended jobs so far (USD), None without a price."""
        if self.hourly_price is None:
            return None
        return sum(run.cost_done for run in self._follower.trials.values())

    # -- pacing ----------------------------------------------------------------------------------
    def _wait_for_interval(self) -> bool:
        """Wait out the poll interval; False when `wake()` cut the wait short."""
        if self._last_poll is not None:
            wait = self.poll_interval - (time.monotonic() - self._last_poll)
            if wait > 0 and self._woke(wait):
                return False
        self._woke(0.0)
        self._last_poll = time.monotonic()
        return True

    def _woke(self, wait: float) -> bool:
        """Whether `wake()` was called (waiting up to `wait` seconds for it); forgets it."""
        try:
            self._woken.get(timeout=wait) if wait > 0 else self._woken.get_nowait()
        except queue.Empty:
            return False
        while not self._woken.empty():
            self._woken.get_nowait()
        return True


def _mapping(value: Any, name: str, references: bool) -> dict[str, Any]:
    """Option `name` as a dict (a mapping of names to values); a secret reference only where
    `references` (the environment: SageMaker shows hyperparameters and tags in its console)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"backend_options.{name}: must be a mapping of names to values, got "
                         f"{type(value).__name__}")
    for key, item in value.items():
        if is_reference(item) and not references:
            raise ValueError(f"backend_options.{name}.{key}: a secret reference is not allowed "
                             "here (SageMaker shows it in its console); put the name in "
                             "secret_hyperparameters or the reference in environment")
    return dict(value)


def _seconds(value: Any, name: str) -> float:
    """A number >= 0, else ValueError naming `backend_options.<name>`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"backend_options.{name}: must be a number >= 0, got {value!r}")
    return float(value)
