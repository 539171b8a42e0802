"""A function-trial worker: a process that runs trials of one Python objective, one at a time.

Started by `backends.functions.FunctionBackend` as `python -m backends.function_worker IN OUT`
with `CUDA_VISIBLE_DEVICES` already in its environment, so the user's code sees only its GPUs
from its first import. It speaks JSON lines: on fd IN it gets the objective once, then one
trial at a time (`{"run", "trial_id", "config", "trial_dir", "checkpoint_dir", "config_path"}`);
on fd OUT it sends `{"run": n, "msg": {"started": true}}` when it takes a trial up,
`{"run": n, "report": {...}}` for each `report(...)` as it happens (then waits for
`{"ack": n}`: see `_Channel`) and
`{"run": n, "msg": {"end": "completed" | "failed", "reason": ...}}` when the trial ends. During a trial,
fds 1 and 2 are the trial's `stdout` and `stderr` files, and `TUNESMITH_*` variables are set as
for a script, so `get_config()`, `load_checkpoint()` and `save_checkpoint()` work unchanged.

A function trial ends when the function returns: None after reports, a dict (reported as the
last report) or a number (reported as the experiment's metric). A class trial (`setup(config)`,
`step() -> metrics`, `save_checkpoint(dir)`, `load_checkpoint(dir)`) steps until `step()`
returns None or metrics with `done=True`, or until the tuner stops it; after each step it saves
its checkpoint, then reports, so a pause at any report resumes after that step. An exception
or `sys.exit(nonzero)` fails the trial with its traceback; the worker goes on to the next
trial. Kept to the standard library: every worker pays for its imports.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

from backends.objectives import Objective, load
from hpo_core import report as reporting

STEP_FILE = ".tunesmith-steps.json"
ITERATION = "training_iteration"
TRACEBACK_CHARS = 8000


class _Channel:
    """JSON lines both ways. A report waits for the tuner's acknowledgement, sent once the
    tuner has acted on it, so a pause or stop decided at a report ends the trial right there:
    the function never trains (and checkpoints) past a report the tuner paused it at.
    Thread-safe: user code may report from any thread."""

    def __init__(self, fd_in: int, fd_out: int):
        for fd in (fd_in, fd_out):
            os.set_inheritable(fd, False)  # not passed on to the user's subprocesses
        self.stream = open(fd_in, "rb", buffering=0)  # noqa: SIM115 (open for the process's life)
        self.buffer = b""
        self.fd = fd_out
        self.lock = threading.Lock()
        self.run = 0

    def receive(self) -> dict[str, Any] | None:
        """The next message from the tuner (None: it closed our input)."""
        while b"\n" not in self.buffer:
            chunk = self.stream.read(1 << 16)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def next_trial(self) -> dict[str, Any] | None:
        """The next trial (acknowledgements left over from an earlier one are skipped)."""
        while True:
            message = self.receive()
            if message is None or "ack" not in message:
                return message

    def send_json_text(self, key: str, text: str) -> None:
        data = f'{{"run": {self.run}, "{key}": {text}}}\n'.encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def send(self, **message: object) -> None:
        with self.lock:
            self.send_json_text("msg", json.dumps(message, default=str, allow_nan=True))

    def report(self, text: str) -> None:
        with self.lock:
            self.send_json_text("report", text)
            if reporting.stop_requested():  # told to stop after this report (a drain)
                reporting.stop_now()
            while True:
                message = self.receive()
                if message is None:
                    os._exit(0)  # the tuner is gone: nothing is left to report to
                if message.get("ack") == self.run:
                    return


def main(argv: list[str]) -> int:
    channel = _Channel(int(argv[0]), int(argv[1]))
    reporting._sink = channel.report
    first = channel.next_trial()
    if first is None:
        return 0
    metric = first.get("metric")
    objective = _load_objective(first["objective"])
    reason: str | None
    while (trial := channel.next_trial()) is not None:
        channel.run = trial["run"]
        channel.send(started=True)  # the trial's time (and timeout) counts from here
        with _TrialContext(trial):
            if isinstance(objective, tuple):  # it could not be loaded
                what, trace = objective
                print(trace, file=sys.stderr, flush=True)
                status, reason = "failed", f"{what}: {_last_line(trace)}\n" \
                    + trace[-TRACEBACK_CHARS:]
            else:
                status, reason = _run(objective, trial, metric)
            _free_gpu_cache()
        channel.send(end=status, reason=reason)
    return 0


def _free_gpu_cache() -> None:
    """Give back the GPU memory torch's caching allocator keeps after a trial, so an idle
    worker holds no more than its CUDA context."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    try:
        if torch.cuda.is_initialized():
            import gc

            gc.collect()
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - never fail a trial over the cache
        pass


class _TrialContext:
    """The trial's stdout/stderr files on fds 1 and 2 and its TUNESMITH_* variables."""

    def __init__(self, trial: dict[str, Any]):
        self.trial = trial

    def __enter__(self) -> None:
        folder = self.trial["trial_dir"]
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = [os.dup(1), os.dup(2)]
        for fd, name in ((1, "stdout"), (2, "stderr")):
            target = os.open(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                             0o644)
            os.dup2(target, fd)
            os.close(target)
        os.environ[reporting.CONFIG_ENV] = self.trial["config_path"]
        os.environ[reporting.CHECKPOINT_ENV] = self.trial["checkpoint_dir"]
        os.environ[reporting.TRIAL_ID_ENV] = str(self.trial["trial_id"])
        reporting.new_trial()

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self.saved, strict=True):
            os.dup2(saved, fd)
            os.close(saved)


def _load_objective(data: dict[str, Any]) -> Callable[[dict[str, Any]], Any] | tuple[str, str]:
    """The objective, or (what failed, its traceback) to report with every trial."""
    try:
        return load(Objective.from_payload(data))
    except BaseException:  # noqa: BLE001 - reported with the trials
        return f"cannot load objective {data['name']}", traceback.format_exc()


def _run(objective: Callable[[dict[str, Any]], Any], trial: dict[str, Any], metric: str | None
         ) -> tuple[str, str | None]:
    config = dict(trial["config"])
    try:
        if isinstance(objective, type):
            _run_class(objective, config, trial["checkpoint_dir"])
            return "completed", None
        result = objective(config)
        _report_returned(result, metric)
        return "completed", None
    except SystemExit as err:
        if err.code in (None, 0):
            return "completed", None
        text = _user_traceback(err)
        return "failed", f"called sys.exit({err.code!r})\n{text}"
    except BaseException as err:  # noqa: BLE001 - any error fails this trial only
        text = _user_traceback(err)
        return "failed", f"raised {type(err).__name__}: {err}\n{text}"


def _user_traceback(err: BaseException) -> str:
    """The traceback from the user's code on (this module's frame left out), also printed to
    the trial's stderr."""
    tb = err.__traceback__.tb_next if err.__traceback__ is not None else None
    text = "".join(traceback.format_exception(type(err), err, tb))
    print(text, file=sys.stderr, end="", flush=True)
    return text[-TRACEBACK_CHARS:]


def _report_returned(result: object, metric: str | None) -> None:
    if result is None:
        return
    if isinstance(result, dict):
        reporting.report(**result)
        return
    if (isinstance(result, int | float) and not isinstance(result, bool)) or hasattr(result, "item"):
        if not metric:
            raise TypeError(f"the objective returned {result!r}, but the experiment has several "
                            "metrics: return a dict of metrics or call report(...)")
        reporting.report(**{metric: result})
        return
    raise TypeError(f"the objective returned a {type(result).__name__}; return None (after "
                    "report(...)), a number or a dict of metrics")


def _run_class(cls: type, config: dict[str, Any], checkpoint_dir: str) -> None:
    trainable = cls()
    trainable.setup(config)
    steps_path = os.path.join(checkpoint_dir, STEP_FILE)
    iteration = 0
    if os.path.exists(steps_path):
        with open(steps_path) as f:
            iteration = int(json.load(f)["iteration"])
        if hasattr(trainable, "load_checkpoint"):
            trainable.load_checkpoint(checkpoint_dir)
    while True:
        metrics = trainable.step()
        if metrics is None:
            return
        iteration += 1
        metrics = dict(metrics)
        done = bool(metrics.pop("done", False))
        metrics.setdefault(ITERATION, iteration)
        if hasattr(trainable, "save_checkpoint"):
            os.makedirs(checkpoint_dir, exist_ok=True)  # created when the first one is saved
            trainable.save_checkpoint(checkpoint_dir)
            reporting.save_checkpoint({"iteration": iteration}, STEP_FILE)
        reporting.report(**metrics)
        if done:
            return


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
