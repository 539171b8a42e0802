"""Retrying AWS calls: exponential backoff with full jitter on throttling errors."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from botocore.exceptions import ClientError

T = TypeVar("T")

#: Error codes AWS services use for "slow down".
THROTTLING_CODES = frozenset({
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
    "ProvisionedThroughputExceededException",
})


def error_code(err: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for other exceptions)."""
    if isinstance(err, ClientError):
        return str(err.response.get("Error", {}).get("Code", ""))
    return ""


def error_message(err: BaseException) -> str:
    if isinstance(err, ClientError):
        return str(err.response.get("Error", {}).get("Message", "")) or str(err)
    return str(err)


def is_throttling(err: BaseException) -> bool:
    return error_code(err) in THROTTLING_CODES


class Backoff:
    """Delays for retry `attempt` (0, 1, ...): uniform in [0, min(cap, base * 2**attempt)].

    Full jitter spreads the retries of many callers hit by the same throttling burst.
    """

    def __init__(self, base: float = 1.0, cap: float = 60.0, seed: int | None = None):
        if base < 0 or cap < 0:
            raise ValueError(f"backoff: base and cap must be >= 0, got {base}, {cap}")
        self.base = base
        self.cap = cap
        self._rng = random.Random(seed)

    def delay(self, attempt: int) -> float:
        return self._rng.uniform(0.0, min(self.cap, self.base * 2.0 ** max(0, attempt)))


def call_with_retry(
    fn: Callable[..., T],
    backoff: Backoff,
    attempts: int = 6,
    retry_codes: Collection[str] = THROTTLING_CODES,
    sleep: Callable[[float], Any] = time.sleep,
    **kwargs: Any,
) -> T:
    """`fn(**kwargs)`, retried up to `attempts` times in all on errors whose code is in
    `retry_codes`; the last error, or any other, is raised."""
    attempt = 0
    while True:
        try:
            return fn(**kwargs)
        except ClientError as err:
            attempt += 1
            if error_code(err) not in retry_codes or attempt >= attempts:
                raise
            sleep(backoff.delay(attempt - 1))
