"""One rule for a diverged (NaN) curve on every backend: the trial fails with the reason, and
`max_failures` counts it, in simulation as on the local backend."""

from __future__ import annotations

import math
import textwrap

import pandas as pd
import pytest

from backends.blackbox import blackbox_from_dataframe
from backends.local import LocalBackend
from backends.simulated import SimulatedBackend
from hpo_core.registry import build_scheduler
from hpo_core.stopping import StoppingCriterion
from hpo_core.trial import TrialStatus
from hpo_core.tuner import TooManyFailuresError, Tuner

# x=1 trains 3 epochs; x=2 diverges at epoch 2
LOSS = {1: [0.5, 0.4, 0.3], 2: [0.6, math.nan, math.nan]}
SCRIPT = """\
import math
from hpo_core.report import get_config, report
x = get_config()["x"]
losses = {1: [0.5, 0.4, 0.3], 2: [0.6, math.nan, math.nan]}[x]
for epoch, loss in enumerate(losses, start=1):
    report(epoch=epoch, loss=loss)
    if math.isnan(loss):
        break
"""


def simulated() -> SimulatedBackend:
    rows = [{"x": x, "epoch": e, "loss": v, "elapsed": float(e)}
            for x, losses in LOSS.items() for e, v in enumerate(losses, start=1)]
    blackbox = blackbox_from_dataframe(pd.DataFrame(rows), ["x"], "epoch", ["loss"], "elapsed")
    return SimulatedBackend(blackbox, surrogate=None)


def local(tmp_path) -> LocalBackend:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT))
    return LocalBackend(str(script), gpus=None, poll_interval=0.05)


def tune(backend, tmp_path, max_failures=None) -> Tuner:
    scheduler = build_scheduler(
        "random", {"x": {"type": "choice", "categories": [1, 2]}}, "loss", "min", seed=0,
        options={"points_to_evaluate": [{"x": 2}, {"x": 1}]})
    backend.set_trial_root(tmp_path / "trials")
    tuner = Tuner(scheduler, backend, StoppingCriterion(max_trials_started=2), n_workers=1,
                  max_failures=max_failures)
    tuner.run()
    return tuner


def outcome(tuner: Tuner) -> list[tuple]:
    return [(t.trial_id, t.config["x"], t.status, t.num_results, t.failure_reason)
            for t in sorted(tuner.trials.values(), key=lambda t: t.trial_id)]


def test_a_nan_report_fails_the_trial_alike_in_simulation_and_on_the_local_backend(tmp_path):
    sim = outcome(tune(simulated(), tmp_path / "sim"))
    real = outcome(tune(local(tmp_path), tmp_path / "local"))
    assert sim == real == [
        (0, 2, TrialStatus.FAILED, 1, "reported a non-finite loss: nan"),
        (1, 1, TrialStatus.COMPLETED, 3, None),
    ]


@pytest.mark.parametrize("make", [lambda tmp: simulated(), local])
def test_max_failures_counts_a_diverged_curve(make, tmp_path):
    with pytest.raises(TooManyFailuresError, match="non-finite loss: nan"):
        tune(make(tmp_path), tmp_path, max_failures=1)
