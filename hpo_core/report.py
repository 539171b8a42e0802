"""The training-script side of tunesmith, and the parser of what scripts print.

In a training script::

    from hpo_core.report import get_config, report, load_checkpoint, save_checkpoint

    config = get_config()                     # from TUNESMITH_CONFIG and --name value arguments
    state = load_checkpoint() or {"epoch": 0} # resume after a pause
    for epoch in range(state["epoch"] + 1, config["epochs"] + 1):
        ...
        save_checkpoint({"epoch": epoch, ...})
        report(epoch=epoch, val_loss=loss)    # prints: [tunesmith]: {"epoch": 3, "val_loss": 0.41}

Under tunesmith's local backend, `report` waits until the tuner has acted on the report (a
byte on the pipe named by `TUNESMITH_REPORT_ACK`), so a trial the scheduler pauses there stops
at that report, and resumes from the checkpoint saved before it. A trial told to stop
(SIGTERM: the tuner was interrupted) after it saved a checkpoint and before it reported it
stops at that report instead, so the checkpoint's report is not lost (scripts, and function
trials in their workers). Under a distributed launcher
(`torchrun`, Accelerate, DeepSpeed), every rank runs the script and only rank 0 reports. Lines
in Syne Tune's format (``[tune-metric]: {...}``) are parsed too, so Syne Tune scripts run
unchanged. Every trial pays for importing this module, so it imports only
`json`, `math`, `os` and `sys` up front (about 1 ms); the rest is imported where it is used.
"""

from __future__ import annotations

import json
import math
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs ~2 ms per trial
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from pathlib import Path
    from typing import Any

PREFIX = "[tunesmith]:"
SYNE_TUNE_PREFIX = "[tune-metric]:"
PREFIXES = (PREFIX, SYNE_TUNE_PREFIX)
CONFIG_ENV = "TUNESMITH_CONFIG"
CHECKPOINT_ENV = "TUNESMITH_CHECKPOINT_DIR"
TRIAL_ID_ENV = "TUNESMITH_TRIAL_ID"
#: "<fd>:<inode>": the pipe on which the backend acknowledges each report (see `report`)
REPORT_ACK_ENV = "TUNESMITH_REPORT_ACK"
#: Seconds a report waits for its acknowledgment before the script stops waiting for them
ACK_PATIENCE = 60.0
#: Set by distributed launchers in each process they start; a backend never passes its own on.
RANK_ENV = "RANK"
DISTRIBUTED_ENV = (RANK_ENV, "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK")
#: Longest output line the parser keeps; longer lines are dropped (Syne Tune caps reports at 50 kB).
MAX_LINE_CHARS = 1 << 20


def _plain(value: Any) -> Any:
    """numpy / torch scalars to Python numbers without importing either."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    return str(value)


def format_report(metrics: Mapping[str, Any]) -> str:
    """The line `report(**metrics)` prints."""
    return f"{PREFIX} {json.dumps(dict(metrics), default=_plain, allow_nan=True)}"


#: Where reports go besides stdout: a function-trial worker sets it to send each report's JSON
#: text to the tuner at once (`backends.function_worker`); None in a script.
_sink: Callable[[str], None] | None = None
#: The acknowledgment pipe's fd in a script (-1: none, or no longer read), found at the first
#: report by the process that makes it.
_ack: tuple[int, int] | None = None  # (pid, fd)


def report(_metrics: Mapping[str, Any] | None = None, /, **metrics: Any) -> None:
    """Report metrics of the current trial (one JSON line on stdout, flushed at once).

    `report(epoch=3, loss=0.2)`; a mapping works too, as Ray Tune's `tune.report({...})` takes.

    In a distributed launch (torchrun, Accelerate, DeepSpeed: they set `RANK`), only rank 0
    reports, so every rank may call it. In a function trial the report also goes straight to
    the tuner. In a script run by tunesmith's local backend (also on Dask workers), it returns
    once the backend has acknowledged the report (see the module docstring)."""
    if not is_rank_zero():
        return
    if _metrics is not None:
        metrics = {**_metrics, **metrics}
    global _unreported_save
    line = format_report(metrics)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    _unreported_save = False
    if _sink is not None:
        _sink(line[len(PREFIX) + 1:])
    elif _stop_requested:
        stop_now()
    elif len(line) < MAX_LINE_CHARS:  # a longer line is dropped by the backend's parser
        _await_ack()


#: a checkpoint was saved since the last report; SIGTERM then waits for the report
_unreported_save = False
_stop_requested = False


def _report_before_stopping() -> None:
    """Once per process, in a trial under tunesmith's local backend (a script, or a function
    trial's worker) that leaves SIGTERM to its default: a SIGTERM that comes between
    `save_checkpoint` and the next `report` ends the trial at that report (else at once, as
    by default)."""
    global _sigterm_deferred
    if _sigterm_deferred or not is_rank_zero() or (_sink is None and _ack_pipe() < 0):
        return
    import signal
    import threading

    _sigterm_deferred = True
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return  # the script handles SIGTERM itself

    def on_sigterm(signum: int, frame: Any) -> None:
        global _stop_requested
        if _unreported_save:
            _stop_requested = True  # `report` stops the trial once its report is out
        else:
            stop_now()

    signal.signal(signal.SIGTERM, on_sigterm)


_sigterm_deferred = False


def new_trial() -> None:
    """A worker process starts its next trial: no checkpoint of it awaits a report."""
    global _unreported_save
    _unreported_save = False


def stop_requested() -> bool:
    """Whether a SIGTERM waits for the report just made (then `stop_now`)."""
    return _stop_requested


def stop_now() -> None:
    """End this process by SIGTERM's default action, as if no handler had been installed."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _await_ack() -> None:
    """Wait until the backend has acknowledged the report just printed (a script's). Without an
    acknowledgment in ACK_PATIENCE seconds (its line did not reach the backend), or once the
    backend is gone, the script goes on without waiting any more."""
    global _ack
    if _ack is None or _ack[0] != os.getpid():  # first report here (a fork finds its own)
        _ack = (os.getpid(), _ack_pipe())
    fd = _ack[1]
    if fd < 0:
        return
    import select

    try:
        ready = select.select([fd], [], [], ACK_PATIENCE)[0]
        if ready and os.read(fd, 1):
            return
    except OSError:
        ready = [fd]
    if not ready:
        print(f"tunesmith: no acknowledgment of a report in {ACK_PATIENCE:g}s; reporting "
              "without waiting from now on", file=sys.stderr, flush=True)
    _ack = (_ack[0], -1)


def _ack_pipe() -> int:
    """The acknowledgment pipe's fd, or -1: none was given, it is not this process's (a
    launcher closed it, and the number may name another file now: its inode tells), or the
    report lines do not reach the backend (stdout is not the pipe it reads)."""
    import stat

    fd_text, _, inode_text = os.environ.get(REPORT_ACK_ENV, "").partition(":")
    try:
        fd, inode = int(fd_text), int(inode_text)
        pipe = os.fstat(fd)
        out = os.fstat(sys.stdout.fileno())
    except (ValueError, OSError, AttributeError):  # io.UnsupportedOperation is both
        return -1
    if not (stat.S_ISFIFO(pipe.st_mode) and pipe.st_ino == inode and stat.S_ISFIFO(out.st_mode)):
        return -1
    return fd


def is_rank_zero() -> bool:
    """False in the processes of rank > 0 of a distributed launch (`RANK` set and not 0)."""
    rank = os.environ.get(RANK_ENV, "").strip()
    return rank in ("", "0")


class Reporter:
    """Callable reporter, for scripts written as `report = Reporter(); report(epoch=1, ...)`."""

    def __call__(self, **metrics: Any) -> None:
        report(**metrics)


# -- hyperparameters -------------------------------------------------------------------------------
def format_arg(value: Any) -> str:
    """A hyperparameter value as one command-line argument: strings as they are, else JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, default=_plain, allow_nan=True)


def config_args(config: Mapping[str, Any]) -> list[str]:
    """`--name value` arguments for a config (an argument list: never meant for a shell).

    A value that starts with "-" is passed as `--name=value`, so that argparse and `get_config`
    do not take it for an option."""
    args: list[str] = []
    for name, value in config.items():
        text = format_arg(value)
        if text.startswith("-"):
            args.append(f"--{name}={text}")
        else:
            args += [f"--{name}", text]
    return args


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_args(argv: Sequence[str]) -> dict[str, str | bool]:
    """`--name value`, `--name=value` and bare `--flag` (True) arguments, values unparsed."""
    parsed: dict[str, str | bool] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            if eq:
                parsed[name] = value
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                parsed[name] = args[i + 1]
                i += 1
            else:
                parsed[name] = True
        i += 1
    return parsed


def get_config(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The trial's hyperparameters: the JSON file named by TUNESMITH_CONFIG, updated with
    `--name value` arguments.

    Argument values are parsed as JSON where they parse, else kept as strings; where the file
    holds a value whose argument form is the same text, the file's typed value is kept (so the
    string "3" stays a string)."""
    config: dict[str, Any] = {}
    path = os.environ.get(CONFIG_ENV)
    if path:
        with open(path) as f:
            config.update(json.load(f))
    for name, text in parse_args(sys.argv[1:] if argv is None else argv).items():
        if not isinstance(text, str):  # a bare --flag
            config[name] = True
        elif not (name in config and format_arg(config[name]) == text):
            config[name] = _parse_value(text)
    return config


def trial_id() -> int | None:
    """The trial's id (TUNESMITH_TRIAL_ID), None outside tunesmith."""
    value = os.environ.get(TRIAL_ID_ENV)
    return int(value) if value else None


# -- checkpoints -----------------------------------------------------------------------------------
def checkpoint_dir(create: bool = True) -> Path | None:
    """The folder where this trial keeps its checkpoint (kept across pause and resume);
    created unless `create` is False (the backend creates it only when it copies one in)."""
    value = os.environ.get(CHECKPOINT_ENV)
    if not value:
        return None
    from pathlib import Path

    path = Path(value)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def is_temporary_checkpoint_file(name: str) -> bool:
    """Whether `name` is a half-written file of `save_checkpoint` (skipped when copying)."""
    return name.startswith(".") and name.endswith(".tmp")


def save_checkpoint(state: Any, filename: str = "checkpoint.json") -> Path | None:
    """Save `state` atomically in the checkpoint dir (JSON for .json names, else pickle).

    Returns the path, or None when the script runs outside tunesmith (no checkpoint dir)."""
    folder = checkpoint_dir()
    if folder is None:
        return None
    target = folder / filename
    tmp = folder / f".{filename}.{os.getpid()}.tmp"
    if filename.endswith(".json"):
        data = json.dumps(state, default=_plain, allow_nan=True).encode()
    else:
        import pickle

        data = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    global _unreported_save
    _report_before_stopping()
    _unreported_save = True  # from here a SIGTERM lets the save finish and waits for the report
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    return target


def load_checkpoint(filename: str = "checkpoint.json") -> Any | None:
    """The state last saved with `save_checkpoint`, or None if there is none."""
    folder = checkpoint_dir(create=False)
    if folder is None or not (folder / filename).exists():
        return None
    data = (folder / filename).read_bytes()
    if filename.endswith(".json"):
        return json.loads(data)
    import pickle

    return pickle.loads(data)  # noqa: S301 (the trial's own file)


# -- parsing (backend side) ------------------------------------------------------------------------
class MalformedReport(ValueError):
    """A line with a report prefix whose payload is not a JSON object of metrics."""


def parse_report_line(line: str) -> dict[str, Any] | None:
    """Metrics of one output line, None for lines that are not reports.

    Raises MalformedReport for a report line whose payload is not a JSON object."""
    for prefix in PREFIXES:
        position = line.find(prefix)
        if position != -1:
            payload = line[position + len(prefix):].strip()
            try:
                metrics = json.loads(payload)
            except ValueError as err:
                raise MalformedReport(f"not JSON: {payload[:200]!r}") from err
            if not isinstance(metrics, dict):
                raise MalformedReport(f"not a JSON object: {payload[:200]!r}")
            return metrics
    return None


def is_finite_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return math.isfinite(value)
    return False


def _warn(message: str, *args: Any) -> None:
    import logging

    logging.getLogger(__name__).warning(message, *args)


class ReportParser:
    """Incremental parser of a trial's output: feed it chunks, get the reports in them.

    Partial lines are kept until their end arrives (a line longer than `MAX_LINE_CHARS` is
    dropped); malformed report lines are skipped with a warning (counted in `num_malformed`)
    and never raise."""

    def __init__(self, source: str = "trial", max_line_chars: int = MAX_LINE_CHARS):
        self.source = source
        self.max_line_chars = max_line_chars
        self._partial = ""
        self._dropping = False  # inside an over-long line: skip until its newline
        self.num_malformed = 0

    def feed(self, chunk: str) -> list[dict[str, Any]]:
        if "\n" not in chunk:
            self._keep(chunk)
            return []
        head, *lines, rest = chunk.split("\n")
        first = self._partial + head
        if self._dropping:
            self._dropping = False
            first = ""
        self._partial = ""
        reports = self._parse([first, *lines])
        self._keep(rest)
        return reports

    def flush(self) -> list[dict[str, Any]]:
        """Parse what is left once the output has ended (a last line without newline)."""
        rest, self._partial = self._partial, ""
        dropping, self._dropping = self._dropping, False
        return self._parse([rest]) if rest and not dropping else []

    def _keep(self, text: str) -> None:
        if self._dropping:
            return
        self._partial += text
        if len(self._partial) > self.max_line_chars:
            self._partial = ""
            self._dropping = True
            self.num_malformed += 1
            _warn("%s: skipped an output line longer than %d characters", self.source,
                  self.max_line_chars)

    def _parse(self, lines: Iterable[str]) -> list[dict[str, Any]]:
        reports = []
        for line in lines:
            if "]:" not in line:
                continue
            try:
                metrics = parse_report_line(line)
            except MalformedReport as err:
                self.num_malformed += 1
                _warn("%s: skipped a malformed report line (%s)", self.source, err)
                continue
            if metrics is not None:
                reports.append(metrics)
        return reports
