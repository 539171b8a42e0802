"""The local backend with real subprocesses: reports, ASHA pause/resume, stop, faults, cleanup."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from trial_helpers import (
    SAVE_EVALUATE_REPORT,
    alive,
    assert_failed_with,
    collect,
    drained_after_a_save,
    ended,
    kinds,
    resumed_exactly,
    wait_gone,
    write,
)

from backends import processes
from backends.local import LocalBackend
from hpo_core.registry import build_scheduler
from hpo_core.spec import ExperimentSpec
from hpo_core.stopping import StoppingCriterion
from hpo_core.store import ExperimentStore, load_experiment
from hpo_core.trial import EventKind, Trial, TrialStatus
from hpo_core.tuner import TooManyFailuresError, Tuner, TunerCallback

# Reports epochs from its checkpoint on, and the epoch this run started at.
EPOCHS = """\
import time
from hpo_core.report import get_config, load_checkpoint, report, save_checkpoint
config = get_config()
first = (load_checkpoint() or {"epoch": 0})["epoch"] + 1
for epoch in range(first, config["epochs"] + 1):
    time.sleep(config.get("sleep", 0.02))
    save_checkpoint({"epoch": epoch})
    report(epoch=epoch, loss=(config["x"] - 0.3) ** 2 + 1 / epoch, start=first)
"""

# Forks a child that inherits stdout, reports both pids, then sleeps (or exits at once).
FORKS = """\
import os, signal, subprocess, sys, time
from hpo_core.report import get_config, report
config = get_config()
if config.get("ignore_term"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the child
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
report(pid=os.getpid(), child=child.pid)
if not config.get("exit_now"):
    time.sleep(60)
"""

FAULTS = """\
import os, signal, sys, time
from pathlib import Path
from hpo_core.report import get_config, report
Path(os.environ["PID_DIR"], os.environ["TUNESMITH_TRIAL_ID"]).write_text(str(os.getpid()))
mode = get_config()["mode"]
if mode == "ok":
    report(loss=0.1)
elif mode == "exit3":
    report(loss=0.9)
    print("giving up: disk full", file=sys.stderr)
    sys.exit(3)
elif mode == "crash":
    raise RuntimeError("boom before reporting")
elif mode == "segv":
    os.kill(os.getpid(), signal.SIGSEGV)
elif mode in ("nan", "inf"):
    report(loss=float(mode))
    time.sleep(60)  # the tuner stops it
elif mode == "garbage":
    print("[tunesmith]: {broken")
    sys.stdout.flush()
    os.write(1, b"\\xff\\xfe binary ]: junk\\n[tunesmith]: [1]\\n")
    report(loss=0.5)
elif mode == "garbage_only":
    print("[tunesmith]: {broken\\n[tune-metric]: 42\\nplain noise")
elif mode == "hang":
    time.sleep(60)
# "silent": exits 0 without a report
"""


@pytest.fixture
def backend_factory(tmp_path):
    made = []

    def make(script, **options):
        backend = LocalBackend(str(script) if isinstance(script, Path) else script, gpus=None,
                               **options)
        backend.set_trial_root(tmp_path / "trials")
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def test_reports_stream_in_and_files_are_written(tmp_path, backend_factory):
    backend = backend_factory(write(tmp_path, "epochs.py", EPOCHS))
    backend.start(Trial(0, {"x": 0.5, "epochs": 3}))
    events = collect(backend, lambda ev: EventKind.COMPLETED in kinds(ev, 0))
    results = [e for e in events if e.kind == EventKind.RESULT]
    assert [e.metrics["epoch"] for e in results] == [1, 2, 3]
    assert all(a.time <= b.time for a, b in zip(events, events[1:], strict=False))
    assert 0 < results[0].time <= backend.now()
    folder = tmp_path / "trials" / "0"
    assert json.loads((folder / "config.json").read_text()) == {"x": 0.5, "epochs": 3}
    assert (folder / "stdout").read_text().count("[tunesmith]:") == 3
    assert json.loads((folder / "checkpoint" / "checkpoint.json").read_text()) == {"epoch": 3}


def test_asha_promotion_resumes_paused_trials_from_their_checkpoints(tmp_path):
    # epochs without a pause between them: a trial that did not wait at its reports would be
    # epochs further on by the time the tuner paused it
    space = {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}, "epochs": 9, "sleep": 0}
    scheduler = build_scheduler("asha_promotion", space, "loss", "min", seed=1,
                                options={"max_t": 9, "grace_period": 1, "reduction_factor": 3})
    backend = LocalBackend(str(write(tmp_path, "epochs.py", EPOCHS)), gpus=None)
    store = ExperimentStore(tmp_path / "exp", "asha")
    tuner = Tuner(scheduler, backend, StoppingCriterion(max_trials_started=9), n_workers=2,
                  store=store)
    result = tuner.run()
    frame = load_experiment(store.path).results
    # exact pauses: each report waited for the tuner, so a run paused at epoch k had saved
    # the checkpoint of epoch k and no later one; its next run starts at k + 1
    resumed = resumed_exactly(frame)
    assert resumed >= 3  # top third of 9 promoted to epoch 3, its best to epoch 9
    assert frame["epoch"].max() == 9
    assert result.best_config is not None
    assert all(t.status in (TrialStatus.COMPLETED, TrialStatus.PAUSED, TrialStatus.STOPPED)
               for t in tuner.trials.values())


def test_a_script_waits_at_each_report_until_the_tuner_has_acted_on_it(tmp_path,
                                                                       backend_factory):
    backend = backend_factory(write(tmp_path, "epochs.py", EPOCHS))
    backend.start(Trial(0, {"x": 0.5, "epochs": 5, "sleep": 0}))
    first = collect(backend, lambda ev: len(ev) >= 1)
    assert [e.metrics["epoch"] for e in first] == [1]
    time.sleep(0.5)  # the tuner deciding slowly: the script waits at its first report
    checkpoint = tmp_path / "trials" / "0" / "checkpoint" / "checkpoint.json"
    assert json.loads(checkpoint.read_text()) == {"epoch": 1}
    backend.pause(0)  # never acknowledged: it ends there
    assert [e for _ in range(5) for e in backend.poll()] == []
    backend.resume(Trial(0, {"x": 0.5, "epochs": 5, "sleep": 0}))
    events = collect(backend, lambda ev: EventKind.COMPLETED in kinds(ev, 0))
    results = [e.metrics for e in events if e.kind == EventKind.RESULT]
    assert [(m["epoch"], m["start"]) for m in results] == [(2, 2), (3, 2), (4, 2), (5, 2)]


def test_with_automatic_acknowledgment_off_a_report_waits_for_acknowledge(tmp_path,
                                                                          backend_factory):
    """A Dask worker's backend, where the tuner decides: polls do not let a script past its
    report; `acknowledge(trial_ids)` does, for those trials only."""
    backend = backend_factory(write(tmp_path, "epochs.py", EPOCHS))
    backend.auto_acknowledge = False
    for tid in (0, 1):
        backend.start(Trial(tid, {"x": 0.5, "epochs": 3, "sleep": 0}))
    events = collect(backend, lambda ev: len(ev) >= 2)
    events += [e for _ in range(20) for e in backend.poll()]  # ~1 s of polls
    assert sorted((e.trial_id, e.metrics["epoch"]) for e in events) == [(0, 1), (1, 1)]
    backend.acknowledge({0})
    events += collect(backend, lambda ev: any(e.trial_id == 0 for e in ev))
    events += [e for _ in range(10) for e in backend.poll()]
    assert [e.metrics["epoch"] for e in events if e.trial_id == 1] == [1]  # still waiting
    assert [e.metrics["epoch"] for e in events if e.trial_id == 0
            and e.kind == EventKind.RESULT] == [1, 2]


# Reports twice after taking the acknowledgment pipe's fd number for another pipe or a file, or
# after pointing stdout at a pipe the backend does not read.
ACK_EDGES = """\
import os, subprocess
import hpo_core.report
from hpo_core.report import get_config, report
mode = get_config()["mode"]
fd = int(os.environ["TUNESMITH_REPORT_ACK"].split(":")[0])
if mode == "fd_reused_by_a_pipe":
    os.dup2(os.pipe()[0], fd)
elif mode == "fd_reused_by_a_file":
    os.dup2(os.open(__file__, os.O_RDONLY), fd)
elif mode == "stdout_elsewhere":
    hpo_core.report.ACK_PATIENCE = 0.3
    sink = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    os.dup2(sink.stdin.fileno(), 1)
report(epoch=1)
report(epoch=2)
"""


def test_a_report_that_cannot_be_acknowledged_does_not_wait(tmp_path, backend_factory):
    backend = backend_factory(write(tmp_path, "edges.py", ACK_EDGES))
    modes = ["fd_reused_by_a_pipe", "fd_reused_by_a_file", "stdout_elsewhere"]
    for tid, mode in enumerate(modes):
        backend.start(Trial(tid, {"mode": mode}))
    # within collect's 20 s: nothing waited ACK_PATIENCE (60 s) for an acknowledgment
    events = collect(backend, ended(0, 1, 2))
    for tid in (0, 1):  # not the pipe it was given: its reports do not wait
        assert [e.metrics["epoch"] for e in events if e.trial_id == tid
                and e.kind == EventKind.RESULT] == [1, 2]
        assert kinds(events, tid)[-1] == EventKind.COMPLETED
    # its lines never reached the backend: the first report waited ACK_PATIENCE, then it went on
    [failed] = [e for e in events if e.trial_id == 2]
    assert failed.kind == EventKind.FAILED and "exited without reporting" in failed.reason
    stderr = (tmp_path / "trials" / "2" / "stderr").read_text()
    assert stderr.count("no acknowledgment of a report in 0.3s") == 1


@pytest.mark.parametrize("where", ["handling a report", "waiting in a poll",
                                   "in a poll that took reports"])
def test_reports_in_flight_when_the_tuner_is_killed_are_kept(tmp_path, where):
    """Ctrl-C while the tuner handles a report (no snapshot of that state: the resume replays
    the journal), while it waits in a poll (its state is saved), or in a poll that has taken
    reports off its queue but not returned them; either way the reports the trials made
    meanwhile, after saving their checkpoints, are journaled (`drain()`)."""
    space = {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}, "epochs": 9, "sleep": 0.05}
    store = ExperimentStore(tmp_path / "exp", "in-flight")
    script = str(write(tmp_path, "epochs.py", EPOCHS))

    def stall_then_kill() -> None:
        time.sleep(0.5)  # the other trials save a checkpoint, report and wait meanwhile
        raise KeyboardInterrupt

    class KillWhileHandling(TunerCallback):
        results = 0

        def on_trial_result(self, trial, result, decision):
            self.results += 1
            if self.results == 6:
                stall_then_kill()

    class KillWhilePolling(LocalBackend):
        reports = 0

        def poll(self):
            if self.reports >= 6:
                stall_then_kill()  # as a signal comes while poll() waits for the queue
            events = super().poll()
            self.reports += sum(e.kind == EventKind.RESULT for e in events)
            return events

    class KillInsidePoll(LocalBackend):
        reports = 0
        killed = False

        def poll(self):
            events = super().poll()
            self.reports += sum(e.kind == EventKind.RESULT for e in events)
            return events

        def _take_queued(self, events, wait):
            if self.reports >= 6 and not self.killed:
                time.sleep(0.5)  # the other trials report and wait meanwhile
                super()._take_queued(events, 0)  # their reports taken off the queue ...
                self.killed = True
                raise KeyboardInterrupt  # ... and the signal comes before poll() returns them
            super()._take_queued(events, wait)

    def tuner(backend_class=LocalBackend, callbacks=()):
        scheduler = build_scheduler("asha_promotion", space, "loss", "min", seed=2,
                                    options={"max_t": 9, "grace_period": 1,
                                             "reduction_factor": 3})
        return Tuner(scheduler, backend_class(script, gpus=None),
                     StoppingCriterion(max_trials_started=6), n_workers=3, store=store,
                     callbacks=list(callbacks))

    killed = {"handling a report": lambda: tuner(callbacks=[KillWhileHandling()]),
              "waiting in a poll": lambda: tuner(KillWhilePolling),
              "in a poll that took reports": lambda: tuner(KillInsidePoll)}[where]()
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    tuner().run()  # resumed: the interrupted trials continue from their checkpoints
    frame = load_experiment(store.path).results
    for tid, rows in frame.groupby("trial_id"):
        epochs = rows["epoch"].tolist()  # a report made just before the end was not lost
        assert epochs == list(range(1, len(epochs) + 1)), f"trial {tid}: {epochs}"
    assert frame["trial_id"].nunique() == 6


def test_a_script_stopped_between_its_save_and_its_report_reports_first(tmp_path,
                                                                         backend_factory):
    """The tuner is interrupted (drain: SIGTERM to the trials) after a script saved epoch 1's
    checkpoint and before it reported epoch 1: the script stops at that report, so the report
    is drained, and the resume (from that checkpoint) leaves no gap. Before, the script died at
    once: epoch 1 was never reported and the resumed trial started at epoch 2."""
    saved = tmp_path / "saved"
    script = write(tmp_path, "save_evaluate.py", SAVE_EVALUATE_REPORT + "save_evaluate_report()\n")
    events = drained_after_a_save(backend_factory(script, env={"SAVED": str(saved)}), saved)
    assert [(e.kind, e.metrics) for e in events] == [(EventKind.RESULT, {"epoch": 1})]
    checkpoint = json.loads((tmp_path / "trials/0/checkpoint/checkpoint.json").read_text())
    assert checkpoint == {"epoch": 1}


def test_stop_ends_the_whole_process_group_without_blocking(tmp_path, backend_factory):
    backend = backend_factory(write(tmp_path, "forks.py", FORKS), stop_grace_period=0.5)
    backend.start(Trial(0, {}))
    backend.start(Trial(1, {"ignore_term": True}))
    events = collect(backend, lambda ev: len([e for e in ev if e.kind == EventKind.RESULT]) == 2)
    pids = {e.trial_id: (e.metrics["pid"], e.metrics["child"]) for e in events}
    started = time.monotonic()
    backend.stop(0)
    backend.stop(1)
    assert time.monotonic() - started < 0.1  # SIGKILL comes later, from poll()
    assert wait_gone(pids[0], backend, timeout=2.0)
    assert all(alive(p) for p in pids[1])  # it ignores SIGTERM: alive within the grace period
    assert wait_gone(pids[1], backend, timeout=3.0)  # then SIGKILLed
    late = collect(backend, lambda ev: True) + backend.poll()
    assert late == []  # a stopped trial reports nothing more


def test_children_left_behind_by_a_finished_script_are_ended(tmp_path, backend_factory):
    backend = backend_factory(write(tmp_path, "forks.py", FORKS))
    backend.start(Trial(0, {"exit_now": True}))  # its child keeps stdout open
    events = collect(backend, lambda ev: EventKind.COMPLETED in kinds(ev, 0), timeout=5.0)
    result = next(e for e in events if e.kind == EventKind.RESULT)
    assert wait_gone([result.metrics["pid"], result.metrics["child"]], backend)


# A child that leaves the process group (setsid) and keeps the trial's stdout open.
SETSID = """\
import os, subprocess, sys, time
from hpo_core.report import get_config, report
child = subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(60)"])
report(pid=os.getpid(), child=child.pid)
if not get_config().get("exit_now"):
    time.sleep(60)
"""


def test_setsid_children_are_ended_on_stop_and_close(tmp_path, backend_factory):
    backend = backend_factory(write(tmp_path, "setsid.py", SETSID), stop_grace_period=0.5)
    backend.start(Trial(0, {}))
    backend.start(Trial(1, {}))
    events = collect(backend, lambda ev: len(ev) == 2)
    pids = {e.trial_id: (e.metrics["pid"], e.metrics["child"]) for e in events}
    records = tmp_path / "trials" / "0" / "processes"
    assert len(list(records.glob("*.json"))) == 1
    backend.stop(0)
    assert wait_gone(pids[0], backend, timeout=2.0)
    collect(backend, lambda _: not list(records.glob("*.json")), timeout=2.0)  # tree gone
    backend.close()
    assert wait_gone(pids[1], timeout=1.0)
    assert list((tmp_path / "trials" / "1" / "processes").glob("*.json")) == []


def test_a_child_holding_stdout_does_not_keep_a_finished_trial_running(tmp_path,
                                                                       backend_factory):
    backend = backend_factory(write(tmp_path, "setsid.py", SETSID), timeout=30.0)
    started = time.monotonic()
    backend.start(Trial(0, {"exit_now": True}))
    events = collect(backend, lambda ev: EventKind.COMPLETED in kinds(ev, 0), timeout=10.0)
    assert time.monotonic() - started < 6.0  # the main process exit ends it, not a timeout
    assert kinds(events, 0) == [EventKind.RESULT, EventKind.COMPLETED]
    assert wait_gone([events[0].metrics["child"]], backend)


def test_output_that_cannot_be_written_fails_the_trial_with_the_reason(tmp_path,
                                                                       backend_factory):
    folder = tmp_path / "trials" / "0"
    folder.mkdir(parents=True)
    (folder / "stdout").symlink_to("/dev/full")  # every write: ENOSPC, as on a full disk
    backend = backend_factory(write(tmp_path, "forks.py", FORKS))
    backend.start(Trial(0, {}))
    events = collect(backend, lambda ev: EventKind.FAILED in kinds(ev, 0), timeout=10.0)
    failed = events[-1]
    assert "No space left on device" in failed.reason and "stdout" in failed.reason
    collect(backend, lambda _: not list((folder / "processes").glob("*.json")), timeout=5.0)


def test_close_kills_everything(tmp_path):
    backend = LocalBackend(str(write(tmp_path, "forks.py", FORKS)), gpus=None,
                           stop_grace_period=1.0)
    backend.set_trial_root(tmp_path / "trials")
    backend.start(Trial(0, {}))
    backend.start(Trial(1, {"ignore_term": True}))
    events = collect(backend, lambda ev: len(ev) == 2)
    started = time.monotonic()
    backend.close()
    assert time.monotonic() - started < 3.0
    assert wait_gone([p for e in events for p in (e.metrics["pid"], e.metrics["child"])],
                     timeout=1.0)


def test_pause_then_resume_waits_for_the_old_process(tmp_path, backend_factory):
    script = write(tmp_path, "slow_exit.py", """\
        import os, signal, sys, time
        from hpo_core.report import load_checkpoint, report, save_checkpoint
        def on_term(*_):
            time.sleep(0.3)  # a slow save on SIGTERM
            save_checkpoint({"saved_by": os.getpid()})
            report(late=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        report(pid=os.getpid(), loaded=load_checkpoint())
        time.sleep(60)
        """)
    backend = backend_factory(script)
    trial = Trial(0, {"lr": 0.1})
    backend.start(trial)
    first = collect(backend, lambda ev: len(ev) == 1)[0].metrics
    backend.pause(0)
    trial.config = {"lr": 0.2}  # PBT may change the config of a paused trial
    backend.resume(trial)
    events = collect(backend, lambda ev: len(ev) >= 1)
    assert [e.kind for e in events] == [EventKind.RESULT]
    second = events[0].metrics
    assert second["pid"] != first["pid"]
    assert second["loaded"] == {"saved_by": first["pid"]}  # launched after the old run saved
    assert json.loads((tmp_path / "trials" / "0" / "config.json").read_text()) == {"lr": 0.2}


def test_hyperparameters_arrive_intact(tmp_path, backend_factory):
    script = write(tmp_path, "echo.py", """\
        import json, os, sys
        from hpo_core.report import get_config, report
        report(argv=sys.argv[1:], config=get_config(),
               env={k: v for k, v in os.environ.items() if k.startswith(("TUNESMITH_", "EXTRA"))})
        """)
    weird = "a b; rm -rf / && echo 'single' \"double\" $HOME `id` | cat > x"
    config = {"text": weird, "dash": "-rf", "n": 3, "digits": "007", "d": {"a": [1, 2]},
              "flag": False}
    backend = backend_factory(script, env={"EXTRA": "yes"})
    backend.start(Trial(5, config))
    metrics = collect(backend, lambda ev: len(ev) >= 1)[0].metrics
    assert metrics["argv"] == ["--text", weird, "--dash=-rf", "--n", "3", "--digits", "007",
                               "--d", '{"a": [1, 2]}', "--flag", "false"]
    assert metrics["config"] == config
    folder = tmp_path / "trials" / "5"
    token = metrics["env"].pop("TUNESMITH_PROCESS_TOKEN")  # how its processes are found
    assert token.startswith(processes.session_id() + ".")
    fd, inode = metrics["env"].pop("TUNESMITH_REPORT_ACK").split(":")  # the report acks' pipe
    assert int(fd) > 2 and int(inode) > 0
    assert metrics["env"] == {"TUNESMITH_TRIAL_ID": "5", "EXTRA": "yes",
                              "TUNESMITH_CONFIG": str(folder / "config.json"),
                              "TUNESMITH_CHECKPOINT_DIR": str(folder / "checkpoint")}
    assert not (tmp_path / "x").exists()


def test_checkpoint_from_copies_another_trials_checkpoint(tmp_path, backend_factory):
    script = write(tmp_path, "pbt.py", """\
        from hpo_core.report import get_config, load_checkpoint, report, save_checkpoint
        seen = load_checkpoint()
        save_checkpoint({"weights": get_config()["w"]})
        report(seen=seen)
        """)
    backend = backend_factory(script)
    backend.start(Trial(0, {"w": 42}))
    collect(backend, lambda ev: EventKind.COMPLETED in kinds(ev, 0))
    (tmp_path / "trials" / "0" / "checkpoint" / ".checkpoint.json.123.tmp").write_text("partial")
    backend.start(Trial(1, {"w": 7}, checkpoint_from=0))
    events = collect(backend, lambda ev: EventKind.COMPLETED in kinds(ev, 1))
    assert events[0].metrics == {"seen": {"weights": 42}}
    assert not (tmp_path / "trials" / "1" / "checkpoint" / ".checkpoint.json.123.tmp").exists()
    assert json.loads((tmp_path / "trials/0/checkpoint/checkpoint.json").read_text()) == {
        "weights": 42}


def test_a_copy_of_a_checkpoint_that_trained_to_the_end_completes_without_a_report(
        tmp_path, backend_factory):
    """PBT with a script that does not wait for its reports to be seen (Syne Tune's reporter):
    the parent's checkpoint may be at the end when the child copies it; the child has nothing
    left to train, exits 0 without a report, and completed (it did not fail)."""
    script = write(tmp_path, "epochs.py", """\
        from hpo_core.report import get_config, load_checkpoint, report, save_checkpoint
        first = (load_checkpoint() or {"epoch": 0})["epoch"] + 1
        for epoch in range(first, get_config()["epochs"] + 1):
            save_checkpoint({"epoch": epoch})
            report(epoch=epoch)
        """)
    backend = backend_factory(script)
    backend.start(Trial(0, {"epochs": 2}))
    collect(backend, lambda ev: EventKind.COMPLETED in kinds(ev, 0))
    backend.start(Trial(1, {"epochs": 2}, checkpoint_from=0))
    backend.start(Trial(2, {"epochs": 0}))  # a fresh trial that ends without a report fails
    events = collect(backend, lambda ev: {1, 2} <= {e.trial_id for e in ev})
    assert [(e.kind, e.trial_id) for e in events] in (
        [(EventKind.COMPLETED, 1), (EventKind.FAILED, 2)],
        [(EventKind.FAILED, 2), (EventKind.COMPLETED, 1)])
    assert "exited without reporting" in next(e.reason for e in events if e.trial_id == 2)


def test_syne_tune_scripts_run_unchanged(tmp_path, backend_factory):
    script = write(tmp_path, "st_train.py", """\
        import argparse, json, os, time
        parser = argparse.ArgumentParser()
        parser.add_argument("--lr", type=float)
        parser.add_argument("--epochs", type=int)
        parser.add_argument("--st_checkpoint_dir", type=str)
        args, _ = parser.parse_known_args()
        os.makedirs(args.st_checkpoint_dir, exist_ok=True)
        open(os.path.join(args.st_checkpoint_dir, "ckpt"), "w").write("1")
        for i in range(args.epochs):  # what syne_tune.Reporter prints
            print("[tune-metric]: " + json.dumps({"epoch": i + 1, "acc": args.lr * (i + 1),
                  "st_worker_timestamp": time.time(), "st_worker_time": 0.01, "st_worker_iter": i}),
                  flush=True)
        """)
    backend = backend_factory(script, syne_tune_compat=True)
    backend.start(Trial(0, {"lr": 0.25, "epochs": 2}))
    events = collect(backend, lambda ev: EventKind.COMPLETED in kinds(ev, 0))
    results = [e.metrics for e in events if e.kind == EventKind.RESULT]
    assert [(m["epoch"], m["acc"], m["st_worker_iter"]) for m in results] == [(1, 0.25, 0),
                                                                                (2, 0.5, 1)]
    assert (tmp_path / "trials" / "0" / "checkpoint" / "ckpt").read_text() == "1"


def test_faults_fail_the_trial_and_the_experiment_goes_on(tmp_path):
    modes = ["ok", "exit3", "crash", "segv", "nan", "inf", "garbage", "garbage_only", "silent",
             "hang"]
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    space = {"mode": {"type": "choice", "categories": modes}}
    scheduler = build_scheduler("random", space, "loss", "min", seed=0,
                                options={"points_to_evaluate": [{"mode": m} for m in modes]})
    backend = LocalBackend(str(write(tmp_path, "faults.py", FAULTS)), gpus=None, timeout=1.0,
                           env={"PID_DIR": str(pid_dir)})
    tuner = Tuner(scheduler, backend, StoppingCriterion(max_trials_started=len(modes)),
                  n_workers=3, store=ExperimentStore(tmp_path / "exp", "faults"))
    result = tuner.run()
    by_mode = {t.config["mode"]: t for t in tuner.trials.values()}
    assert by_mode["ok"].status == by_mode["garbage"].status == TrialStatus.COMPLETED
    assert by_mode["garbage"].last_result == {"loss": 0.5}
    expected = {
        "exit3": ["exited with code 3", "giving up: disk full"],
        "crash": ["exited with code 1", "RuntimeError: boom before reporting"],
        "segv": ["killed by signal SIGSEGV"],
        "nan": ["non-finite loss: nan"],
        "inf": ["non-finite loss: inf"],
        "garbage_only": ["exited without reporting (2 malformed report lines skipped)"],
        "silent": ["exited without reporting"],
        "hang": ["timed out after 1s"],
    }
    assert_failed_with(by_mode, expected)
    assert result.best_value == pytest.approx(0.1)
    pids = [int(p.read_text()) for p in pid_dir.iterdir()]
    assert len(pids) == len(modes) and wait_gone(pids)
    assert not math.isnan(result.best_value)


def test_too_many_failures_end_the_experiment(tmp_path):
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    scheduler = build_scheduler("random", {"mode": "crash", "x": {"type": "uniform", "lower": 0,
                                                                    "upper": 1}}, "loss")
    backend = LocalBackend(str(write(tmp_path, "faults.py", FAULTS)), gpus=None,
                           env={"PID_DIR": str(pid_dir)})
    tuner = Tuner(scheduler, backend, StoppingCriterion(max_trials_started=20), n_workers=2,
                  max_failures=3)
    # the two trials running when the third failure came in may fail in the same poll
    with pytest.raises(TooManyFailuresError,
                       match=r"(?s)[34] trials failed \(max_failures=3\).*boom before reporting"):
        tuner.run()
    assert wait_gone([int(p.read_text()) for p in pid_dir.iterdir()])
    assert backend.trial_root is not None and not backend.trial_root.exists()  # made for
    # want of a store, removed at the end


def test_entry_point_forms_and_option_errors(tmp_path, backend_factory):
    script = write(tmp_path, "args.py", """\
        import sys
        from hpo_core.report import report
        report(argv=sys.argv[1:])
        """)
    for entry in ([sys.executable, "-u", str(script), "--fixed", "1"],
                  f"'{sys.executable}' {script} --fixed 1", f"{script} --fixed 1"):
        backend = backend_factory(entry)
        backend.start(Trial(0, {"x": 2}))
        events = collect(backend, lambda ev: EventKind.COMPLETED in kinds(ev, 0))
        assert events[0].metrics["argv"] == ["--fixed", "1", "--x", "2"]
    with pytest.raises(ValueError, match="backend_options.python: no such executable"):
        backend_factory(script, python=str(tmp_path / "no-such-python"))
    gone = tmp_path / "gone-python"  # there when the backend was made, not at the launch
    gone.symlink_to(sys.executable)
    broken = backend_factory(script, python=str(gone))
    gone.unlink()
    broken.start(Trial(1, {}))
    events = collect(broken, lambda ev: len(ev) == 1)
    assert events[0].kind == EventKind.FAILED and "could not start" in events[0].reason
    with pytest.raises(ValueError, match=r"backend_options.entry_point: no such file "
                                         r"'missing.py' \(relative to /"):
        LocalBackend("missing.py")
    with pytest.raises(ValueError, match=r"backend_options.entry_point: no such file "
                                         r"'/nonexistent/train.py'$"):
        LocalBackend("/nonexistent/train.py")
    with pytest.raises(ValueError, match="backend_options.entry_point: no such executable file "
                                         "'/nonexistent/dir/'"):  # a path: not looked up on PATH
        LocalBackend("/nonexistent/dir/", gpus=None)
    with pytest.raises(ValueError, match="backend_options.entry_point: command not found on "
                                         "PATH: 'nope-xyz'"):
        LocalBackend("nope-xyz --flag")
    with pytest.raises(ValueError, match="backend_options.timeout"):
        LocalBackend(str(script), timeout=-1)
    with pytest.raises(ValueError, match="backend_options.gpus"):
        LocalBackend(str(script), gpus=3.5)


def test_built_from_a_spec(tmp_path):
    from backends.factory import build_backend

    script = write(tmp_path, "epochs.py", EPOCHS)
    spec = ExperimentSpec(name="local-spec", metric="loss", backend="local",
                          config_space={"x": 0.5}, stop={"max_trials_started": 1},
                          backend_options={"entry_point": str(script), "gpus": None,
                                           "timeout": 30, "env": {"A": "1"}})
    backend = build_backend(spec)
    assert isinstance(backend, LocalBackend)
    assert backend.timeout == 30.0 and backend.env == {"A": "1"}


def test_a_resumed_experiment_first_ends_what_a_killed_session_left(tmp_path):
    """A trial process (here a stand-in carrying its token) whose tuner died: its record names
    it, and the next session's `set_trial_root` ends it before launching anything."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_create_time = psutil.Process(dead.pid).create_time()
    dead.wait()  # the killed tuner
    token = "deadbeef.0"
    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                            env={**os.environ, processes.TOKEN_ENV: token})
    try:
        record = processes.ProcessRecord(left.pid, psutil.Process(left.pid).create_time(),
                                         left.pid, processes._state.host, token, dead.pid,
                                         dead_create_time)
        record.write(tmp_path / "exp" / "trials" / "4" / "processes" / f"{token}.json")
        other = LocalBackend([sys.executable, "-c", "pass"], gpus=None)
        other.set_trial_root(tmp_path / "other")  # another experiment: not its records
        assert left.poll() is None
        backend = LocalBackend([sys.executable, "-c", "pass"], gpus=None)
        backend.set_trial_root(tmp_path / "exp" / "trials")
        left.wait(timeout=5)  # ended (reaped by reconcile's wait, so no exit status here)
        assert list((tmp_path / "exp" / "trials").glob("*/processes/*")) == []
    finally:
        left.kill()
        left.wait()


# Every rank of a distributed launch runs it (no checkpoint: ranks of a real job sync on one).
RANKED = """\
import os
from hpo_core.report import get_config, report
config = get_config()
for epoch in range(1, config["epochs"] + 1):
    report(epoch=epoch, loss=config["x"] / epoch, rank=int(os.environ.get("RANK", "0")))
"""

LAUNCHER = """\
import os, subprocess, sys
worker = sys.argv[1]
procs = [subprocess.Popen([sys.executable, worker, *sys.argv[2:]],
                          env={**os.environ, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2"})
         for r in range(2)]
sys.exit(max(p.wait() for p in procs))
"""


def test_a_distributed_launch_reports_once_per_epoch(tmp_path, backend_factory, monkeypatch):
    """Like torchrun: every rank runs the script, rank 0 alone reports; and the backend does not
    pass its own RANK on (here the test process claims rank 1 of some outer job)."""
    monkeypatch.setenv("RANK", "1")
    epochs = write(tmp_path, "ranked.py", RANKED)
    launcher = write(tmp_path, "launch.py", LAUNCHER)
    distributed = backend_factory([sys.executable, str(launcher), str(epochs)])
    distributed.start(Trial(0, {"x": 0.5, "epochs": 3}))
    single = backend_factory(epochs)
    single.set_trial_root(tmp_path / "single")
    single.start(Trial(1, {"x": 0.5, "epochs": 2}))
    events = collect(distributed, lambda ev: EventKind.COMPLETED in kinds(ev, 0))
    results = [e.metrics for e in events if e.kind == EventKind.RESULT]
    assert [(m["epoch"], m["rank"]) for m in results] == [(1, 0), (2, 0), (3, 0)]
    events = collect(single, lambda ev: EventKind.COMPLETED in kinds(ev, 1))
    results = [e.metrics for e in events if e.kind == EventKind.RESULT]
    assert [(m["epoch"], m["rank"]) for m in results] == [(1, 0), (2, 0)]


# Takes a while to exit after SIGTERM (saving a checkpoint, say); records when it ran.
SLOW_EXIT = """\
import os, signal, sys, time
from pathlib import Path
from hpo_core.report import report
folder = Path(os.environ["TUNESMITH_CHECKPOINT_DIR"])
folder.mkdir(exist_ok=True)  # the folder exists only once a trial saves (or is copied) into it

def on_term(*_):
    time.sleep(0.8)
    (folder / "exited").write_text(repr(time.time()))
    sys.exit(0)

signal.signal(signal.SIGTERM, on_term)
(folder / "started").write_text(repr(time.time()))
report(epoch=1, loss=0.5, gpus=os.environ["CUDA_VISIBLE_DEVICES"])
time.sleep(60)
"""


def test_a_new_trial_waits_for_the_gpu_of_a_stopped_trial(tmp_path, caplog):
    """One GPU slot: a trial started right after another was stopped launches once the stopped
    one has exited, not beside it. With more trials than slots on purpose, they share."""
    backend = LocalBackend(str(write(tmp_path, "slow_exit.py", SLOW_EXIT)), gpus=["0"],
                           stop_grace_period=5.0)
    backend.set_trial_root(tmp_path / "trials")
    try:
        backend.start(Trial(0, {}))
        collect(backend, lambda ev: EventKind.RESULT in kinds(ev, 0))
        backend.stop(0)
        backend.start(Trial(1, {}))
        events = collect(backend, lambda ev: EventKind.RESULT in kinds(ev, 1))
        assert [e.metrics["gpus"] for e in events if e.kind == EventKind.RESULT] == ["0"]
        exited = float((tmp_path / "trials" / "0" / "checkpoint" / "exited").read_text())
        started = float((tmp_path / "trials" / "1" / "checkpoint" / "started").read_text())
        assert started >= exited
        assert not any("shared" in r.getMessage() for r in caplog.records)

        backend.start(Trial(2, {}))  # a second trial on the one slot: shared at once, on purpose
        collect(backend, lambda ev: EventKind.RESULT in kinds(ev, 2))
        assert any("shared" in r.getMessage() for r in caplog.records)
    finally:
        backend.close()



@pytest.mark.parametrize("cut", [0, 1, 9, 20, 21])
def test_a_failure_reason_never_holds_part_of_a_secret_the_stderr_window_cuts(tmp_path, cut):
    from backends.process_trials import STDERR_TAIL_BYTES, stderr_tail
    from hpo_core import secrets

    secret = "zqxFAKESECRETvalue9137"  # resolved for a trial: known to this process
    secrets.remember([secret])
    stderr = tmp_path / "stderr"
    # the window of the last STDERR_TAIL_BYTES starts `cut` characters into the secret
    stderr.write_text(secret + "B" * (STDERR_TAIL_BYTES - len(secret) + cut - 1) + "\n")
    tail = stderr_tail(stderr, 0)
    assert not any(secret[i:i + 4] in tail for i in range(len(secret) - 3)), tail[:40]
