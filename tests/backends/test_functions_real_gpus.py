"""Function trials on real NVIDIA GPUs: skipped unless nvidia-smi lists one and torch is there.

CI has no GPU. Self-contained: no Prefect, MLflow or store, only the function backend, so it
runs from a plain checkout with the machine's python3 and torch:

    PYTHONPATH=$PWD python3 -m pytest tests/backends/test_functions_real_gpus.py -v -s

Each trial is a Python function run in a worker process. It allocates memory on the device its
worker was given, waits until nvidia-smi lists the trials meant to be on that GPU, and reports
what it saw: CUDA_VISIBLE_DEVICES when its module was imported and now, torch's device count,
name and UUID, the memory it holds, and the compute processes on its GPU.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time

import pytest

from backends.functions import FunctionBackend
from backends.gpus import detect_gpus
from hpo_core.trial import EventKind, Trial

GPUS = detect_gpus()
pytestmark = pytest.mark.skipif(
    not GPUS or importlib.util.find_spec("torch") is None,
    reason="needs an NVIDIA GPU (nvidia-smi) and torch",
)

PROBE = """\
import os, subprocess, time
import torch
from hpo_core.report import report

IMPORTED_WITH = os.environ.get("CUDA_VISIBLE_DEVICES")


def compute_apps():
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,gpu_uuid,used_memory",
                          "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=True).stdout
    return [line.split(", ") for line in out.strip().splitlines()]


def probe(config):
    block = torch.ones(int(config["mib"]) * 2**20, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    props = torch.cuda.get_device_properties(0)
    uuid = "GPU-" + str(props.uuid)
    deadline = time.time() + 120
    while True:  # until the trials meant to share this GPU are all on it (or the deadline)
        apps = compute_apps()
        if sum(a[1] == uuid for a in apps) >= config["together"] or time.time() > deadline:
            break
        time.sleep(0.2)
    report(epoch=1, loss=config["x"], pid=os.getpid(), imported_with=IMPORTED_WITH,
           visible=os.environ.get("CUDA_VISIBLE_DEVICES"),
           device_count=torch.cuda.device_count(), name=torch.cuda.get_device_name(0),
           uuid=uuid, allocated_mib=torch.cuda.memory_allocated() / 2**20,
           checksum=int(block.sum().item()), apps=apps)
    time.sleep(config["hold"])  # hold the memory while the other trials look
"""


def gpu_uuids() -> dict[str, str]:
    """nvidia-smi's index -> UUID."""
    out = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split(", ") for line in out.strip().splitlines())


def run_trials(backend: FunctionBackend, configs: list[dict], timeout: float = 300.0):
    """Start the trials at once; each one's report (after all ended)."""
    for tid, config in enumerate(configs):
        backend.start(Trial(tid, config))
    reports, ended = {}, set()
    deadline = time.monotonic() + timeout
    while len(ended) < len(configs):
        assert time.monotonic() < deadline, f"timed out; reports so far: {reports}"
        for event in backend.poll():
            if event.kind == EventKind.RESULT:
                reports[event.trial_id] = event.metrics
            elif event.kind == EventKind.FAILED:
                pytest.fail(f"trial {event.trial_id} failed: {event.reason}")
            else:
                ended.add(event.trial_id)
    for tid, probe in sorted(reports.items()):
        print("GPU-PROBE", tid, json.dumps({k: v for k, v in probe.items() if k != "apps"}))
    return reports


def check_probe(probe: dict, mib: int) -> None:
    assert probe["imported_with"] == probe["visible"]  # pinned before the module was imported
    assert probe["device_count"] == 1
    assert probe["allocated_mib"] >= mib and probe["checksum"] == mib * 2**20
    assert probe["uuid"] == gpu_uuids()[probe["visible"]]


@pytest.fixture
def make(tmp_path):
    module = tmp_path / "gpu_probe.py"
    module.write_text(PROBE)
    made = []

    def factory(**options) -> FunctionBackend:
        backend = FunctionBackend(f"{module}:probe", poll_interval=0.05, **options)
        backend.set_trial_root(tmp_path / "trials")
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        backend.close()


@pytest.mark.skipif(len(GPUS) < 2, reason="needs two GPUs")
def test_two_function_trials_on_two_gpus_never_share(make):
    backend = make(gpus=[GPUS[0].index, GPUS[1].index])
    assert backend.default_n_workers() == 2
    mib = 256
    reports = run_trials(backend, [{"x": 0.1, "mib": mib, "together": 1, "hold": 3.0},
                                   {"x": 0.2, "mib": mib, "together": 1, "hold": 3.0}])
    for probe in reports.values():
        check_probe(probe, mib)
    assert {p["visible"] for p in reports.values()} == {GPUS[0].index, GPUS[1].index}
    assert reports[0]["uuid"] != reports[1]["uuid"]
    # a later trial reuses a worker only on the same GPU: same pid, same device
    backend.start(Trial(2, {"x": 0.3, "mib": mib, "together": 1, "hold": 0.0}))
    later = run_trials_from(backend, 2)
    check_probe(later, mib)
    earlier = {p["pid"]: p["uuid"] for p in reports.values()}
    assert earlier.get(later["pid"], later["uuid"]) == later["uuid"]


def run_trials_from(backend: FunctionBackend, trial_id: int, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    probe = None
    while True:
        assert time.monotonic() < deadline
        for event in backend.poll():
            if event.trial_id != trial_id:
                continue
            if event.kind == EventKind.RESULT:
                probe = event.metrics
            elif event.kind == EventKind.FAILED:
                pytest.fail(f"trial {trial_id} failed: {event.reason}")
            else:
                assert probe is not None
                print("GPU-PROBE", trial_id,
                      json.dumps({k: v for k, v in probe.items() if k != "apps"}))
                return probe


def test_two_function_trials_share_one_gpu_when_asked(make):
    gpu = GPUS[0].index
    backend = make(gpus=[gpu])  # one slot, two trials at once: they share it on purpose
    mib = 512
    reports = run_trials(backend, [{"x": 0.1, "mib": mib, "together": 2, "hold": 2.0},
                                   {"x": 0.2, "mib": mib, "together": 2, "hold": 2.0}])
    for probe in reports.values():
        check_probe(probe, mib)
        assert probe["visible"] == gpu
    assert reports[0]["uuid"] == reports[1]["uuid"] and reports[0]["pid"] != reports[1]["pid"]
    on_gpu = [a for a in reports[1]["apps"] if a[1] == reports[1]["uuid"]]
    assert len(on_gpu) >= 2, reports[1]["apps"]  # both trial processes on it at once
