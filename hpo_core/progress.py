"""A tuner callback that prints progress: trials done, running, best so far."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from hpo_core.trial import Trial
from hpo_core.tuner import Tuner, TunerCallback


class ProgressPrinter(TunerCallback):
    """Prints one status line at most every `interval` wall seconds, and one at the end."""

    def __init__(self, interval: float = 1.0, stream: TextIO | None = None):
        self.interval = interval
        self.stream = stream or sys.stdout
        self._tuner: Tuner | None = None
        self._last = 0.0

    def on_tuning_start(self, tuner: Tuner) -> None:
        self._tuner = tuner
        self._last = time.monotonic()

    def on_trial_complete(self, trial: Trial) -> None:
        self._maybe_print()

    def on_trial_error(self, trial: Trial) -> None:
        self._maybe_print()

    def on_tuning_end(self, tuner: Tuner) -> None:
        self._print()

    def _maybe_print(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._print()

    def _print(self) -> None:
        tuner = self._tuner
        if tuner is None:
            return
        s = tuner.status
        best = "-" if s.best_value is None else f"{s.best_value:.6g} (trial {tuner.best_trial_id})"
        print(
            f"[t={tuner.now():,.0f}s] trials: {s.num_trials_completed} done, "
            f"{s.num_trials_running} running, {s.num_trials_failed} failed | "
            f"best {tuner.scheduler.metric}: {best}",
            file=self.stream,
            flush=True,
        )
