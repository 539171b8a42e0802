"""YAML and JSON documents read with limits: size, nesting depth, expanded size (aliases),
and no duplicate keys. Every problem is a `LoadError` naming the source, as one line.

YAML anchors and aliases are allowed, but the document they expand to is counted: a small
file whose aliases expand to millions of nodes (an "alias bomb") is refused, like a deep one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MAX_BYTES = 1 << 20  # a spec file; a spec is a few kilobytes
MAX_DEPTH = 32
MAX_NODES = 100_000  # values after expanding aliases
MAX_CHARS = 1 << 20  # characters in all strings and keys, after expanding aliases


class LoadError(ValueError):
    """A document that is malformed, too large or too deep; the message is one line."""


def load_file(path: str | os.PathLike[str], what: str = "spec") -> Any:
    """The document in a .yaml/.yml or .json file (by suffix; JSON for anything else)."""
    path = Path(path)
    try:
        if path.is_dir():
            raise LoadError(f"{what}: {path} is a directory, not a YAML or JSON file")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise LoadError(f"{what}: {path} has {size} bytes; a spec file may have at most "
                            f"{MAX_BYTES}")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LoadError(f"{what}: no file {path}") from None
    except UnicodeDecodeError as err:
        raise LoadError(f"{what}: {path} is not UTF-8 text ({err.reason})") from None
    except OSError as err:
        raise LoadError(f"{what}: cannot read {path}: {err.strerror or err}") from None
    if path.suffix in (".yaml", ".yml"):
        return load_yaml(text, f"{what} {path}")
    return load_json(text, f"{what} {path}")


def load_yaml(text: str, source: str = "YAML") -> Any:
    """Safe YAML (plain data only) with the limits of this module."""
    import yaml

    if len(text) > MAX_BYTES:
        raise LoadError(f"{source}: more than {MAX_BYTES} characters")
    try:
        data = yaml.load(text, Loader=_loader_class())  # noqa: S506 - a SafeLoader subclass
    except LoadError as err:
        raise LoadError(f"{source}: {err}") from None
    except RecursionError:
        raise LoadError(f"{source}: nested deeper than {MAX_DEPTH} levels") from None
    except yaml.YAMLError as err:
        raise LoadError(f"{source}: invalid YAML: {_yaml_message(err)}") from None
    check_size(data, source)
    return data


def load_json(text: str, source: str = "JSON") -> Any:
    """JSON with the limits of this module (duplicate keys refused)."""
    if len(text) > MAX_BYTES:
        raise LoadError(f"{source}: more than {MAX_BYTES} characters")
    try:
        data = json.loads(text, object_pairs_hook=_unique_pairs)
    except LoadError as err:
        raise LoadError(f"{source}: {err}") from None
    except RecursionError:
        raise LoadError(f"{source}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as err:
        raise LoadError(f"{source}: invalid JSON: {err}") from None
    check_size(data, source)
    return data


def check_size(data: Any, source: str = "spec") -> None:
    """Refuse data nested deeper than MAX_DEPTH, or larger than MAX_NODES values or MAX_CHARS
    characters once aliases (shared or recursive references) are expanded."""
    budget = [MAX_NODES, MAX_CHARS]
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise LoadError(f"{source}: nested deeper than {MAX_DEPTH} levels")
        budget[0] -= 1
        if budget[0] < 0:
            raise LoadError(f"{source}: more than {MAX_NODES} values (after expanding aliases)")
        if isinstance(value, str):
            budget[1] -= len(value)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                budget[1] -= len(str(key))
                stack.append((item, depth + 1))
        elif isinstance(value, list | tuple):
            stack.extend((item, depth + 1) for item in value)
        if budget[1] < 0:
            raise LoadError(f"{source}: more than {MAX_CHARS} characters of text")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise LoadError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _yaml_message(err: Exception) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


_LOADER: Any = None


def _loader_class() -> Any:
    """A SafeLoader that refuses duplicate keys (built once, when YAML is first read)."""
    global _LOADER
    if _LOADER is not None:
        return _LOADER
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                except TypeError:
                    continue  # an unhashable key: SafeLoader reports it
                if duplicate:
                    mark = key_node.start_mark
                    raise LoadError(f"duplicate key {key!r} at line {mark.line + 1}")
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    _LOADER = UniqueKeyLoader
    return _LOADER
