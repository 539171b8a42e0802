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
#: SQL statements in string constants (f-strings included), keywords in capitals as SQL has them
SQL = re.compile(r"\b(UPDATE\s+\S+\s+SET|DELETE\s+FROM|SELECT\s[\s\S]*?\sFROM|CREATE\s+TABLE|"
                 r"ALTER\s+TABLE)\b")


def _imports(tree: ast.Module) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def problems_in(name: str, text: str) -> list[str]:
    """What in one module's source reaches past MLflow's public API (one line each)."""
    tree = ast.parse(text)
    problems = []
    for module in _imports(tree):
        private = module.startswith("mlflow") and any(p.startswith("_") for p in module.split("."))
        if private or any(module == m or module.startswith(m + ".") for m in FORBIDDEN_MODULES):
            problems.append(f"{name}: imports {module}")
    problems += [f"{name}: {m.group(0)!r}" for m in PRIVATE.finditer(text)]
    problems += [f"{name}: SQL {node.value[:60]!r}" for node in ast.walk(tree)
                 if isinstance(node, ast.Constant) and isinstance(node.value, str)
                 and SQL.search(node.value)]
    return problems


def test_the_check_sees_sql_and_private_store_access() -> None:
    for source in ("from sqlalchemy import text\n", "def f():\n    import sqlite3\n",
                   "from mlflow.store.tracking.dbmodels.models import SqlMetric\n",
                   "store = client._tracking_client.store\n",
                   'sql = f"INSERT INTO {table} (key) VALUES (?)"\n',
                   'cursor.execute("PRAGMA journal_mode=WAL")\n',
                   'sql = "UPDATE latest_metrics SET value = ?"\n',
                   'sql = f"DELETE FROM {table} WHERE run_uuid = ?"\n',
                   'sql = "SELECT key, value FROM metrics WHERE run_uuid = ?"\n'):
        assert problems_in("x.py", source), source
    assert not problems_in("x.py", '"""Select the best trial from the runs."""\n'
                                   "from mlflow import MlflowClient\n"
                                   "MlflowClient().log_batch('run', metrics=[])\n")


def test_flows_reach_mlflow_through_its_public_api_only() -> None:
    sources = sorted(FLOWS.rglob("*.py"))
    assert FLOWS / "_mlflow_writer.py" in sources
    problems = [p for path in sources for p in problems_in(path.name, path.read_text())]
    assert not problems
