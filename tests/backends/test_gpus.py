"""GPU detection and rotation, with a fake nvidia-smi on PATH (this machine has no GPU)."""

from __future__ import annotations

import os
import sys

import pytest
from trial_helpers import FOUR_GPUS, collect, ended, fake_nvidia_smi, write

from backends.gpus import GpuInfo, GpuRotation, detect_gpus, parse_nvidia_smi
from backends.local import LocalBackend
from hpo_core.trial import EventKind, Trial

SCRIPT = """\
import os, time
from hpo_core.report import report
report(cuda=os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
time.sleep(0.5)  # hold the GPUs while the other trials start
"""


@pytest.fixture
def nvidia_smi(tmp_path, monkeypatch):
    """An `nvidia-smi` on PATH that lists four GPUs (and records its arguments)."""
    return fake_nvidia_smi(tmp_path / "bin", monkeypatch)


@pytest.fixture
def no_gpus(tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no nvidia-smi; trials use sys.executable by path
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_parse_nvidia_smi_tolerates_missing_values():
    gpus = parse_nvidia_smi(FOUR_GPUS + "garbage line\n")
    assert [g.index for g in gpus] == ["0", "1", "2", "3"]
    assert gpus[0] == GpuInfo("0", 1200.0, 35.0)
    assert gpus[3].utilization == 0.0


def test_detect_gpus_runs_the_query(nvidia_smi):
    assert [g.index for g in detect_gpus()] == ["0", "1", "2", "3"]
    args = (nvidia_smi / "args").read_text()
    assert "--query-gpu=index,memory.used,utilization.gpu" in args
    assert "--format=csv,noheader,nounits" in args


def test_detect_gpus_without_nvidia_smi(no_gpus):
    assert detect_gpus() == []


def test_rotation_picks_the_least_busy_gpus():
    rotation = GpuRotation(parse_nvidia_smi(FOUR_GPUS), refresh_every=None)
    # all idle for us: lowest utilization first (1 and 3 at 0 %), then least memory (1)
    assert [rotation.acquire(k) for k in "abcd"] == [["1"], ["3"], ["2"], ["0"]]
    rotation.release("c")
    assert rotation.acquire("e") == ["2"]  # the only GPU with no trial
    assert rotation.load() == {"0": 1, "1": 1, "2": 1, "3": 1}
    assert rotation.acquire("f") == ["1"]  # shared now: fewest trials, then least busy


def test_rotation_with_two_gpus_per_trial():
    rotation = GpuRotation([0, 1, 2, 3], gpus_per_trial=2, refresh_every=None)
    assert rotation.num_slots == 2
    assert rotation.acquire(1) == ["0", "1"]
    assert rotation.acquire(2) == ["2", "3"]
    with pytest.raises(ValueError, match="gpus_per_trial"):
        GpuRotation([0], gpus_per_trial=2)
    with pytest.raises(ValueError, match="more than once"):
        GpuRotation([0, 0])


def _run_trials(backend, n, tmp_path):
    backend.set_trial_root(tmp_path / "trials")
    for i in range(n):
        backend.start(Trial(i, {}))
    events = collect(backend, ended(*range(n)))
    backend.close()
    assert [e.reason for e in events if e.kind == EventKind.FAILED] == []
    return {e.trial_id: e.metrics["cuda"] for e in events if e.kind == EventKind.RESULT}


def test_trials_get_their_own_gpus_from_nvidia_smi(nvidia_smi, tmp_path):
    script = write(tmp_path, "cuda.py", SCRIPT)
    backend = LocalBackend(str(script), gpus="auto")
    assert backend.default_n_workers() == 4
    seen = _run_trials(backend, 4, tmp_path)
    assert sorted(seen.values()) == ["0", "1", "2", "3"]
    assert backend.rotation.load() == {"0": 0, "1": 0, "2": 0, "3": 0}  # released at the end

    backend = LocalBackend(str(script), gpus="auto", gpus_per_trial=2)
    assert backend.default_n_workers() == 2
    seen = _run_trials(backend, 2, tmp_path / "pairs")
    assert sorted(seen.values()) == ["0,2", "1,3"]


def test_explicit_gpu_list_and_hidden_gpus(no_gpus, tmp_path):
    script = write(tmp_path, "cuda.py", SCRIPT)
    backend = LocalBackend([sys.executable, str(script)], gpus=[0, 2, 3])
    assert backend.default_n_workers() == 3
    assert sorted(_run_trials(backend, 3, tmp_path / "list").values()) == ["0", "2", "3"]
    backend = LocalBackend(str(script), gpus=[])
    assert _run_trials(backend, 1, tmp_path / "hidden") == {0: ""}
    with pytest.raises(ValueError, match="backend_options.gpus_per_trial"):
        LocalBackend(str(script), gpus="0,1", gpus_per_trial=3)
    for not_ids in ("all", [0, "cuda:1"], [-1], [True]):  # "all" hid every GPU, silently
        with pytest.raises(ValueError, match="backend_options.gpus: must be 'auto', a list"):
            LocalBackend(str(script), gpus=not_ids)
    uuid = "GPU-8f2e4c1a-7d3b-4e6f-9a1c-2b3d4e5f6a7b"
    assert LocalBackend(str(script), gpus=f"1,{uuid}").rotation is not None


def test_cpu_only_machine_leaves_cuda_alone(no_gpus, tmp_path):
    script = write(tmp_path, "cuda.py", SCRIPT)
    backend = LocalBackend(str(script))  # gpus="auto", nothing found
    assert backend.rotation is None
    assert backend.default_n_workers() == len(os.sched_getaffinity(0))
    assert _run_trials(backend, 2, tmp_path) == {0: "<unset>", 1: "<unset>"}
