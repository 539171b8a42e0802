"""The job state machine: what the tuner wants of each trial (run, pause, stop), its training
jobs as last seen, and the calls that bring the two together.

A trial that should run and has no live job gets one created (`CreateTrainingJob`, with a name
kept across retries so a retried create is idempotent; throttling and capacity errors retry it
on a later poll with backoff, after a PBT checkpoint copy when asked). Each poll lists the
experiment's jobs once (`ListTrainingJobs` on the name prefix, paginated), describes those
whose status changed, reads the reports of the jobs being followed from their logs, and turns
a job's end into the trial's completion or failure. A paused or stopped trial's job gets
`StopTrainingJob` (sent again at the next poll if it failed) and is followed only until it
ended, for its cost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from backends.aws_retry import THROTTLING_CODES, Backoff, error_code, error_message
from backends.sagemaker import trial_files
from backends.sagemaker.checkpoints import copy_prefix
from backends.sagemaker.costs import Pricing
from backends.sagemaker.jobs import JobSettings, job_name, name_prefix
from backends.sagemaker.logs import LogReader, LogTail
from hpo_core.report import ReportParser
from hpo_core.secrets import mask_text, mask_values
from hpo_core.trial import EventKind, Trial, TrialEvent

logger = logging.getLogger(__name__)

FINAL_STATUSES = frozenset({"Completed", "Failed", "Stopped"})
#: CreateTrainingJob errors that mean "not now": the job is created on a later poll.
RETRY_CREATE_CODES = THROTTLING_CODES | {"ResourceLimitExceeded", "CapacityError",
                                         "InsufficientCapacityError", "InternalFailure",
                                         "ServiceUnavailable"}
LIST_CREATION_MARGIN_S = 600.0
MISSING_POLLS_BEFORE_DESCRIBE = 3


@dataclass
class Job:
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
    # followed again after a restart: stopped meanwhile (the earlier session stopped it as it
    # ended, after its last snapshot), the trial goes on in a new job from its checkpoint
    reattached: bool = False
    tail: LogTail = field(default_factory=lambda: LogTail(""))
    parser: ReportParser | None = None

    def to_dict(self) -> dict[str, Any]:
        keys = ("name", "trial_id", "created_at", "status", "secondary_status", "failure_reason",
                "billable_seconds", "training_start", "first_log_time", "cost", "stop_requested",
                "stop_sent", "done")
        return {**{k: getattr(self, k) for k in keys}, "tail": self.tail.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        job = cls(**{k: v for k, v in data.items() if k != "tail"})
        job.tail = LogTail.from_dict(data["tail"])
        return job


@dataclass
class TrialJobs:
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
    def from_dict(cls, data: Mapping[str, Any]) -> TrialJobs:
        return cls(config={}, **dict(data))


@dataclass
class JobLaunch:
    """What every job of the experiment is created with, besides its trial's config."""

    settings: JobSettings
    token: str  # keeps job names of different sessions apart
    secrets: dict[str, Any]
    region: str | None
    source_uri: str | None = None  # the uploaded training code, once uploaded


class JobFollower:
    """The jobs of one experiment's trials (see the module docstring).

    Args:
        sagemaker, s3: boto3 clients.
        call: how to call them (the backend's retrying wrapper): call(fn, **kwargs).
        logs: reads the jobs' CloudWatch logs.
        launch: what jobs are created with.
        pricing: how their cost is reckoned.
        backoff: delays between tries to create a job.
        experiment: the experiment's name, asked for when first needed.
        trial_dir: a trial's folder, or None when the backend has none (no files written).
        now: the backend's clock.
    """

    def __init__(self, *, sagemaker: Any, s3: Any, call: Callable[..., Any], logs: LogReader,
                 launch: JobLaunch, pricing: Pricing, backoff: Backoff,
                 experiment: Callable[[], str], trial_dir: Callable[[int], Path | None],
                 now: Callable[[], float]):
        self._sagemaker = sagemaker
        self._s3 = s3
        self._call = call
        self._logs = logs
        self.launch = launch
        self.pricing = pricing
        self._backoff = backoff
        self._experiment = experiment
        self._trial_dir = trial_dir
        self._now = now
        self.jobs: dict[str, Job] = {}
        self.trials: dict[int, TrialJobs] = {}
        self._queued: list[TrialEvent] = []

    # -- what the tuner wants ------------------------------------------------------------------
    def start(self, trial: Trial) -> None:
        run = self.trials.get(trial.trial_id)
        if run is not None and self._reattach(run, trial):
            return
        run = TrialJobs(trial.trial_id, dict(trial.config), copy_from=trial.checkpoint_from)
        self.trials[trial.trial_id] = run
        self._request_job(run)

    def resume(self, trial: Trial) -> None:
        run = self.trials.setdefault(trial.trial_id, TrialJobs(trial.trial_id, {}))
        run.config = dict(trial.config)
        if self._reattach(run, trial):
            return
        self._request_job(run)

    def end(self, trial_id: int, want: str) -> None:
        """Pause or stop the trial (`want`): no new job, and its running job is stopped."""
        run = self.trials.get(trial_id)
        if run is None:
            return
        run.want = want
        run.pending, run.pending_name = False, None
        job = self._current_job(run)
        if job is not None and job.status not in FINAL_STATUSES and not job.stop_requested:
            job.stop_requested = True
            self._send_stop(job)

    def take_events(self) -> list[TrialEvent]:
        """Events raised between polls (failed job creations)."""
        events, self._queued = self._queued, []
        return events

    def poll(self) -> list[TrialEvent]:
        """One round of AWS calls: stops not sent yet, statuses, reports and ends of jobs,
        jobs to create; the events they bring."""
        events: list[TrialEvent] = []
        for job in self.jobs.values():
            if job.stop_requested and not job.stop_sent and job.status not in FINAL_STATUSES:
                self._send_stop(job)
        self._refresh_statuses()
        for job in list(self.jobs.values()):
            if not job.done:
                events.extend(self._follow(job))
        for run in list(self.trials.values()):
            if run.pending:
                self._launch(run)
        return events + self.take_events()

    def stop_all(self) -> None:
        """No more jobs; stop every job still running (their checkpoints stay in S3)."""
        for run in self.trials.values():
            run.pending = False
        for job in self.jobs.values():
            if job.status not in FINAL_STATUSES and not job.stop_sent:
                job.stop_requested = True
                self._send_stop(job)

    def follow_ends(self) -> None:
        """Account for the jobs that ended (their cost), without reading their reports."""
        self._refresh_statuses()
        for job in list(self.jobs.values()):
            if not job.done and job.status in FINAL_STATUSES:
                self._follow(job)

    def state_dict(self) -> dict[str, Any]:
        return {"trials": {str(k): run.to_dict() for k, run in self.trials.items()},
                "jobs": {name: job.to_dict() for name, job in self.jobs.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.trials = {int(k): TrialJobs.from_dict(v) for k, v in state.get("trials", {}).items()}
        self.jobs = {name: Job.from_dict(v) for name, v in state.get("jobs", {}).items()}

    @property
    def job_prefix(self) -> str:
        """The start of this experiment's job names (what ListTrainingJobs filters on)."""
        return name_prefix(self._experiment())

    # -- starting jobs ---------------------------------------------------------------------------
    def _current_job(self, run: TrialJobs) -> Job | None:
        return self.jobs[run.jobs[-1]] if run.jobs else None

    def _reattach(self, run: TrialJobs, trial: Trial) -> bool:
        """After a restart: continue following a job of the trial that is still running."""
        job = self._current_job(run)
        if job is None or job.status in FINAL_STATUSES or job.stop_requested:
            return False
        run.want = "run"
        run.config = dict(trial.config)
        job.parser = None
        job.reattached = True
        logger.info("trial %s: following its running job %s again", run.trial_id, job.name)
        return True

    def _request_job(self, run: TrialJobs) -> None:
        run.want = "run"
        run.pending = True
        run.next_try = 0.0
        self._launch(run)

    def _launch(self, run: TrialJobs) -> None:
        if not run.pending or run.want != "run" or self._now() < run.next_try:
            return
        previous = self._current_job(run)
        if previous is not None and previous.status not in FINAL_STATUSES:
            return  # its final checkpoint is uploaded when it ends: wait for that
        if run.copy_from is not None and not self._copy_checkpoint(run, run.copy_from):
            return
        launch = self.launch
        name = run.pending_name or job_name(self.job_prefix, launch.token,
                                            run.trial_id, len(run.jobs))
        run.pending_name = name
        adopted = False  # the job exists already: an earlier try, or a session that ended
        try:
            request = launch.settings.request(name, self._experiment(), run.trial_id, run.config,
                                              launch.source_uri, launch.secrets, launch.region)
            self._sagemaker.create_training_job(**request)
        except (ClientError, BotoCoreError) as err:
            code = error_code(err)
            adopted = code == "ResourceInUse"
            if not adopted:
                if isinstance(err, BotoCoreError) or code in RETRY_CREATE_CODES:
                    hint = (f"; check the service quota '{launch.settings.instance_type} for "
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
        # an adopted job found stopped was stopped as its session ended (a kill while this
        # trial launched, before a snapshot had it): it goes on in a new job, as a reattached one
        self.jobs[name] = Job(name, run.trial_id, created_at=time.time(), tail=LogTail(name),
                              reattached=adopted)
        run.jobs.append(name)
        run.pending, run.pending_name, run.create_failures = False, None, 0
        logger.info("trial %s: started training job %s", run.trial_id, name)
        self._write_trial_file(run)

    def _retry_later(self, run: TrialJobs, why: str) -> None:
        delay = self._backoff.delay(run.create_failures)
        run.create_failures += 1
        run.next_try = self._now() + delay
        logger.warning("trial %s: cannot create a job yet (%s); trying again in %.1fs",
                       run.trial_id, mask_text(why), delay)

    def _fail_pending(self, run: TrialJobs, reason: str) -> None:
        run.pending, run.pending_name, run.want = False, None, "done"
        self._queued.append(TrialEvent(EventKind.FAILED, run.trial_id, self._now(),
                                       reason=mask_text(reason)))

    def _copy_checkpoint(self, run: TrialJobs, source_id: int) -> bool:
        """Seed the trial's checkpoint prefix with a copy of trial `source_id`'s (PBT); False to
        wait (the source job is still writing its last checkpoint, or S3 throttles)."""
        source = self.trials.get(int(source_id))
        source_job = self._current_job(source) if source is not None else None
        if source_job is not None and source_job.stop_requested and \
                source_job.status not in FINAL_STATUSES:
            return False
        settings, experiment = self.launch.settings, self._experiment()
        try:
            copied = copy_prefix(self._s3, self._call,
                                 settings.checkpoint_uri(experiment, source_id),
                                 settings.checkpoint_uri(experiment, run.trial_id))
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

    def _send_stop(self, job: Job) -> None:
        try:
            self._call(self._sagemaker.stop_training_job, TrainingJobName=job.name)
            job.stop_sent = True
        except (ClientError, BotoCoreError) as err:
            if error_code(err) == "ValidationException":  # it ended meanwhile
                job.stop_sent = True
                return
            logger.warning("stopping job %s failed (%s); trying again at the next poll",
                           job.name, error_message(err))

    # -- following jobs --------------------------------------------------------------------------
    def _refresh_statuses(self) -> None:
        """One ListTrainingJobs (paginated) for all jobs; a describe for each changed job."""
        active = [j for j in self.jobs.values() if j.status not in FINAL_STATUSES]
        if not active:
            return
        kwargs: dict[str, Any] = {
            "NameContains": f"{self.job_prefix}-",
            "CreationTimeAfter": min(j.created_at for j in active) - LIST_CREATION_MARGIN_S,
            "MaxResults": 100,
        }
        statuses: dict[str, str] = {}
        try:
            while True:
                page = self._call(self._sagemaker.list_training_jobs, **kwargs)
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

    def _describe(self, job: Job) -> None:
        try:
            info = self._call(self._sagemaker.describe_training_job, TrainingJobName=job.name)
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

    def _follow(self, job: Job) -> list[TrialEvent]:
        """Reports of a job since the last poll, and its end once it ended."""
        run = self.trials[job.trial_id]
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

    def _read_reports(self, job: Job, run: TrialJobs, final: bool) -> list[TrialEvent]:
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
        folder = self._trial_dir(job.trial_id)
        if lines and folder is not None:
            trial_files.append_output(folder, lines)
        return events

    def _result(self, job: Job, run: TrialJobs, metrics: dict[str, Any],
                timestamp: float | None) -> TrialEvent:
        metrics = mask_values(metrics)
        self.pricing.add_estimate(metrics, run.cost_done, job.training_start or job.first_log_time,
                                  timestamp)
        return TrialEvent(EventKind.RESULT, job.trial_id, self._now(), metrics=metrics)

    def _finish(self, job: Job, run: TrialJobs, following: bool,
                results: list[TrialEvent]) -> list[TrialEvent]:
        job.done = True
        job.cost = self.pricing.job(job.billable_seconds)
        if job.cost is not None:
            run.cost_done += job.cost
        self._write_trial_file(run)
        if not following:
            return []  # paused or stopped by the tuner: it expects no more events
        run.want = "done"
        if job.status == "Completed":
            final_metrics: dict[str, Any] = {}
            cost_attr = self.pricing.cost_attr
            if self.pricing.hourly_price is not None:
                final_metrics[cost_attr] = run.cost_done
                if results and results[-1].metrics is not None \
                        and cost_attr in results[-1].metrics:
                    results[-1].metrics[cost_attr] = run.cost_done
            logger.info("trial %s: job %s completed", run.trial_id, job.name)
            return [TrialEvent(EventKind.COMPLETED, run.trial_id, self._now(),
                               metrics=final_metrics or None)]
        if job.status == "Stopped" and job.reattached:  # stopped by the session that ended
            logger.info("trial %s: job %s was stopped as the last session ended; it goes on "
                        "in a new job from its checkpoint", run.trial_id, job.name)
            self._request_job(run)
            return []
        if job.status == "Failed":
            reason = f"training job {job.name} failed: {job.failure_reason or 'no reason given'}"
        else:
            reason = (f"training job {job.name} was stopped outside tunesmith "
                      f"({job.secondary_status or 'Stopped'})")
        return [TrialEvent(EventKind.FAILED, run.trial_id, self._now(),
                           reason=mask_text(reason))]

    def _write_trial_file(self, run: TrialJobs) -> None:
        """trials/<id>/sagemaker.json: the trial's jobs, statuses and costs (secrets masked)."""
        folder = self._trial_dir(run.trial_id)
        if folder is None:
            return
        jobs = [self.jobs[name].to_dict() for name in run.jobs]
        trial_files.write_record(folder, run.trial_id, self._experiment(), self.launch.settings,
                                 self.pricing, run.cost_done, jobs)
