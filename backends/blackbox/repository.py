"""Finding blackboxes by name: `<root>/<name>/<task>/` folders written by `Blackbox.save`, or
`<root>/<name>/` YAHPO scenario folders (`scenario.json`, `model.onnx`...; their tasks are the
scenario's task ids).

Roots searched, in order: the `root` argument, the folders in `TUNESMITH_BLACKBOX_ROOT`
(separated by ':'), and the blackboxes bundled with the package (`backends/blackbox/data`:
LCBench's blood-transfusion-service-center table, and `yahpo-lcbench`, YAHPO Gym's LCBench
surrogate with 34 tasks). Loaded blackboxes are cached per folder and task.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from backends.blackbox.blackbox import META_FILE, Blackbox, BlackboxError
from backends.blackbox.yahpo import YahpoBlackbox, is_yahpo_folder, yahpo_tasks

BUNDLED_ROOT = Path(__file__).resolve().parent / "data"
ROOT_ENV = "TUNESMITH_BLACKBOX_ROOT"

_cache: dict[tuple[Path, str | None], Blackbox | YahpoBlackbox] = {}


def blackbox_roots(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched for blackboxes, in order."""
    roots = [Path(root)] if root is not None else []
    roots += [Path(p) for p in os.environ.get(ROOT_ENV, "").split(os.pathsep) if p]
    return [*roots, BUNDLED_ROOT]


def available_blackboxes(root: str | os.PathLike[str] | None = None) -> dict[str, list[str]]:
    """Blackbox name -> its tasks, over all roots."""
    found: dict[str, set[str]] = {}
    for base in blackbox_roots(root):
        if not base.is_dir():
            continue
        for name_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            if is_yahpo_folder(name_dir):
                tasks = set(yahpo_tasks(name_dir))
            else:
                tasks = {p.name for p in name_dir.iterdir() if (p / META_FILE).exists()}
            if tasks:
                found.setdefault(name_dir.name, set()).update(tasks)
    return {name: sorted(tasks) for name, tasks in sorted(found.items())}


def _describe(available: dict[str, list[str]]) -> str:
    return "; ".join(f"{name}: {', '.join(tasks)}" for name, tasks in available.items()) or "none"


def find_blackbox(name: str, task: str | None = None,
                  root: str | os.PathLike[str] | None = None) -> Path:
    """The folder of blackbox `name`/`task` (`task` may be left out if `name` has one task)."""
    available = available_blackboxes(root)
    if name not in available:
        raise BlackboxError(
            f"blackbox: unknown name {name!r}; available: {_describe(available)} "
            f"(import more with `python -m backends.blackbox.lcbench` and point {ROOT_ENV} at them)"
        )
    tasks = available[name]
    if task is None:
        if len(tasks) != 1:
            raise BlackboxError(f"task: blackbox {name!r} has several tasks, pick one of {tasks}")
        task = tasks[0]
    task = str(task)
    if task not in tasks:
        raise BlackboxError(f"task: blackbox {name!r} has no task {task!r}; available: {tasks}")
    return next(_candidates(blackbox_roots(root), name, task))


def _candidates(roots: Iterable[Path], name: str, task: str) -> Iterator[Path]:
    for base in roots:
        if is_yahpo_folder(base / name) and task in yahpo_tasks(base / name):
            yield base / name
        path = base / name / task
        if (path / META_FILE).exists():
            yield path


def load_blackbox(name: str, task: str | None = None,
                  root: str | os.PathLike[str] | None = None) -> Blackbox | YahpoBlackbox:
    """A blackbox by name and task, e.g. `load_blackbox("lcbench", "blood-transfusion-service-center")`
    or `load_blackbox("yahpo-lcbench", task="3945")`."""
    path = find_blackbox(name, task, root)
    return load_blackbox_path(path, str(task) if is_yahpo_folder(path) and task else None)


def load_blackbox_path(path: str | os.PathLike[str], task: str | None = None
                       ) -> Blackbox | YahpoBlackbox:
    """The blackbox in folder `path`: a saved table, or one task of a YAHPO scenario folder
    (cached: loading it again is free)."""
    path = Path(path).resolve()
    yahpo = is_yahpo_folder(path)
    if task is not None and not yahpo:
        raise BlackboxError(f"task: {path} is one table, not a scenario with tasks")
    if (path, task) not in _cache:
        _cache[path, task] = YahpoBlackbox(path, task) if yahpo else Blackbox.load(path)
    return _cache[path, task]
