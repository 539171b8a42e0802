"""The peer venvs: Syne Tune, and Ray Tune with Optuna, each in its own virtual environment.

`ensure_syne_tune_python()` creates `benchmarks/.peers-venv` on first use (with uv) and returns
its interpreter; `ensure_ray_python()` does the same for `benchmarks/.ray-venv`. Concurrent
callers wait on a file lock, so a venv is built once. Peers are never dependencies of tunesmith.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS_VENV = HERE / ".peers-venv"
RAY_VENV = HERE / ".ray-venv"
RAY_REQUIREMENTS = ("ray[tune]==2.60.0", "optuna==5.0.0")
REQUIREMENTS = (
    "syne-tune[basic]==0.16.0",
    "huggingface_hub",  # `import syne_tune.blackbox_repository` needs it
    "pandas",
    "pyarrow",
    "onnxruntime",  # the YAHPO surrogates of quality_suite.py
    "scipy",
)


def _uv() -> list[str]:
    candidates = [HERE.parent / ".venv" / "bin" / "uv", Path(sys.executable).parent / "uv"]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return [str(path)]
    found = shutil.which("uv")
    if found:
        return [found]
    return [sys.executable, "-m", "uv"]


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_syne_tune_python(venv: Path = PEERS_VENV) -> Path:
    """The python of a venv with `syne-tune[basic]==0.16.0`, created on first call."""
    return ensure_peer_python(venv, REQUIREMENTS)


def ensure_ray_python(venv: Path = RAY_VENV) -> Path:
    """The python of a venv with Ray Tune and Optuna, created on first call."""
    return ensure_peer_python(venv, RAY_REQUIREMENTS)


def ensure_peer_python(venv: Path, requirements: tuple[str, ...]) -> Path:
    """The python of `venv` with `requirements` installed (created on first call)."""
    stamp = venv / ".installed"
    wanted = "\n".join(requirements)
    if stamp.exists() and stamp.read_text() == wanted and _python(venv).exists():
        return _python(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent callers wait for the first one to finish
        try:
            if stamp.exists() and stamp.read_text() == wanted and _python(venv).exists():
                return _python(venv)
            uv = _uv()
            if not _python(venv).exists():
                subprocess.run([*uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
                               check=True)
            # bytecode compiled now: a shell with PYTHONDONTWRITEBYTECODE would otherwise
            # recompile syne_tune, sklearn and scipy at every start (~25 s on 2 busy cores)
            subprocess.run([*uv, "pip", "install", "--quiet", "--compile-bytecode", "--python",
                            str(_python(venv)), *requirements], check=True)
            stamp.write_text(wanted)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return _python(venv)


def syne_tune_env() -> dict[str, str]:
    """Environment for a Syne Tune subprocess: its files go to a temporary folder."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # keep the bytecode of the repo's modules
    env.setdefault("SYNETUNE_FOLDER", tempfile.mkdtemp(prefix="synetune-"))
    return env


if __name__ == "__main__":
    print(ensure_syne_tune_python())
