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

from backends.sagemaker.aws_setup import SageMakerSetupError
from backends.sagemaker.backend import SageMakerBackend
from backends.sagemaker.follower import FINAL_STATUSES

__all__ = ["FINAL_STATUSES", "SageMakerBackend", "SageMakerSetupError"]
