"""Tracking URIs: a SQLite path is read the same way everywhere (made absolute, its `?query`
kept apart), and an in-memory database or a server keeps its URI."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.mlflow_client import sqlite_database
from flows.tracking import default_artifact_location, resolve_tracking_uri


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path.resolve()


def test_a_relative_sqlite_path_is_made_absolute_and_keeps_its_query(cwd: Path) -> None:
    assert resolve_tracking_uri("sqlite:///runs/m.db?timeout=30") == \
        f"sqlite:///{cwd}/runs/m.db?timeout=30"
    assert sqlite_database("sqlite:///runs/m.db?timeout=30") == cwd / "runs" / "m.db"
    assert resolve_tracking_uri("sqlite:////data/m.db") == "sqlite:////data/m.db"


@pytest.mark.parametrize("uri", ["sqlite:///:memory:", "sqlite:///", "http://127.0.0.1:5000",
                                 "postgresql://u@h/db"])
def test_other_uris_are_left_as_they_are(uri: str, cwd: Path) -> None:
    assert resolve_tracking_uri(uri) == uri
    assert sqlite_database(uri) is None


def test_artifacts_go_next_to_the_database_else_to_the_working_directory(cwd: Path) -> None:
    assert default_artifact_location("sqlite:////data/m.db?timeout=30", "exp") == \
        "file:///data/mlartifacts/exp"
    assert default_artifact_location("sqlite:///:memory:", "exp") == \
        (cwd / "mlartifacts" / "exp").as_uri()
    assert default_artifact_location("postgresql://u@h/db", "exp") == \
        (cwd / "mlartifacts" / "exp").as_uri()
    assert default_artifact_location("http://127.0.0.1:5000", "exp") is None
