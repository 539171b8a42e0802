"""Function trials with real worker processes: ASHA pause/resume for a function and a class,
faults that fail one trial, stop and close leaving nothing, GPU pinning, worker reuse, and the
errors for objectives that cannot reach a worker."""

from __future__ import annotations

import functools
import os
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest
from trial_helpers import (
    SAVE_EVALUATE_REPORT,
    assert_failed_with,
    collect,
    drained_after_a_save,
    ended,
    fake_nvidia_smi,
    resumed_exactly,
    wait_gone,
    write,
)

from backends.factory import build_backend
from backends.functions import FunctionBackend
from backends.objectives import ObjectiveError, objective_from
from hpo_core.registry import build_scheduler
from hpo_core.spec import ExperimentSpec, SpecError
from hpo_core.stopping import StoppingCriterion
from hpo_core.store import ExperimentStore, load_experiment
from hpo_core.trial import EventKind, Trial, TrialStatus
from hpo_core.tuner import Tuner

OBJECTIVES = """\
import ctypes, math, os, sys, time
from hpo_core.report import load_checkpoint, report, save_checkpoint

IMPORTED_WITH = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")


def epochs(config):
    first = (load_checkpoint() or {"epoch": 0})["epoch"] + 1
    for epoch in range(first, config["epochs"] + 1):
        time.sleep(0.02)
        save_checkpoint({"epoch": epoch})
        report(epoch=epoch, loss=(config["x"] - 0.3) ** 2 + 1 / epoch, start=first)


class Epochs:
    def setup(self, config):
        self.config, self.epoch, self.first = config, 0, 1

    def step(self):
        self.epoch += 1
        time.sleep(0.02)
        return {"epoch": self.epoch, "start": self.first,
                "loss": (self.config["x"] - 0.3) ** 2 + 1 / self.epoch,
                "done": self.epoch >= self.config["epochs"]}

    def save_checkpoint(self, folder):
        with open(os.path.join(folder, "state"), "w") as f:
            f.write(str(self.epoch))

    def load_checkpoint(self, folder):
        with open(os.path.join(folder, "state")) as f:
            self.epoch = int(f.read())
        self.first = self.epoch + 1


def faults(config):
    mode = config["mode"]
    with open(os.path.join(os.environ["PID_DIR"], mode), "w") as f:
        f.write(str(os.getpid()))
    if mode == "ok":
        return {"loss": 0.1}
    if mode == "returns":
        return 0.2
    if mode == "crash":
        report(loss=0.9)
        raise RuntimeError("boom in the objective")
    if mode == "exit3":
        print("giving up: disk full", file=sys.stderr)
        sys.exit(3)
    if mode == "segv":
        ctypes.string_at(0)
    if mode == "oom":
        os.kill(os.getpid(), 9)  # what the OOM killer does
    if mode == "nan":
        report(loss=float("nan"))
        time.sleep(60)  # the tuner stops it
    if mode == "hang":
        time.sleep(60)
    # "silent": returns None without a report


def probe(config):
    report(epoch=1, loss=config["x"], pid=os.getpid(), imported_with=IMPORTED_WITH,
           cuda=os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
    time.sleep(config.get("hold", 0.3))


def sleeper(config):
    import subprocess
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    child = subprocess.Popen(sleep)
    escaped = subprocess.Popen(sleep, start_new_session=True)  # leaves the process group
    if "PID_DIR" in os.environ:
        with open(os.path.join(os.environ["PID_DIR"], str(os.getpid())), "w") as f:
            f.write(f"{os.getpid()} {child.pid} {escaped.pid}")
    report(epoch=1, loss=1.0, pid=os.getpid(), child=child.pid, escaped=escaped.pid)
    time.sleep(60)
"""

@pytest.fixture
def module(tmp_path, monkeypatch):
    """OBJECTIVES as `fn_objectives.py` in tmp_path, which is also the working directory (so
    `fn_objectives:name` entry points import it)."""
    monkeypatch.chdir(tmp_path)
    return write(tmp_path, "fn_objectives.py", OBJECTIVES)


@pytest.fixture
def make(tmp_path):
    made = []

    def factory(entry, **options):
        options.setdefault("gpus", None)
        options.setdefault("poll_interval", 0.01)
        backend = FunctionBackend(entry, **options)
        backend.set_trial_root(tmp_path / "trials")
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        backend.close()


def workers() -> list[psutil.Process]:
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "backends.function_worker" in proc.cmdline():
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.mark.parametrize("entry", ["fn_objectives:epochs", "fn_objectives:Epochs"])
def test_asha_promotion_pauses_and_resumes_from_checkpoints(module, tmp_path, entry):
    space = {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}, "epochs": 9}
    scheduler = build_scheduler("asha_promotion", space, "loss", "min", seed=1,
                                options={"max_t": 9, "grace_period": 1, "reduction_factor": 3})
    backend = FunctionBackend(entry, gpus=None, poll_interval=0.01)
    store = ExperimentStore(tmp_path / "exp", "asha")
    tuner = Tuner(scheduler, backend, StoppingCriterion(max_trials_started=9), n_workers=2,
                  store=store)
    tuner.run()
    frame = load_experiment(store.path).results
    assert resumed_exactly(frame) >= 3  # each resumed run went on from its checkpoint
    assert frame["epoch"].max() == 9
    assert any(t.status == TrialStatus.PAUSED for t in tuner.trials.values())
    assert workers() == []


def test_faults_fail_only_their_trial_with_the_reason(module, tmp_path):
    modes = ["crash", "ok", "exit3", "segv", "oom", "nan", "hang", "silent", "returns"]
    (tmp_path / "pids").mkdir()
    scheduler = build_scheduler("random", {"mode": {"type": "choice", "categories": modes}},
                                "loss", "min", seed=0,
                                options={"points_to_evaluate": [{"mode": m} for m in modes]})
    backend = FunctionBackend("fn_objectives:faults", metric="loss", gpus=None, timeout=2.5,
                              env={"PID_DIR": str(tmp_path / "pids")}, poll_interval=0.01)
    tuner = Tuner(scheduler, backend, StoppingCriterion(max_trials_started=len(modes)),
                  n_workers=2, store=ExperimentStore(tmp_path / "exp", "faults"))
    result = tuner.run()
    by_mode = {t.config["mode"]: t for t in tuner.trials.values()}
    assert by_mode["ok"].status == by_mode["returns"].status == TrialStatus.COMPLETED
    assert by_mode["returns"].last_result == {"loss": 0.2}  # a returned number is the metric
    expected = {
        "crash": ["raised RuntimeError: boom in the objective", "Traceback",
                  "fn_objectives.py", 'raise RuntimeError("boom in the objective")'],
        "exit3": ["called sys.exit(3)", "fn_objectives.py"],
        "segv": ["worker process killed by signal SIGSEGV"],
        "oom": ["worker process killed by signal SIGKILL"],
        "nan": ["non-finite loss: nan"],
        "hang": ["timed out after 2.5s"],
        "silent": ["returned without reporting"],
    }
    assert_failed_with(by_mode, expected)
    assert result.best_value == pytest.approx(0.1)
    stderr = (tmp_path / "exp" / "faults" / "trials" / str(by_mode["crash"].trial_id) / "stderr")
    assert "boom in the objective" in stderr.read_text()
    pids = [int(p.read_text()) for p in (tmp_path / "pids").iterdir()]
    assert len(pids) == len(modes) and wait_gone(pids)
    assert workers() == []


def test_stop_kills_the_worker_and_its_children_at_once(module, make):
    backend = make("fn_objectives:sleeper")
    backend.start(Trial(0, {}))
    backend.start(Trial(1, {}))
    events = collect(backend, lambda ev: len([e for e in ev if e.kind == EventKind.RESULT]) == 2)
    pids = {e.trial_id: (e.metrics["pid"], e.metrics["child"], e.metrics["escaped"])
            for e in events}
    # "at once": SIGKILL, not waiting for the objective (it sleeps 60 s) nor a grace period.
    # One bound from before stop() to the tree gone, loose enough for a loaded machine (the
    # kill scans the process table for the worker's token).
    started = time.monotonic()
    backend.stop(0)
    assert wait_gone(pids[0], timeout=10.0), time.monotonic() - started
    assert not wait_gone([pids[1][0]], timeout=0.2)  # the other trial runs on
    later = collect(backend, lambda _: True) + [e for _ in range(10) for e in backend.poll()]
    assert [e for e in later if e.trial_id == 0] == []
    backend.close()
    assert wait_gone(pids[1]) and workers() == []


def test_workers_are_reused_unless_asked_for_a_fresh_process(module, make):
    for reuse in (True, False):
        backend = make("fn_objectives:probe", reuse_workers=reuse)
        pids = []
        for tid in range(3):
            backend.start(Trial(tid, {"x": 0.5, "hold": 0.0}))
            events = collect(backend, ended(tid))
            pids += [e.metrics["pid"] for e in events if e.kind == EventKind.RESULT]
        assert len(set(pids)) == (1 if reuse else 3), pids
        backend.close()
    assert workers() == []


@pytest.fixture
def nvidia_smi(tmp_path, monkeypatch):
    return fake_nvidia_smi(tmp_path / "bin", monkeypatch)


def test_gpu_pinning_before_import_and_reuse_per_assignment(module, make, nvidia_smi):
    backend = make("fn_objectives:probe", gpus="auto")
    assert backend.default_n_workers() == 4
    for tid in range(4):
        backend.start(Trial(tid, {"x": 0.1 * tid}))
    events = collect(backend, ended(0, 1, 2, 3))
    first = {e.trial_id: e.metrics for e in events if e.kind == EventKind.RESULT}
    assert sorted(m["cuda"] for m in first.values()) == ["0", "1", "2", "3"]
    assert all(m["imported_with"] == m["cuda"] for m in first.values())
    for tid in range(4, 8):  # one at a time: each goes to the least busy GPU's worker
        backend.start(Trial(tid, {"x": 0.5, "hold": 0.0}))
        events += collect(backend, ended(tid))
    worker_gpu = {}
    for e in events:
        if e.kind == EventKind.RESULT:
            assert worker_gpu.setdefault(e.metrics["pid"], e.metrics["cuda"]) == e.metrics["cuda"]
            assert e.metrics["imported_with"] == e.metrics["cuda"]


def test_gpus_shared_when_asked(module, make):
    backend = make("fn_objectives:probe", gpus=["0"])
    backend.start(Trial(0, {"x": 0.1, "hold": 0.5}))
    backend.start(Trial(1, {"x": 0.2, "hold": 0.5}))  # more trials than slots: they share
    events = collect(backend, ended(0, 1))
    seen = [e.metrics for e in events if e.kind == EventKind.RESULT]
    assert [m["cuda"] for m in seen] == ["0", "0"] and seen[0]["pid"] != seen[1]["pid"]


def test_objectives_that_cannot_reach_a_worker_are_one_clear_error(module):
    lock = threading.Lock()

    def closure(config):
        with lock:
            return 1.0

    with pytest.raises(ObjectiveError, match=r"(?s)objective .*closure.*cannot be sent to a "
                                             r"trial worker.*define it at the top level"):
        objective_from(closure)
    with pytest.raises(ObjectiveError, match=r"objective .*<lambda>.*cannot be sent"):
        objective_from(lambda config: 1.0)
    with pytest.raises(ObjectiveError, match=r"partial.*cannot be sent.*lock"):
        objective_from(functools.partial(textwrap.dedent, lock))
    assert objective_from(functools.partial(textwrap.dedent)).pickled is not None
    assert objective_from(textwrap.dedent).entry == "textwrap:dedent"


def test_entry_point_errors_name_the_field(module):
    def spec(entry):
        return ExperimentSpec(name="e", metric="loss", backend="local",
                              config_space={"x": 1}, stop={"max_trials_started": 1},
                              backend_options={"entry_point": entry})

    cases = {
        "fn_objectives:nope": "fn_objectives.py defines no 'nope' at its top level",
        "missing_module:f": "no module named 'missing_module'",
        "missing.py:f": "no such file 'missing.py'",
    }
    for entry, message in cases.items():
        with pytest.raises(SpecError, match=f"spec.backend_options.entry_point: .*{message}"):
            build_backend(spec(entry))
    backend = build_backend(spec(f"{Path('fn_objectives.py').resolve()}:epochs"))
    assert isinstance(backend, FunctionBackend) and backend.metric == "loss"
    with pytest.raises(SpecError, match="spec.backend_options.stop_grace_period: unknown option"):
        build_backend(ExperimentSpec(**{**spec("fn_objectives:epochs").to_dict(),
                                        "backend_options": {"entry_point": "fn_objectives:epochs",
                                                            "stop_grace_period": 1}}))


def test_a_missing_import_in_the_objective_fails_the_trial_with_its_traceback(tmp_path, make):
    path = tmp_path / "broken.py"
    path.write_text(textwrap.dedent("""\
        import not_a_module_anywhere

        def objective(config):
            pass
        """))
    backend = make(f"{path}:objective")
    backend.start(Trial(0, {}))
    events = collect(backend, ended(0))
    assert "ModuleNotFoundError: No module named 'not_a_module_anywhere'" in events[-1].reason


TUNER = """\
import sys
from backends.functions import FunctionBackend
from hpo_core.registry import build_scheduler
from hpo_core.stopping import StoppingCriterion
from hpo_core.tuner import Tuner

scheduler = build_scheduler("random", {"x": {"type": "uniform", "lower": 0, "upper": 1}}, "loss")
backend = FunctionBackend("fn_objectives:sleeper", gpus=None)
backend.set_trial_root(sys.argv[1])
Tuner(scheduler, backend, StoppingCriterion(max_trials_started=2), n_workers=2).run()
"""


def test_a_killed_tuner_leaves_no_worker_and_a_resumed_one_ends_what_was_left(module,
                                                                                tmp_path):
    import signal
    import subprocess
    import sys

    (tmp_path / "pids").mkdir()
    (tmp_path / "tuner.py").write_text(TUNER)
    env = {**os.environ, "PID_DIR": str(tmp_path / "pids"),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), str(tmp_path)])}
    tuner = subprocess.Popen([sys.executable, str(tmp_path / "tuner.py"), str(tmp_path / "trials")],
                             env=env, cwd=tmp_path)
    deadline = time.monotonic() + 30
    while len(list((tmp_path / "pids").iterdir())) < 2:
        assert time.monotonic() < deadline and tuner.poll() is None
        time.sleep(0.05)
    pids = [int(p) for f in (tmp_path / "pids").iterdir() for p in f.read_text().split()]
    assert list((tmp_path / "trials" / ".workers" / "processes").glob("*.json"))
    tuner.send_signal(signal.SIGKILL)
    tuner.wait()
    assert wait_gone(pids, timeout=10.0), [p for p in pids if psutil.pid_exists(p)]
    # what a later session finds of the killed one's records, it reconciles and removes
    backend = FunctionBackend("fn_objectives:sleeper", gpus=None)
    backend.set_trial_root(tmp_path / "trials")
    assert not list((tmp_path / "trials" / ".workers" / "processes").glob("*.json"))
    backend.close()


def test_a_trial_interrupted_between_its_save_and_its_report_reports_first(module, make,
                                                                           tmp_path,
                                                                           monkeypatch):
    """As for scripts: the drain's SIGTERM after the function saved epoch 1's checkpoint and
    before it reported it; the report is made, then the worker stops (before: killed at once,
    the epoch was never reported and the resume skipped it)."""
    saved = tmp_path / "saved"
    monkeypatch.setenv("SAVED", str(saved))
    write(tmp_path, "fn_save_evaluate.py", SAVE_EVALUATE_REPORT)
    events = drained_after_a_save(make("fn_save_evaluate:save_evaluate_report"), saved)
    assert [(e.kind, e.metrics) for e in events] == [(EventKind.RESULT, {"epoch": 1})]


def test_checkpoint_from_starts_a_trial_from_another_trials_checkpoint(module, make):
    backend = make("fn_objectives:epochs")
    backend.start(Trial(0, {"x": 0.5, "epochs": 3}))
    collect(backend, ended(0))
    backend.start(Trial(1, {"x": 0.5, "epochs": 5}, checkpoint_from=0))  # as PBT does
    events = collect(backend, ended(1))
    assert [(e.metrics["epoch"], e.metrics["start"]) for e in events
            if e.kind == EventKind.RESULT] == [(4, 4), (5, 4)]
    # a copy of a checkpoint that trained to the end leaves nothing to report: completed
    backend.start(Trial(2, {"x": 0.5, "epochs": 5}, checkpoint_from=1))
    assert [(e.kind, e.trial_id) for e in collect(backend, ended(2))] == [
        (EventKind.COMPLETED, 2)]
