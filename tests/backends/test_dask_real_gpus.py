"""Dask trials on a real NVIDIA GPU: skipped unless nvidia-smi lists one, torch is there and
`distributed` is installed (CI has no GPU).

A real `dask scheduler` and one `dask worker` advertising `--resources GPU=1` (the real
nvidia-smi, no fake) run a script trial and a function trial per test, each asking for one GPU.
Each trial allocates memory on the device its worker gave it and logs what it saw: the worker,
CUDA_VISIBLE_DEVICES, torch's device name and the memory it held, and when it ran. Runs from a
plain checkout with the machine's python3 and torch, no Prefect:

    PYTHONPATH=$PWD python3 -m pytest tests/backends/test_dask_real_gpus.py -v -s
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dask_cluster import Cluster, _wait_port, free_port

from backends.gpus import detect_gpus
from hpo_core.trial import EventKind, Trial, TrialEvent

pytestmark = pytest.mark.skipif(
    not detect_gpus() or importlib.util.find_spec("torch") is None
    or importlib.util.find_spec("distributed") is None,
    reason="needs an NVIDIA GPU (nvidia-smi), torch and distributed",
)

# The body both trial kinds run: allocate `mib` on the visible GPU, hold it a moment, log, report.
PROBE = textwrap.dedent("""
    import json, os, time
    import torch
    from hpo_core.report import report

    def probe(config, folder):
        start = time.time()
        block = torch.empty(int(config["mib"]) * 2**20, dtype=torch.uint8, device="cuda")
        block.fill_(1)
        torch.cuda.synchronize()
        time.sleep(float(config["hold"]))
        seen = {"worker": os.environ.get("TUNESMITH_DASK_WORKER"),
                "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "device_count": torch.cuda.device_count(),
                "name": torch.cuda.get_device_name(0),
                "allocated_mib": torch.cuda.memory_allocated() / 2**20,
                "pid": os.getpid(), "start": start, "end": time.time()}
        with open(os.path.join(folder, "gpu.json"), "w") as f:
            json.dump(seen, f)
        print("trial", json.dumps(seen), flush=True)
        report(epoch=1, loss=float(config["x"]))
""")

SCRIPT = PROBE + textwrap.dedent("""
    from hpo_core.report import get_config
    probe(get_config(), os.path.dirname(os.environ["TUNESMITH_CONFIG"]))
""")

FUNCTION = PROBE + textwrap.dedent("""
    def objective(config):
        probe(config, config["folder"])
""")


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A scheduler and one worker with the machine's real GPU 0 as `GPU=1`, two threads.

    Started as `python -m distributed.cli...` so that it also runs where `distributed` was
    installed without its console scripts."""
    folder = Path(tmp_path_factory.mktemp("dask-gpu"))
    port = free_port()
    log = open(folder / "cluster.log", "ab")  # noqa: SIM115 - the processes keep it
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", str(port), "--dashboard-address", "127.0.0.1:0", "--no-show"],
        stdout=log, stderr=log)
    cluster = Cluster(f"tcp://127.0.0.1:{port}", folder, scheduler)
    env = dict(os.environ)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path.cwd()), env.get("PYTHONPATH")) if p)
    try:
        _wait_port(port, scheduler)
        cluster.workers["gpu"] = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", cluster.address, "--no-nanny",
             "--nthreads", "2", "--name", "gpu", "--no-dashboard", "--host", "127.0.0.1",
             "--local-directory", str(folder / "gpu"), "--resources", "GPU=1"],
            env=env, stdout=log, stderr=log)
        cluster.wait_for(1)
        yield cluster
    finally:
        cluster.stop()


def run_trials(address: str, entry_point: str, root: Path, configs: list[dict]) -> list[dict]:
    from backends.dask import DaskBackend

    backend = DaskBackend(entry_point, address=address, gpus_per_trial=1, poll_interval=0.05)
    backend.set_trial_root(root)
    events: list[TrialEvent] = []
    try:
        for tid, config in enumerate(configs):
            backend.start(Trial(tid, config))
        deadline = time.monotonic() + 240
        while sum(e.kind in (EventKind.COMPLETED, EventKind.FAILED) for e in events) < len(configs):
            assert time.monotonic() < deadline, events
            events += backend.poll()
    finally:
        backend.close()
    failed = [e for e in events if e.kind == EventKind.FAILED]
    assert not failed, failed
    return [json.loads((root / str(tid) / "gpu.json").read_text())
            if (root / str(tid) / "gpu.json").exists()
            else json.loads((Path(configs[tid]["folder"]) / "gpu.json").read_text())
            for tid in range(len(configs))]


def check(seen: list[dict], mib: int) -> None:
    for trial in seen:
        assert trial["worker"] == "gpu" and trial["visible"] == "0", trial
        assert trial["device_count"] == 1 and "NVIDIA" in trial["name"], trial
        assert trial["allocated_mib"] >= mib, trial
    runs = sorted((t["start"], t["end"]) for t in seen)
    for (_, end), (start, _) in zip(runs, runs[1:], strict=False):
        assert start >= end, f"two trials held the one GPU slot at once: {runs}"


def test_script_trials_take_the_workers_gpu_one_at_a_time(gpu_cluster: Cluster,
                                                            tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    configs = [{"x": 0.1 * i, "mib": 512, "hold": 1.0} for i in range(3)]
    seen = run_trials(gpu_cluster.address, str(script), tmp_path / "trials", configs)
    check(seen, 512)


def test_function_trials_take_the_workers_gpu_one_at_a_time(gpu_cluster: Cluster,
                                                              tmp_path: Path) -> None:
    module = tmp_path / "probe_fn.py"
    module.write_text(FUNCTION)
    configs = []
    for i in range(3):
        folder = tmp_path / f"out{i}"
        folder.mkdir()
        configs.append({"x": 0.1 * i, "mib": 256, "hold": 1.0, "folder": str(folder)})
    seen = run_trials(gpu_cluster.address, f"{module}:objective", tmp_path / "trials", configs)
    check(seen, 256)
