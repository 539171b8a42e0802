"""What a user sees when an experiment cannot run, or ends without a result.

`user_error(err)` is the one line (`error: ...`, exit code 2) for everything a user can get
wrong or fix: a spec field, YAML/JSON syntax, a path, an option the backend or the scheduler
refuses, too many failed trials, a full disk. Any other exception is a bug or an
infrastructure error and keeps its traceback. `check_outcome` turns an experiment whose every
trial failed into `AllTrialsFailed`: failures are results, but not a success.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from typing import Any

from hpo_core.backend import BackendLostError
from hpo_core.secrets import one_line
from hpo_core.store import ExperimentLockedError
from hpo_core.tuner import TooManyFailuresError, Tuner

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class AllTrialsFailed(RuntimeError):
    """Every trial of the experiment failed: nothing to report as its best."""


def user_error(err: BaseException) -> str | None:
    """The one-line message for an error the user can act on; None for anything else."""
    if isinstance(err, OSError) and err.errno in DISK_FULL:
        where = f" writing {err.filename}" if err.filename else ""
        return (f"no space left on the device{where}; free some space and run the experiment "
                "again (it resumes from its store)")
    if isinstance(err, ValueError | TooManyFailuresError | AllTrialsFailed | FileNotFoundError
                  | ExperimentLockedError | BackendLostError):
        return one_line(str(err)) or type(err).__name__
    return None


def check_outcome(outcome: Mapping[str, Any]) -> None:
    """Raise AllTrialsFailed when trials ran and every one of them failed."""
    counts = outcome.get("counts") or {}
    failed, trials = counts.get("failed", 0), counts.get("trials", 0)
    if trials and failed == trials:
        last = outcome.get("last_failure")
        raise AllTrialsFailed(f"all {trials} trials of {outcome.get('experiment')} failed"
                              + (f"; last failure: {one_line(last)}" if last else ""))


def check_trials(tuner: Tuner, name: str) -> None:
    """`check_outcome` for a tuner that ran bare (no flow): AllTrialsFailed if every trial
    failed."""
    failed = [t for t in tuner.trials.values() if t.failure_reason]
    check_outcome({"experiment": name, "counts": {
        "trials": len(tuner.trials), "failed": tuner.status.num_trials_failed},
        "last_failure": f"trial {failed[-1].trial_id}: {failed[-1].failure_reason}"
        if failed else None})
