"""Prefect for a benchmark that runs flows in its own process, set up so that the benchmark's
`key=value` figure stays the last line it prints.

Left alone, Prefect starts a temporary server at the first flow run and stops it from an
`atexit` hook that logs "Stopping temporary server on ..." after everything the benchmark
printed. Here the process gets the server `tunesmith run` uses (`flows._prefect_server`):
started up front, ended without a word at exit, after Prefect has flushed its logs; the
temporary PREFECT_HOME is removed after it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile


def prefect_for_flows(prefix: str = "tunesmith-benchmark") -> None:
    """Call before anything imports prefect (PREFECT_HOME is read at import)."""
    home = tempfile.mkdtemp(prefix=f"{prefix}-prefect-")
    os.environ.setdefault("PREFECT_HOME", home)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # atexit runs its hooks last in, first out: this one after the server's end
    atexit.register(shutil.rmtree, home, True)
    from flows._prefect_server import start_prefect_server

    start_prefect_server()
