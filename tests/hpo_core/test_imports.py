"""Arrows point one way: hpo_core imports no Prefect, MLflow or AWS; backends no Prefect/MLflow;
inside hpo_core no module imports one that imports it back (however indirectly or lazily).
flows' own rule (MLflow through its public API, no SQL) is tests/flows/test_mlflow_public_api.py."""

from __future__ import annotations

import ast
import json
import re
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


SPEC_PROBE = """
import json, sys
from hpo_core.spec import ExperimentSpec
ExperimentSpec.from_dict({"name": "x", "metric": "loss", "scheduler": "bohb",
                          "scheduler_options": {"max_t": 9, "gamma": 0.2},
                          "stop": {"max_trials_started": 5}})
print(json.dumps(sorted(sys.modules)))
"""


def test_validating_a_spec_loads_the_one_method_it_names_and_no_pandas():
    out = subprocess.run([sys.executable, "-c", SPEC_PROBE], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert {"hpo_core.registry", "hpo_core.schedulers.asha", "hpo_core.searchers.kde"} <= loaded
    assert not loaded & {"pandas", "pyarrow", "hpo_core.store.store", "hpo_core.tuner",
                         "hpo_core.schedulers.hyperband", "hpo_core.searchers.gp"}

# -- no import loop inside hpo_core (static) ------------------------------------------------------
# Every import counts: at module level or inside a function, under TYPE_CHECKING or not, and the
# modules named by strings ("hpo_core.x.y" or "hpo_core.x.y:attr": registry targets and
# importlib.import_module arguments), since they are imported when the registry loads them.
# Importing `a.b.c` also runs the package `a.b` (unless the importer is inside it).

MODULE_STRING = re.compile(r"^(hpo_core(?:\.\w+)+)(?::\w+)?$")


def module_names(package: str) -> dict[str, Path]:
    """Module name -> file, for every .py file under the package."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported_names(module: str, path: Path) -> set[str]:
    """Dotted names a module imports, however it imports them."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = MODULE_STRING.match(node.value)
            if match:
                names.add(match.group(1))
    return names


def import_graph(package: str) -> dict[str, set[str]]:
    modules = module_names(package)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for name in imported_names(module, path):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                target = ".".join(parts[:i])
                inside = module == target or module.startswith(target + ".")
                if target in modules and not inside:
                    graph[module].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop (its modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_import_graph_sees_registry_targets_and_function_imports():
    graph = import_graph("hpo_core")
    assert "hpo_core.schedulers.asha" in graph["hpo_core.registry"]  # a "module:attr" target
    assert "hpo_core.searchers.kde" in graph["hpo_core.searchers.registry"]
    assert "hpo_core.registry" in graph["hpo_core.spec"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_loop_inside_hpo_core():
    cycle = find_cycle(import_graph("hpo_core"))
    assert cycle is None, "import loop: " + " -> ".join(cycle or [])
