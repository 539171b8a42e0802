"""A real Dask cluster on 127.0.0.1 for tests and benchmarks: `dask scheduler` and `dask worker`
processes (no nanny: killing a worker's process kills the worker), each worker with its own
fake `nvidia-smi` on PATH listing as many GPUs as its `GPU` resource. `stop()` ends the workers
before the scheduler (the other order makes workers log connection errors)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Cluster:
    address: str
    folder: Path
    scheduler: subprocess.Popen[bytes]
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def add_worker(self, name: str, gpus: int = 0, nthreads: int = 2, wait: bool = True,
                   nvidia_smi: bool = True) -> None:
        """A worker advertising `gpus` GPUs, which a fake nvidia-smi on its PATH lists (none
        with `nvidia_smi=False`: a worker that advertises GPUs it does not have)."""
        env = dict(os.environ)
        env.pop("CUDA_VISIBLE_DEVICES", None)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path.cwd()), env.get("PYTHONPATH"))
                                            if p)
        args = [str(BIN / "dask"), "worker", self.address, "--no-nanny", "--nthreads",
                str(nthreads), "--name", name, "--no-dashboard", "--host", "127.0.0.1",
                "--local-directory", str(self.folder / name)]
        if gpus and nvidia_smi:
            folder = self.folder / f"bin-{name}"
            folder.mkdir(parents=True, exist_ok=True)
            exe = folder / "nvidia-smi"
            rows = "".join(f"{i}, 0, 0\\n" for i in range(gpus))
            exe.write_text(f"#!/bin/sh\nprintf '{rows}'\n")
            exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
            env["PATH"] = f"{folder}{os.pathsep}{env['PATH']}"
        if gpus:
            args += ["--resources", f"GPU={gpus}"]
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 - the process keeps it
        self.workers[name] = subprocess.Popen(args, env=env, stdout=log, stderr=log)
        if wait:
            self.wait_for(len(self.workers))

    def wait_for(self, n: int, timeout: float = 60.0) -> None:
        from distributed import Client

        with Client(self.address, timeout=timeout, set_as_default=False) as client:
            client.wait_for_workers(n, timeout=timeout)

    def kill_worker(self, name: str) -> None:
        proc = self.workers.pop(name)
        proc.kill()
        proc.wait()

    def stop(self) -> None:
        for proc in self.workers.values():
            proc.terminate()
        for proc in self.workers.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.workers.clear()
        self.scheduler.terminate()
        try:
            self.scheduler.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.scheduler.kill()
            self.scheduler.wait()


def start_cluster(folder: Path, workers: dict[str, int], nthreads: int = 2) -> Cluster:
    """A scheduler and one worker per `name: gpus` entry, all connected."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(folder / "scheduler.log", "ab")  # noqa: SIM115 - the process keeps it
    scheduler = subprocess.Popen(
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--dashboard-address", "127.0.0.1:0", "--no-show"], stdout=log, stderr=log)
    cluster = Cluster(f"tcp://127.0.0.1:{port}", folder, scheduler)
    try:
        _wait_port(port, scheduler)
        for name, gpus in workers.items():
            cluster.add_worker(name, gpus, nthreads, wait=False)
        if workers:
            cluster.wait_for(len(workers))
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the scheduler exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"no scheduler on port {port} after {timeout}s")
