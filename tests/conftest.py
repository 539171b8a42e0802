"""Shared test setup: Prefect and MLflow kept out of the home folder and off the network.

Set before anything imports prefect: PREFECT_HOME in a temporary folder, no analytics, no
MLflow telemetry. `prefect_harness` is a session-scoped Prefect test server (~10 s to start),
for tests that run flows.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

_PREFECT_HOME = tempfile.mkdtemp(prefix="tunesmith-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_TO_API_BATCH_INTERVAL"] = "0.5"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("PREFECT_PROFILE", None)
os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect API for the whole session (flows run against it)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture
def prefect_console(capfd: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """capfd, with Prefect's console handlers writing to this test's stderr (they keep the
    stream they were created with, which may be an earlier test's closed capture)."""
    import logging
    import sys

    from prefect.logging.handlers import PrefectConsoleHandler

    handlers = {h for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
                if isinstance(logger, logging.Logger) for h in logger.handlers
                if isinstance(h, PrefectConsoleHandler)}
    for stream in (sys.stderr, sys.__stderr__):
        for handler in handlers:
            handler.stream = handler.console.file = stream
        if stream is sys.stderr:
            yield capfd


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    """The session's PREFECT_HOME goes with it."""
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)
