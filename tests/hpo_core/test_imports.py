"""Arrows point one way: hpo_core imports no Prefect, MLflow or AWS; backends no Prefect/MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# In a fresh interpreter: import every module of hpo_core, note what is loaded, then the same
# for backends (whichever of its modules exist).
PROBE = """
import importlib, json, pkgutil, sys
out = {}
for package in ("hpo_core", "backends"):
    root = importlib.import_module(package)
    names = [m.name for m in pkgutil.walk_packages(root.__path__, package + ".")]
    for name in names:
        importlib.import_module(name)
    out[package] = {"modules": names, "loaded": sorted({m.split(".")[0] for m in sys.modules})}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def imports() -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_hpo_core_imports_no_prefect_mlflow_or_aws(imports):
    modules, loaded = imports["hpo_core"]["modules"], set(imports["hpo_core"]["loaded"])
    for expected in ("hpo_core.tuner", "hpo_core.backend", "hpo_core.space",
                     "hpo_core.schedulers.asha", "hpo_core.schedulers.hyperband",
                     "hpo_core.searchers.random"):
        assert expected in modules
    assert {"hpo_core", "numpy"} <= loaded
    assert not loaded & {"prefect", "mlflow", "boto3", "botocore", "sagemaker"}


def test_backends_import_no_prefect_or_mlflow(imports):
    modules, loaded = imports["backends"]["modules"], set(imports["backends"]["loaded"])
    assert "backends.simulated" in modules
    assert not loaded & {"prefect", "mlflow", "flows"}
