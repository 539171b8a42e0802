"""Copying a checkpoint that its trial is still rewriting in place (PBT's exploit step)."""

from __future__ import annotations

import json
import os
import threading
import time

from backends.checkpoints import settled_copy


def test_a_copy_never_catches_a_half_written_file(tmp_path):
    source = tmp_path / "parent"
    source.mkdir()
    (source / ".checkpoint.json.1.tmp").write_text("partial")  # save_checkpoint's temp file
    done = threading.Event()

    def rewrite_in_place():  # like a script that opens its checkpoint with "w" at every step
        step = 0
        while not done.is_set():
            step += 1
            with open(source / "checkpoint.json", "w") as f:
                f.write('{"step": ')
                f.flush()
                time.sleep(0.02)
                f.write(f"{step}}}")
            time.sleep(0.12)

    writer = threading.Thread(target=rewrite_in_place)
    writer.start()
    try:
        time.sleep(0.05)
        for i in range(8):
            target = tmp_path / f"child{i}"
            assert settled_copy(source, target)
            assert json.loads((target / "checkpoint.json").read_text())["step"] >= 1
            assert not (target / ".checkpoint.json.1.tmp").exists()
            time.sleep(0.011)
    finally:
        done.set()
        writer.join()
    assert not settled_copy(tmp_path / "missing", tmp_path / "child")
    assert not (tmp_path / "child").exists()


def test_a_checkpoint_that_never_settles_is_not_copied_for_pbt(tmp_path):
    """A script rewriting a big checkpoint in place without pause never leaves it settled: PBT
    gets no copy (its child starts afresh) rather than one with a torn file (4 of 16 children
    crashed on one); other callers get the copy as it is."""
    source = tmp_path / "parent"
    source.mkdir()
    done = threading.Event()

    def rewrite_without_pause():
        step = 0
        while not done.is_set():
            step += 1
            (source / "checkpoint.json").write_text(json.dumps({"step": step, "pad": "x" * 4096}))

    writer = threading.Thread(target=rewrite_without_pause)
    writer.start()
    try:
        assert not settled_copy(source, tmp_path / "child", settle=0.01, tries=5,
                                keep_unsettled=False)
        assert not (tmp_path / "child").exists()
        assert settled_copy(source, tmp_path / "other", settle=0.01, tries=5)
        assert (tmp_path / "other" / "checkpoint.json").exists()
    finally:
        done.set()
        writer.join()


def test_an_empty_file_written_earlier_does_not_hold_the_copy_up(tmp_path, caplog):
    """An empty file may be one just truncated, so a copy waits for it; one not modified for a
    while is a marker (before: every copy waited its tries out and warned)."""
    source = tmp_path / "parent"
    source.mkdir()
    (source / "checkpoint.json").write_text('{"step": 3}')
    marker = source / "COMPLETE"
    marker.write_text("")
    old = time.time() - 10
    os.utime(marker, (old, old))
    assert settled_copy(source, tmp_path / "child", keep_unsettled=False)
    assert (tmp_path / "child" / "COMPLETE").read_text() == ""
    assert "kept changing" not in caplog.text
    marker.write_text("")  # just written: it may be a truncated checkpoint, so the copy waits
    assert not settled_copy(source, tmp_path / "later", settle=0.01, tries=3,
                            keep_unsettled=False)


def test_checkpoints_at_a_file_url_need_no_folder_made_first(tmp_path):
    """`checkpoint_url: file:///...`: each version's folder is made as it is uploaded (before,
    every upload failed with FileNotFoundError, unless checkpoint_options said auto_mkdir)."""
    from backends.checkpoint_url import CheckpointURL

    store = CheckpointURL((tmp_path / "store").as_uri(), "exp", None)
    store.probe()
    source = tmp_path / "trial" / "checkpoint"
    source.mkdir(parents=True)
    (source / "checkpoint.json").write_text('{"epoch": 3}')
    versions: list[str] = []
    version = store.upload(7, source, lambda: True, versions)
    assert version is not None and store.latest(7) == version
    target = tmp_path / "other" / "checkpoint"  # in the trial's folder on another worker
    target.parent.mkdir()
    assert store.download(7, target) == version
    assert (target / "checkpoint.json").read_text() == '{"epoch": 3}'
