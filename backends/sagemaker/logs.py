"""Incremental reading of a training job's CloudWatch log streams.

SageMaker writes a job's output to the log group `/aws/sagemaker/TrainingJobs`, one stream per
host and start: `<job-name>/algo-1-<epoch seconds>` (a managed spot job that was interrupted
gets a new stream when it restarts). Reports come from the first host, `algo-1`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from backends.aws_retry import error_code

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
HOST = "algo-1"
REDISCOVER_EVERY = 10


@dataclass
class LogTail:
    """Where reading a job's streams got to: the next forward token of each stream."""

    job_name: str
    tokens: dict[str, str | None] = field(default_factory=dict)
    reads: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"job_name": self.job_name, "tokens": dict(self.tokens)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogTail:
        return cls(job_name=data["job_name"], tokens=dict(data.get("tokens", {})))


class LogReader:
    """Reads new log events of jobs with `get_log_events`, following `nextForwardToken`s.

    Args:
        client: a boto3 CloudWatch Logs client.
        call: how to call the client (the backend's retrying wrapper): call(fn, **kwargs).
        log_group: the log group of training jobs.
        max_pages: pages read per stream and call, so one chatty job cannot stall a poll.
    """

    def __init__(self, client: Any, call: Callable[..., Any], log_group: str = LOG_GROUP,
                 max_pages: int = 20):
        self.client = client
        self.call = call
        self.log_group = log_group
        self.max_pages = max_pages

    def read(self, tail: LogTail, final: bool = False) -> list[tuple[float, str]]:
        """New (timestamp in epoch seconds, message) pairs of the job, in stream order.

        `final` re-lists the streams first (a restarted spot job has a new one)."""
        if not tail.tokens or final or tail.reads % REDISCOVER_EVERY == 0:
            self._discover(tail)
        tail.reads += 1
        events: list[tuple[float, str]] = []
        for stream in list(tail.tokens):
            events.extend(self._read_stream(tail, stream))
        return events

    def _discover(self, tail: LogTail) -> None:
        kwargs: dict[str, Any] = {
            "logGroupName": self.log_group,
            "logStreamNamePrefix": f"{tail.job_name}/{HOST}-",
        }
        names: list[tuple[int, str]] = []
        while True:
            try:
                page = self.call(self.client.describe_log_streams, **kwargs)
            except ClientError as err:
                if error_code(err) == "ResourceNotFoundException":
                    return  # no job has logged yet in this account and region
                raise
            names.extend((s.get("creationTime", 0), s["logStreamName"]) for s in page["logStreams"])
            if not page.get("nextToken"):
                break
            kwargs["nextToken"] = page["nextToken"]
        for _, name in sorted(names):
            tail.tokens.setdefault(name, None)

    def _read_stream(self, tail: LogTail, stream: str) -> list[tuple[float, str]]:
        events: list[tuple[float, str]] = []
        for _ in range(self.max_pages):
            token = tail.tokens[stream]
            kwargs: dict[str, Any] = {
                "logGroupName": self.log_group,
                "logStreamName": stream,
                "startFromHead": True,
            }
            if token is not None:
                kwargs["nextToken"] = token
            page = self.call(self.client.get_log_events, **kwargs)
            events.extend((e["timestamp"] / 1000.0, e["message"]) for e in page["events"])
            next_token = page.get("nextForwardToken")
            if next_token is not None:
                tail.tokens[stream] = next_token
            if not page["events"] or next_token is None or next_token == token:
                break
        return events
