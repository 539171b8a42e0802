"""tunesmith from Python: `tune(objective, config_space, metric=...)` and the trial helpers.

    from tunesmith import tune, report, uniform, loguniform

    def objective(config):
        for epoch in range(1, 11):
            report(epoch=epoch, loss=train_one_epoch(config))

    result = tune(objective, {"lr": loguniform(1e-4, 1e-1)}, metric="loss", mode="min",
                  method="asha", stop={"max_trials_completed": 20})
    print(result.best_config, result.best_value)

`report`, `get_config` and the checkpoint helpers are those of scripts (`hpo_core.report`,
cheap to import); `tune` and the search-space domains load on first use.
"""

from __future__ import annotations

from typing import Any

from hpo_core.report import (
    checkpoint_dir,
    get_config,
    load_checkpoint,
    report,
    save_checkpoint,
    trial_id,
)

_LAZY = {
    "tune": "tunesmith.api",
    "TuneResult": "tunesmith.api",
    "uniform": "hpo_core.space",
    "loguniform": "hpo_core.space",
    "randint": "hpo_core.space",
    "lograndint": "hpo_core.space",
    "choice": "hpo_core.space",
    "ordinal": "hpo_core.space",
    "finrange": "hpo_core.space",
    "logfinrange": "hpo_core.space",
    "when": "hpo_core.space",
}

__all__ = ["checkpoint_dir", "get_config", "load_checkpoint", "report", "save_checkpoint",
           "trial_id", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tunesmith' has no attribute {name!r}")
