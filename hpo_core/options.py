"""The one check of keyword options against what they are for: a typo is an error naming it.

Methods, searchers and backends all take their options as keyword arguments. `keywords(target)`
reads the names a callable accepts from its signature; `check_options` compares a mapping of
options with them and raises ValueError naming `<field>.<option>`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


@dataclass(frozen=True)
class Keywords:
    """The keyword arguments of a callable: all of them, the required ones, whether it
    also takes any other (`**kwargs`), and the flags (those whose default is True or False:
    they take nothing but a bool; a YAML "false" string would read as true)."""

    names: frozenset[str]
    required: frozenset[str]
    open: bool
    flags: frozenset[str] = frozenset()


def keywords(target: Callable[..., Any], leave_out: Collection[str] = ()) -> Keywords:
    """The keyword arguments of `target` (a function or a class), less `leave_out` and `self`."""
    params = inspect.signature(target).parameters
    names = {n for n, p in params.items() if p.kind in _KEYWORD and n != "self"} - set(leave_out)
    required = {n for n in names if params[n].default is inspect.Parameter.empty}
    is_open = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())
    flags = {n for n in names if isinstance(params[n].default, bool)}
    return Keywords(frozenset(names), frozenset(required), is_open, frozenset(flags))


def check_options(
    options: Mapping[str, Any],
    allowed: Keywords,
    field: str,
    owner: str | None = None,
    reserved: Collection[str] = (),
    check_required: bool = False,
    hints: Mapping[str, str] | None = None,
) -> None:
    """Raise ValueError naming `<field>.<key>` for an option that is not `allowed`.

    `reserved` options are set elsewhere in the spec (seed, metric, ...); `check_required` also
    refuses a missing required option. `owner` names what the options are for, in the message;
    `hints` says what to use instead of an unknown option (another tool's name for it).
    """
    for key, value in options.items():
        if key in reserved:
            raise ValueError(f"{field}.{key}: set at the top of the spec, not as an option")
        if key in allowed.flags and not isinstance(value, bool):
            raise ValueError(f"{field}.{key}: must be true or false, got {value!r}")
    if check_required:
        for key in sorted(allowed.required):
            if key not in options:
                raise ValueError(f"{field}.{key}: required")
    if allowed.open:
        return
    for key in options:
        if key not in allowed.names:
            of = f" for {owner!r}" if owner else ""
            hint = (hints or {}).get(key)
            raise ValueError(f"{field}.{key}: unknown option{of}; "
                             + (hint if hint else f"expected some of {sorted(allowed.names)}"))
