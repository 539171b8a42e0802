"""What the Syne Tune sides of `quality.py` and `quality_suite.py` share (they run inside the
peer venv, `_peers.py`): tunesmith's space as Syne Tune domains, a Syne Tune baseline by name,
and one simulated run of Syne Tune's own `Tuner` (`UserBlackboxBackend`, `SimulatorCallback`,
`sleep_time=0`) reduced to the reports that improved on the best so far.
"""

from __future__ import annotations

import time
from typing import Any

#: Syne Tune 0.16 baselines run here: single-fidelity ones and ASHA-based ones
SINGLE = ("RandomSearch", "TPE", "REA", "BORE")
MULTI = ("ASHA", "BOHB", "ASHABORE")


def syne_tune_space(space: Any) -> dict[str, Any]:
    """tunesmith's ConfigSpace as Syne Tune domains (the types LCBench uses)."""
    from syne_tune import config_space as cs

    makers = {"uniform": cs.uniform, "loguniform": cs.loguniform, "randint": cs.randint,
              "lograndint": cs.lograndint}
    out: dict[str, Any] = {}
    for name, domain in space.domains.items():
        spec = domain.to_json()
        if spec["type"] == "choice":
            out[name] = cs.choice(spec["categories"])
        else:
            out[name] = makers[spec["type"]](spec["lower"], spec["upper"])
    out.update(space.fixed)
    return out


def make_scheduler(name: str, config_space: dict[str, Any], metric: str, minimize: bool,
                   seed: int, fidelity: str, max_t: int) -> Any:
    from syne_tune.optimizer import baselines as b

    if name == "RandomSearch":
        return b.RandomSearch(config_space, metrics=[metric], do_minimize=minimize,
                              random_seed=seed)
    if name in SINGLE:
        return getattr(b, name)(config_space, metric=metric, do_minimize=minimize,
                                random_seed=seed)
    if name in MULTI:
        return getattr(b, name)(config_space, metric=metric, time_attr=fidelity, max_t=max_t,
                                do_minimize=minimize, random_seed=seed)
    raise ValueError(f"methods: unknown Syne Tune method {name!r}; expected one of "
                     f"{SINGLE + MULTI}")


def simulate(ours: Any, st_blackbox: Any, name: str, metric: str, mode: str, seed: int,
             budget: float, workers: int, tick: float, tuner_name: str) -> dict[str, Any]:
    """One run of Syne Tune's `name` on `st_blackbox` (Syne Tune's view of tunesmith's blackbox
    `ours`) for `budget` simulated seconds: the (simulated time, value) of each report that
    improved on the best so far, the number of trials and the wall seconds."""
    import numpy as np
    from syne_tune import StoppingCriterion, Tuner
    from syne_tune.backend.simulator_backend.simulator_callback import SimulatorCallback
    from syne_tune.blackbox_repository.simulated_tabular_backend import UserBlackboxBackend
    from syne_tune.constants import ST_TUNER_TIME

    np.random.seed(seed)  # Syne Tune's ASHA draws brackets from the global generator
    backend = UserBlackboxBackend(blackbox=st_blackbox, elapsed_time_attr=ours.time_attr,
                                  seed=0, tuner_sleep_time=tick)
    scheduler = make_scheduler(name, st_blackbox.configuration_space, metric, mode == "min",
                               seed, ours.fidelity_name, int(ours.fidelity_values[-1]))
    callback = SimulatorCallback()
    started = time.perf_counter()
    tuner = Tuner(trial_backend=backend, scheduler=scheduler,
                  stop_criterion=StoppingCriterion(max_wallclock_time=budget), n_workers=workers,
                  sleep_time=0, callbacks=[callback], save_tuner=False, tuner_name=tuner_name,
                  print_update_interval=1e9, results_update_interval=1e9)
    tuner.run()
    frame = callback.dataframe()
    frame = frame[frame[ST_TUNER_TIME] <= budget].sort_values(ST_TUNER_TIME, kind="stable")
    times, values = [], []
    sign = 1.0 if mode == "min" else -1.0
    for t, v in zip(frame[ST_TUNER_TIME].astype(float), frame[metric].astype(float), strict=True):
        if not values or sign * v < sign * values[-1]:
            times.append(t)
            values.append(v)
    return {"times": times, "values": values,
            "num_trials": int(frame["trial_id"].nunique()) if len(frame) else 0,
            "seconds": time.perf_counter() - started}
