"""flows/ uses MLflow through its public client only: no SQLAlchemy, no MLflow store or
private modules, no SQL against MLflow's tables (issue 12; a schema change must not break us)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

FLOWS = Path(__file__).resolve().parents[2] / "flows"
FORBIDDEN_MODULES = ("sqlalchemy", "sqlite3", "alembic", "mlflow.store", "mlflow.server")
PRIVATE = re.compile(r"_tracking_client|ManagedSessionMaker|dbmodels|\bSql[A-Z][a-z]\w*|"
                     r"(?i:insert\s+into|pragma\s|exec_driver_sql)")


def _imports(tree: ast.Module) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_flows_reach_mlflow_through_its_public_api_only() -> None:
    sources = sorted(FLOWS.rglob("*.py"))
    assert FLOWS / "_mlflow_writer.py" in sources
    problems = []
    for path in sources:
        text = path.read_text()
        for name in _imports(ast.parse(text)):
            private = name.startswith("mlflow") and any(p.startswith("_") for p in name.split("."))
            if private or any(name == m or name.startswith(m + ".") for m in FORBIDDEN_MODULES):
                problems.append(f"{path.name}: imports {name}")
        problems += [f"{path.name}: {m.group(0)!r}" for m in PRIVATE.finditer(text)]
    assert not problems
