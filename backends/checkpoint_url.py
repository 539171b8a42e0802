"""Trial checkpoints at an fsspec URL (`s3://bucket/prefix`, `gs://...`), for workers that share
no filesystem (the `dask` backend's `checkpoint_url`).

A trial keeps reading and writing its checkpoint in a local folder (`TUNESMITH_CHECKPOINT_DIR`,
`hpo_core.report.save_checkpoint`); the worker running it syncs that folder with the URL:

- before a segment starts, `download` replaces the local folder with the trial's latest
  version at the URL (or, for a new trial seeded from another one, PBT, with that one's);
- at each report, `upload` copies the folder once it is settled (`checkpoints.settled_copy`:
  a script writing its checkpoint in place is waited for) and stores it as a new version,
  BEFORE the report goes on to the tuner. So whenever the tuner decides on a report (pause at
  an ASHA rung), the checkpoint the trial saved before that report is at the URL, and a resume
  on any worker continues from it. A checkpoint saved after a segment's last report (a paused
  trial finishing its epoch) stays local; the resume repeats that epoch.

Layout: `<url>/<experiment>/<trial id>/<version>/...` and `<url>/<experiment>/<trial id>/latest`,
the name of the newest complete version, written after it (a reader never sees a half-uploaded
version). Versions are named by upload time; the two newest are kept, older ones removed at the
next upload.

Credentials come from the worker's environment (the fsspec/boto chain: `AWS_*` variables, an
instance role) or from `storage_options`, whose values may be secret references
(`{secret: "env:NAME"}`), resolved on the worker, never stored, logged or sent back.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from backends.checkpoints import settled_copy
from hpo_core.report import is_temporary_checkpoint_file
from hpo_core.secrets import mask_text, resolve

POINTER = "latest"


class CheckpointURLError(RuntimeError):
    """The checkpoint URL could not be read or written (the message is masked)."""


def check_url(url: Any, storage_options: Any) -> str:
    """`url` normalized (no trailing slash); ValueError naming the option when it is not a
    URL fsspec can open here."""
    field = "backend_options.checkpoint_url"
    if not isinstance(url, str) or "://" not in url or not url.split("://", 1)[1].strip("/"):
        raise ValueError(f"{field}: expected a URL such as s3://bucket/prefix, got {url!r}")
    if storage_options is not None and not isinstance(storage_options, Mapping):
        raise ValueError("backend_options.checkpoint_options: must be a mapping of fsspec "
                         f"storage options, got {storage_options!r}")
    import fsspec

    protocol = url.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise ValueError(f"{field}: fsspec knows no {protocol}:// filesystem") from None
    except ImportError as err:
        raise ValueError(f"{field}: {protocol}:// needs a package that is missing here "
                         f"({err}; for s3:// pip install 'tunesmith[dask]')") from None
    return url.rstrip("/")


class CheckpointURL:
    """The checkpoints of one experiment's trials under `url/experiment` (see the module)."""

    def __init__(self, url: str, experiment: str | None,
                 storage_options: Mapping[str, Any] | None):
        from fsspec.core import url_to_fs

        self.url = f"{url}/{experiment}" if experiment else url
        options = resolve(dict(storage_options or {}), "backend_options.checkpoint_options")
        if self.url.split("://", 1)[0] in ("file", "local"):
            options.setdefault("auto_mkdir", True)  # folders, where object stores need none
        self.fs, self.root = url_to_fs(self.url, **options)
        self.root = self.root.rstrip("/")

    def probe(self) -> None:
        """Write and remove a small object: raises CheckpointURLError if this host cannot."""
        path = f"{self.root}/.tunesmith-probe-{uuid.uuid4().hex}"
        try:
            self._call("write to", lambda: self.fs.pipe_file(path, b"ok"))
            self._call("write to", lambda: self.fs.rm_file(path))
        except FileNotFoundError as err:  # no such bucket
            raise CheckpointURLError(mask_text(f"could not write to {self.url}: {err}")) from None

    def latest(self, trial_id: int) -> str | None:
        """The trial's newest version at the URL, or None."""
        pointer = f"{self.root}/{int(trial_id)}/{POINTER}"
        self.fs.invalidate_cache()
        try:
            data = self._call("read", lambda: self.fs.cat_file(pointer))
        except FileNotFoundError:
            return None
        return data.decode().strip() or None

    def versions(self, trial_id: int) -> list[str]:
        """The trial's versions at the URL, oldest first (complete or not)."""
        base = f"{self.root}/{int(trial_id)}"
        self.fs.invalidate_cache()
        try:
            names = self._call("read", lambda: self.fs.ls(base, detail=False))
        except FileNotFoundError:
            return []
        return sorted(n.rstrip("/").rsplit("/", 1)[-1] for n in names
                      if not n.rstrip("/").endswith(f"/{POINTER}"))

    def download(self, trial_id: int, target: Path, source_id: int | None = None) -> str | None:
        """Replace folder `target` with the newest checkpoint of trial `trial_id` (or, if that
        trial has none, of `source_id`); returns its version (None when there is none: then
        `target` is removed, the trial starts fresh)."""
        version, owner = self.latest(trial_id), trial_id
        if version is None and source_id is not None:
            version, owner = self.latest(source_id), source_id
        shutil.rmtree(target, ignore_errors=True)
        if version is None:
            return None
        prefix = f"{self.root}/{int(owner)}/{version}"
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
        try:
            files = self._call("read", lambda: self.fs.find(prefix))
            for path in files:
                local = staging / os.path.relpath(path, prefix)
                local.parent.mkdir(parents=True, exist_ok=True)
                self._call("read", partial(self.fs.get_file, path, str(local)))
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return version

    def upload(self, trial_id: int, source: Path, current: Callable[[], bool],
               replaces: list[str]) -> str | None:
        """Store folder `source` as the trial's newest version, unless it is missing or
        `current()` turned false meanwhile (a superseded segment must not move `latest`
        back). `replaces`: the trial's versions, oldest first (`versions()`, then updated
        here): all but the newest two are removed (the one before the newest may still be
        read: PBT copies from running trials). Returns the new version."""
        if not source.is_dir():
            return None
        base = f"{self.root}/{int(trial_id)}"
        version = f"{time.time_ns():x}-{uuid.uuid4().hex[:8]}"
        with tempfile.TemporaryDirectory(prefix=".upload-", dir=source.parent) as tmp:
            staging = Path(tmp) / "checkpoint"
            settled_copy(source, staging, settle=0.02)
            for root, _, names in os.walk(staging):
                for name in names:
                    if is_temporary_checkpoint_file(name):
                        continue
                    local = Path(root, name)
                    remote = f"{base}/{version}/{local.relative_to(staging).as_posix()}"
                    try:
                        self._call("write to", partial(self.fs.put_file, str(local), remote))
                    except FileNotFoundError as err:  # a folder missing there: one line
                        raise CheckpointURLError(mask_text(
                            f"could not write to the checkpoints at {self.url}: {err}")) from None
        if not current():
            self._remove(f"{base}/{version}")
            return None
        self._call("write to", lambda: self.fs.pipe_file(f"{base}/{POINTER}",
                                                         version.encode()))
        replaces.append(version)
        while len(replaces) > 2:
            self._remove(f"{base}/{replaces.pop(0)}")
        return version

    def _remove(self, path: str) -> None:
        try:
            self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass

    def _call(self, what: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except FileNotFoundError:
            raise
        except Exception as err:  # noqa: BLE001 - any storage error: one masked line
            raise CheckpointURLError(mask_text(
                f"could not {what} the checkpoints at {self.url}: {type(err).__name__}: {err}")
                ) from None
