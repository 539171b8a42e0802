"""Fixtures shared by the backend tests: one real Dask cluster on 127.0.0.1 per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A `dask scheduler` and two `dask worker` processes: w1 with 2 GPUs (a fake nvidia-smi
    listing 0 and 1), w2 with 1, two threads each. Stopped at the end of the session."""
    pytest.importorskip("distributed")
    from dask_cluster import start_cluster

    cluster = start_cluster(Path(tmp_path_factory.mktemp("dask")), {"w1": 2, "w2": 1})
    yield cluster
    cluster.stop()
