"""The local backend on real NVIDIA GPUs: skipped unless nvidia-smi lists one and torch is there.

CI has no GPU; these run where one is at hand (see docs/architecture.md, "Checked on real
GPUs"). Each trial allocates memory on the device it was given and prints what it saw as one
`GPU-PROBE {json}` line to its stdout: its CUDA_VISIBLE_DEVICES, the UUID of the device torch
opened, the memory it holds, and the compute processes nvidia-smi lists while it holds it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pytest

from backends.gpus import detect_gpus
from backends.local import LocalBackend
from hpo_core.methods import build_scheduler
from hpo_core.results import ExperimentStore
from hpo_core.stopping import StoppingCriterion
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

config = get_config()
started = time.time()
block = torch.ones(int(config["mib"]) * 2**20, dtype=torch.uint8, device="cuda")
torch.cuda.synchronize()
time.sleep(config["hold"])  # hold the memory while the other trials run
apps = subprocess.run(
    ["nvidia-smi", "--query-compute-apps=pid,gpu_uuid,used_memory", "--format=csv,noheader,nounits"],
    capture_output=True, text=True, check=True).stdout
probe = {
    "pid": os.getpid(),
    "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
    "device_count": torch.cuda.device_count(),
    "uuid": "GPU-" + str(torch.cuda.get_device_properties(0).uuid),
    "allocated_mib": torch.cuda.memory_allocated() / 2**20,
    "sum": int(block.sum().item()),
    "apps": [line.split(", ") for line in apps.strip().splitlines()],
    "start": started, "end": time.time(),
}
print("GPU-PROBE " + json.dumps(probe), flush=True)
report(epoch=1, loss=config["x"])
"""


def gpu_uuids() -> dict[str, str]:
    """nvidia-smi's index -> UUID."""
    import subprocess

    out = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split(", ") for line in out.strip().splitlines())


def run_probes(tmp_path: Path, gpus: str | list[str], n_trials: int, n_workers: int | None,
               mib: int, hold: float) -> tuple[list[dict], LocalBackend]:
    """Tune the probe script on `gpus`; each trial's probe, in trial order."""
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(PROBE))
    space = {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}, "mib": mib, "hold": hold}
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
    probes, _ = run_probes(tmp_path, [first], n_trials=2, n_workers=2, mib=mib, hold=4.0)
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
