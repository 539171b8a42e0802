"""GPU detection and rotation for the local backend.

`detect_gpus()` asks `nvidia-smi` for the GPUs and how busy they are; `GpuRotation` gives each
new trial the `gpus_per_trial` least busy of them (fewest trials assigned by us, then lowest
utilization, then least memory used), to be passed as `CUDA_VISIBLE_DEVICES`.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)

QUERY = ["--query-gpu=index,memory.used,utilization.gpu", "--format=csv,noheader,nounits"]


@dataclass
class GpuInfo:
    """One GPU as nvidia-smi sees it (memory in MiB, utilization in percent)."""

    index: str
    memory_used: float = 0.0
    utilization: float = 0.0


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # "[N/A]", "[Not Supported]"
        return 0.0


def parse_nvidia_smi(output: str) -> list[GpuInfo]:
    """GPUs from the CSV that `nvidia-smi --query-gpu=index,memory.used,utilization.gpu` prints."""
    gpus = []
    for line in output.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 3 or not fields[0].isdigit():
            continue
        gpus.append(GpuInfo(fields[0], _number(fields[1]), _number(fields[2])))
    return gpus


def detect_gpus(nvidia_smi: str = "nvidia-smi", timeout: float = 10.0) -> list[GpuInfo]:
    """The machine's GPUs; empty when nvidia-smi is missing or fails."""
    executable = shutil.which(nvidia_smi)
    if executable is None:
        return []
    try:
        completed = subprocess.run([executable, *QUERY], capture_output=True, text=True,
                                   timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        logger.warning("nvidia-smi failed (%s); running without GPUs", err)
        return []
    if completed.returncode != 0:
        logger.warning("nvidia-smi exited with code %s (%s); running without GPUs",
                       completed.returncode, completed.stderr.strip()[-300:])
        return []
    return parse_nvidia_smi(completed.stdout)


class GpuRotation:
    """Assigns GPUs to trials, always the least busy ones.

    Args:
        gpus: the GPUs to use (ids as `CUDA_VISIBLE_DEVICES` takes them, or `GpuInfo`s).
        gpus_per_trial: devices each trial gets.
        refresh_every: seconds after which utilization and memory are read again from
            nvidia-smi before an assignment (None: never).
    """

    def __init__(self, gpus: Sequence[GpuInfo | int | str], gpus_per_trial: int = 1,
                 refresh_every: float | None = 60.0):
        if isinstance(gpus_per_trial, bool) or not isinstance(gpus_per_trial, int) \
                or gpus_per_trial < 1:
            raise ValueError(f"gpus_per_trial: must be a positive integer, got {gpus_per_trial!r}")
        infos = [g if isinstance(g, GpuInfo) else GpuInfo(str(g)) for g in gpus]
        ids = [g.index for g in infos]
        if len(set(ids)) != len(ids):
            raise ValueError(f"gpus: lists a GPU more than once: {ids}")
        if gpus and gpus_per_trial > len(infos):
            raise ValueError(
                f"gpus_per_trial: {gpus_per_trial} is more than the {len(infos)} GPUs {ids}"
            )
        self.gpus: dict[str, GpuInfo] = {g.index: g for g in infos}
        self.gpus_per_trial = gpus_per_trial
        self.refresh_every = refresh_every
        self._refreshed = time.monotonic()
        self._load: dict[str, int] = dict.fromkeys(self.gpus, 0)
        self._assigned: dict[object, list[str]] = {}

    @property
    def num_slots(self) -> int:
        """Trials that can run at once without sharing a GPU."""
        return len(self.gpus) // self.gpus_per_trial

    def free_slots(self) -> int:
        """Trials that could start now without sharing a GPU with one of ours."""
        return sum(1 for load in self._load.values() if load == 0) // self.gpus_per_trial

    def acquire(self, key: object) -> list[str]:
        """GPUs for a new trial run `key` (released with `release(key)`)."""
        if self.refresh_every is not None and \
                time.monotonic() - self._refreshed >= self.refresh_every:
            self.refresh()
        ranked = sorted(self.gpus.values(), key=lambda g: (
            self._load[g.index], g.utilization, g.memory_used, self._order(g.index)))
        chosen = sorted((g.index for g in ranked[: self.gpus_per_trial]), key=self._order)
        if max(self._load[i] for i in chosen) > 0:
            logger.warning("more trials than GPU slots (%d): GPUs %s are shared",
                           self.num_slots, ",".join(chosen))
        for index in chosen:
            self._load[index] += 1
        self._assigned[key] = chosen
        return chosen

    def release(self, key: object) -> None:
        for index in self._assigned.pop(key, []):
            self._load[index] -= 1

    def load(self) -> dict[str, int]:
        """Trials assigned to each GPU now."""
        return dict(self._load)

    def refresh(self) -> None:
        """Read utilization and memory of our GPUs again."""
        self._refreshed = time.monotonic()
        for info in detect_gpus():
            if info.index in self.gpus:
                self.gpus[info.index] = info

    @staticmethod
    def _order(index: str) -> tuple[int, int | str]:
        return (0, int(index)) if index.isdigit() else (1, index)
