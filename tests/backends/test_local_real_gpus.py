"""The local backend on real NVIDIA GPUs: skipped unless nvidia-smi lists one and torch is there.

CI has no GPU; these run where one is at hand (see docs/architecture.md, "Checked on real
GPUs"). Each trial allocates memory on the device it was given and prints what it saw as one
`GPU-PROBE {json}` line to its stdout: its CUDA_VISIBLE_DEVICES, the UUID of the device torch
opened, the memory it holds, and the compute processes nvidia-smi lists while it holds it.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from backends.gpus import detect_gpus
from backends.local import LocalBackend
from hpo_core.registry import build_scheduler
from hpo_core.stopping import StoppingCriterion
from hpo_core.store import ExperimentStore, load_experiment
from hpo_core.tuner import Tuner

GPUS = detect_gpus()
pytestmark = pytest.mark.skipif(
    not GPUS or importlib.util.find_spec("torch") is None,
    reason="needs an NVIDIA GPU (nvidia-smi) and torch",
)

PROBE = """\
import json, os, subprocess, time
import torch
from hpo_core.report import get_config, report


def compute_apps():
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,gpu_uuid,used_memory",
                          "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=True).stdout
    return [line.split(", ") for line in out.strip().splitlines()]


config = get_config()
started = time.time()
block = torch.ones(int(config["mib"]) * 2**20, dtype=torch.uint8, device="cuda")
torch.cuda.synchronize()
uuid = "GPU-" + str(torch.cuda.get_device_properties(0).uuid)
deadline = time.time() + 120
while True:  # until the trials meant to share this GPU are all on it (or the deadline)
    apps = compute_apps()
    if sum(a[1] == uuid for a in apps) >= config["together"] or time.time() > deadline:
        break
    time.sleep(0.2)
probe = {
    "pid": os.getpid(),
    "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
    "device_count": torch.cuda.device_count(),
    "uuid": uuid,
    "allocated_mib": torch.cuda.memory_allocated() / 2**20,
    "sum": int(block.sum().item()),
    "apps": apps,
    "start": started,
}
time.sleep(config["hold"])  # hold the memory while the other trials look
probe["end"] = time.time()
print("GPU-PROBE " + json.dumps(probe), flush=True)
report(epoch=1, loss=config["x"])
"""


def gpu_uuids() -> dict[str, str]:
    """nvidia-smi's index -> UUID."""
    out = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split(", ") for line in out.strip().splitlines())


def run_probes(tmp_path: Path, gpus: str | list[str], n_trials: int, n_workers: int | None,
               mib: int, hold: float, together: int = 1) -> tuple[list[dict], LocalBackend]:
    """Tune the probe script on `gpus`; each trial's probe, in trial order. Each trial waits
    until `together` processes are on its GPU before it looks at them."""
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(PROBE))
    space = {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}, "mib": mib, "hold": hold,
             "together": together}
    scheduler = build_scheduler("random", space, "loss", "min", seed=0)
    backend = LocalBackend(str(script), gpus=gpus, python=sys.executable)
    workers = n_workers or backend.default_n_workers()
    store = ExperimentStore(tmp_path / "exp", "gpu-probe")
    tuner = Tuner(scheduler, backend, StoppingCriterion(max_trials_started=n_trials),
                  n_workers=workers, store=store)
    tuner.run()
    probes = []
    for tid, trial in sorted(tuner.trials.items()):
        stdout = (store.trial_dir(tid) / "stdout").read_text()
        lines = [ln for ln in stdout.splitlines() if ln.startswith("GPU-PROBE ")]
        assert trial.status.value == "completed" and lines, (
            tid, trial.status, (store.trial_dir(tid) / "stderr").read_text()[-2000:])
        probe = json.loads(lines[0].removeprefix("GPU-PROBE "))
        probe["trial_id"] = tid
        print(f"trial {tid}: CUDA_VISIBLE_DEVICES={probe['visible']} device={probe['uuid']} "
              f"allocated={probe['allocated_mib']:.0f} MiB pid={probe['pid']} "
              f"nvidia-smi compute apps={probe['apps']}")
        probes.append(probe)
    return probes, backend


def holds_memory(probe: dict, mib: int) -> bool:
    """nvidia-smi lists the trial's process on its device with at least `mib` MiB."""
    return any(int(pid) == probe["pid"] and uuid == probe["uuid"] and float(used) >= mib
               for pid, uuid, used in probe["apps"])


def overlap(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def test_two_trials_share_one_gpu(tmp_path):
    """Two workers on the first GPU alone: both trials hold memory on it at the same time."""
    first = GPUS[0].index
    uuid = gpu_uuids()[first]
    mib = 512
    probes, _ = run_probes(tmp_path, [first], n_trials=2, n_workers=2, mib=mib, hold=2.0,
                           together=2)
    assert [p["visible"] for p in probes] == [first, first]
    assert all(p["device_count"] == 1 and p["uuid"] == uuid for p in probes)
    assert all(p["allocated_mib"] >= mib and p["sum"] == mib * 2**20 for p in probes)
    assert overlap(probes[0], probes[1]), "the two trials did not run at the same time"
    for probe in probes:  # each trial saw both processes on the one GPU
        assert holds_memory(probe, mib), probe["apps"]
        pids = {int(pid) for pid, uuid_, _ in probe["apps"] if uuid_ == uuid}
        assert {p["pid"] for p in probes} <= pids, probe["apps"]


def test_one_trial_per_gpu(tmp_path):
    """Default n_workers (one per GPU): concurrent trials never share a device."""
    uuids = gpu_uuids()
    mib = 256
    probes, backend = run_probes(tmp_path, "auto", n_trials=2 * len(GPUS), n_workers=None,
                                 mib=mib, hold=2.0)
    assert backend.default_n_workers() == len(GPUS)
    for probe in probes:
        assert probe["device_count"] == 1
        assert probe["uuid"] == uuids[probe["visible"]]
        assert probe["allocated_mib"] >= mib and holds_memory(probe, mib), probe
    for i, a in enumerate(probes):
        for b in probes[i + 1:]:
            if overlap(a, b):
                assert a["visible"] != b["visible"], (a, b)
    assert {p["visible"] for p in probes} == set(uuids)  # every GPU was used


DDP = """\
import os
import torch
import torch.distributed as dist
from hpo_core.report import get_config, report

dist.init_process_group("gloo")
config = get_config()
total = torch.ones(1) * (dist.get_rank() + 1)
dist.all_reduce(total)
block = torch.ones(int(config["mib"]) * 2**20, dtype=torch.uint8, device="cuda")
for epoch in range(1, 4):
    report(epoch=epoch, loss=config["x"] / epoch, rank=dist.get_rank(),
           world_size=dist.get_world_size(), all_reduced=float(total.item()),
           visible=os.environ.get("CUDA_VISIBLE_DEVICES"),
           allocated_mib=torch.cuda.memory_allocated() / 2**20)
dist.destroy_process_group()
"""


def test_torchrun_trial_reports_once_per_epoch(tmp_path):
    """`torchrun --standalone --nproc_per_node=2 train.py` as the entry point: both ranks train
    on the trial's GPU, only rank 0's reports reach the tuner."""
    script = tmp_path / "ddp.py"
    script.write_text(DDP)
    first = GPUS[0].index
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", str(script)]
    space = {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}, "mib": 128}
    scheduler = build_scheduler("random", space, "loss", "min", seed=0)
    backend = LocalBackend(command, gpus=[first], python=sys.executable)
    store = ExperimentStore(tmp_path / "exp", "torchrun")
    tuner = Tuner(scheduler, backend, StoppingCriterion(max_trials_started=1), n_workers=1,
                  store=store)
    tuner.run()
    trial = tuner.trials[0]
    assert trial.status.value == "completed", (store.trial_dir(0) / "stderr").read_text()[-3000:]
    rows = load_experiment(store.path).results
    print(rows.to_string())
    assert rows["epoch"].tolist() == [1, 2, 3]
    assert set(rows["rank"]) == {0} and set(rows["world_size"]) == {2}
    assert set(rows["all_reduced"]) == {3.0}  # 1 + 2: both ranks met in the all-reduce
    assert set(rows["visible"]) == {first} and (rows["allocated_mib"] >= 128).all()

