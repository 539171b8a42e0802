"""Every benchmark's `key=value` figure is the last line it prints (read from the code: the
benchmarks themselves take minutes and are never run by the tests)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))
FIGURE = re.compile(r"[A-Za-z_][\w.-]*=")
#: scripts whose flows run in child processes, whose output they read (nothing reaches ours)
FLOWS_IN_CHILDREN = {"flow_overhead.py"}


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def _text(node: ast.expr) -> str | None:
    """A string literal, or an f-string with each `{...}` read as 0; None for anything else."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "0" for v in node.values)
    return None


def _ends_with_figure(body: list[ast.stmt], functions: dict[str, ast.FunctionDef],
                      depth: int = 0) -> bool:
    """The last statement prints `key=...`, or calls a function of the module that does."""
    last = body[-1]
    if not isinstance(last, ast.Expr) or not isinstance(last.value, ast.Call):
        return False
    call = last.value
    if not isinstance(call.func, ast.Name):
        return False
    if call.func.id == "print":
        text = _text(call.args[0]) if len(call.args) == 1 else None
        return text is not None and FIGURE.match(text) is not None and not call.keywords
    target = functions.get(call.func.id)
    return target is not None and depth < 2 and _ends_with_figure(target.body, functions,
                                                                   depth + 1)


def test_the_benchmarks_are_found() -> None:
    assert {"flow_overhead.py", "local_overhead.py", "gp_speed.py"} <= {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_main_ends_by_printing_its_figure(script: Path) -> None:
    tree = ast.parse(script.read_text())
    functions = _functions(tree)
    guard = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    assert len(guard) == 1 and ast.unparse(guard[0]).splitlines()[1:] == ["    main()"], \
        "the script's `if __name__ == '__main__':` does `main()` and nothing else"
    assert "main" in functions and _ends_with_figure(functions["main"].body, functions), \
        "main() must end by printing its key=value figure"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_flows_in_the_process_use_a_server_that_ends_silently(script: Path) -> None:
    """Prefect's temporary server logs its stop from an atexit hook, after the figure:
    a benchmark that runs flows in its own process starts `_flow_setup`'s server instead."""
    source = script.read_text()
    runs_flows = any(s in source for s in ("flows.tune", "run_tune(", "tunesmith import tune"))
    if runs_flows and script.name not in FLOWS_IN_CHILDREN:
        assert "prefect_for_flows(" in source or "quiet_state(" in source


def test_the_shared_overhead_set_up_starts_that_server() -> None:
    tree = ast.parse((BENCHMARKS / "_overhead.py").read_text())
    assert "prefect_for_flows(" in ast.unparse(_functions(tree)["quiet_state"])
