"""Python objectives as trials: what names one, how it reaches a worker, how a worker loads it.

An objective is a function `objective(config)` or a class with `setup(config)`, `step()` and
optionally `save_checkpoint(dir)` / `load_checkpoint(dir)`. It is named by an entry point
(`"pkg.module:objective"` or `"path/to/file.py:objective"`) or given as a Python object. An
object that can be imported by its name (a module-level function or class, also one defined in
the script that runs the tuner) travels as that name; anything else (a `functools.partial`, a
callable instance) is pickled; what can be neither (a lambda, a closure, something holding a
lock) is an `ObjectiveError` naming the objective, raised before any trial starts.

The tuner side checks an entry point without importing the user's code (which may import CUDA):
the module or file must exist and define the name at its top level. Workers import it.
"""

from __future__ import annotations

import ast
import base64
import importlib
import importlib.util
import inspect
import os
import pickle
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_MODULE_ENTRY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_FILE_ENTRY = re.compile(r"^[^\s:]+\.py:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
#: Name under which a worker imports the tuner's main script (so its `if __name__ ==
#: "__main__":` block does not run again there).
MAIN_ALIAS = "__tunesmith_main__"
#: The entry point spec.json records for an objective that travels pickled (it has no name to
#: import it by): such an experiment is resumed from Python, with the objective given again.
PICKLED_ENTRY = "python-object:"


class ObjectiveError(ValueError):
    """An objective that cannot be run in a worker; the message names it."""


def is_function_entry(entry_point: Any) -> bool:
    """Whether `entry_point` names a Python function or class (`mod:name`, `file.py:name`, or
    the mark of a pickled one)."""
    return isinstance(entry_point, str) and bool(
        _MODULE_ENTRY.match(entry_point) or _FILE_ENTRY.match(entry_point)
        or entry_point.startswith(PICKLED_ENTRY))


@dataclass(frozen=True)
class Objective:
    """What a worker needs to load the objective: an entry point, or pickled bytes."""

    name: str  # for messages: the entry point, or the object's qualified name
    entry: str | None = None
    pickled: bytes | None = None
    main_file: str | None = None  # the tuner's main script, for pickles that refer to it

    def payload(self) -> dict[str, Any]:
        """The JSON-able form sent to a worker."""
        data: dict[str, Any] = {"name": self.name, "entry": self.entry, "main": self.main_file}
        if self.pickled is not None:
            data["pickled"] = base64.b64encode(self.pickled).decode("ascii")
        return data

    @staticmethod
    def from_payload(data: dict[str, Any]) -> Objective:
        pickled = data.get("pickled")
        return Objective(data["name"], data.get("entry"),
                         base64.b64decode(pickled) if pickled else None, data.get("main"))


def objective_from(value: Any, field: str = "backend_options.entry_point") -> Objective:
    """An `Objective` from an entry point string or a Python function, class or callable."""
    if isinstance(value, str):
        check_entry(value, field)
        return Objective(value, entry=value)
    if not callable(value):
        raise ObjectiveError(f"{field}: expected an entry point or a callable, got {value!r}")
    entry = _entry_of(value)
    if entry is not None:
        return Objective(entry, entry=entry)
    name = describe(value)
    try:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as err:  # noqa: BLE001 - pickle raises many kinds
        raise ObjectiveError(
            f"objective {name} cannot be sent to a trial worker ({type(err).__name__}: {err}); "
            "define it at the top level of a module or script, or name it as "
            "'module:function' / 'file.py:function'") from None
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None) if b"__main__" in data else None
    return Objective(name, pickled=data, main_file=os.path.abspath(main_file) if main_file else None)


def describe(value: Any) -> str:
    """A readable name of a callable: `module.qualname (file:line)` where known."""
    inner = getattr(value, "func", None)  # functools.partial
    if inner is not None and callable(inner):
        return f"partial({describe(inner)})"
    name = f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__name__)}"
    try:
        where = f" ({inspect.getsourcefile(value)}:{inspect.getsourcelines(value)[1]})"
    except (OSError, TypeError):
        where = ""
    return repr(name) + where


def _entry_of(value: Any) -> str | None:
    """`module:qualname` (or `file.py:qualname` for the main script) if `value` is importable
    under that name, else None."""
    module_name = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if not (inspect.isfunction(value) or inspect.isclass(value)) or not module_name \
            or not qualname or "<" in qualname:
        return None
    module = sys.modules.get(module_name)
    if _lookup(module, qualname) is not value:
        return None
    if module_name == "__main__":
        path = getattr(module, "__file__", None)
        return f"{os.path.abspath(path)}:{qualname}" if path and path.endswith(".py") else None
    return f"{module_name}:{qualname}"


def _lookup(module: Any, qualname: str) -> Any:
    value = module
    for part in qualname.split("."):
        value = getattr(value, part, None)
    return value


def check_entry(entry: str, field: str = "backend_options.entry_point") -> None:
    """Raise ObjectiveError unless `entry` names a top-level name of an existing module or file
    (read, not imported)."""
    if entry.startswith(PICKLED_ENTRY):
        raise ObjectiveError(
            f"{field}: the objective {entry[len(PICKLED_ENTRY):]} was a Python object given to "
            "tunesmith.tune(); resume the experiment from Python with the same objective")
    if not is_function_entry(entry):
        raise ObjectiveError(f"{field}: {entry!r} is not 'module:function' or 'file.py:function'")
    where, name = entry.rsplit(":", 1)
    path: Path | None
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if not path.is_file():
            raise ObjectiveError(f"{field}: no such file {where!r} (relative to {os.getcwd()})")
    else:
        path = _module_file(where, field)
    if path is None:
        return  # a compiled or namespace module: checked when a worker imports it
    top = name.split(".")[0]
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (OSError, SyntaxError, ValueError) as err:
        raise ObjectiveError(f"{field}: cannot read {path}: {err}") from None
    if top not in _top_level_names(tree):
        raise ObjectiveError(f"{field}: {path} defines no {top!r} at its top level")


def _module_file(module: str, field: str) -> Path | None:
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)  # as in the worker, which runs in this folder
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as err:
        raise ObjectiveError(f"{field}: cannot find module {module!r}: {err}") from None
    finally:
        if added:
            sys.path.remove(cwd)
    if spec is None:
        raise ObjectiveError(f"{field}: no module named {module!r} (from {cwd})")
    origin = spec.origin
    return Path(origin) if origin and origin.endswith(".py") else None


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.If | ast.Try):  # e.g. a definition under a version check
            body = [n for n in ast.iter_child_nodes(node) if isinstance(n, ast.stmt)]
            names.update(_top_level_names(ast.Module(body=body, type_ignores=[])))
    return names


# -- in the worker ---------------------------------------------------------------------------------
def load(objective: Objective) -> Any:
    """The function or class (imports the user's code; called in a worker)."""
    if objective.entry is not None:
        where, name = objective.entry.rsplit(":", 1)
        module = _import_file(where) if where.endswith(".py") else _import_module(where)
        value = _lookup(module, name)
        if value is None:
            raise ObjectiveError(f"{objective.entry}: {where} has no {name!r}")
        return value
    if objective.pickled is None:
        raise ObjectiveError(f"{objective.name}: neither an entry point nor a pickled object")
    if objective.main_file:
        main = _import_file(objective.main_file)
        saved = sys.modules["__main__"]
        sys.modules["__main__"] = main
        try:
            return pickle.loads(objective.pickled)  # noqa: S301 (sent by our own tuner)
        finally:
            sys.modules["__main__"] = saved
    return pickle.loads(objective.pickled)  # noqa: S301


def _import_module(name: str) -> Any:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(name)


def _import_file(path: str) -> Any:
    """Import a .py file as a module, its folder on sys.path as when run as a script."""
    full = os.path.abspath(path)
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) == full:
            return module
    folder = os.path.dirname(full)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    stem = Path(full).stem
    name = MAIN_ALIAS if stem in sys.modules or not stem.isidentifier() else stem
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise ObjectiveError(f"cannot import {full}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pickles and dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
