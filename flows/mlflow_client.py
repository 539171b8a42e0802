"""An `MlflowClient` whose SQLite database is ready: created by one process at a time.

MLflow creates and migrates a new SQLite database on its first use; two processes doing so at
once (two experiments started together in one folder, both on the default `mlflow.db`) collide
(`duplicate column name`, `table already exists`), and the loser's MLflow would be switched off.
`open_client` makes that first use under an exclusive `flock` on the database's folder (nothing
is written there; another process only waits while one creates or migrates the database).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

SQLITE = "sqlite:///"


def open_client(tracking_uri: str) -> Any:
    """`MlflowClient(tracking_uri)`, its store opened (a SQLite one created or migrated under a
    lock on its folder)."""
    from mlflow import MlflowClient

    folder = _sqlite_folder(tracking_uri)
    try:
        fd = os.open(folder, os.O_RDONLY) if folder is not None else None
    except OSError:  # an unreadable folder: MLflow will say what is wrong with it
        fd = None
    if fd is None:
        return MlflowClient(tracking_uri)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without directory locks (NFS emulates flock): go on
            pass
        client = MlflowClient(tracking_uri)
        client.search_experiments(max_results=1)  # opens the store: creates or migrates it
    finally:
        os.close(fd)  # releases the lock
    return client


def sqlite_database(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI, as an absolute path (a relative one
    is taken from the working directory; a `?query` is not part of it); None for another
    scheme or an in-memory database."""
    if not tracking_uri.startswith(SQLITE):
        return None
    path = tracking_uri[len(SQLITE):].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path) if path.startswith("/") else Path(path).resolve()


def _sqlite_folder(tracking_uri: str) -> Path | None:
    """The folder of a SQLite database file, if it exists (None: not SQLite, or in memory)."""
    database = sqlite_database(tracking_uri)
    return database.parent if database is not None and database.parent.is_dir() else None
