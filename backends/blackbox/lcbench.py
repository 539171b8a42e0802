"""Importer for LCBench as split per data set (the layout of ltiao/LCBenchLite).

Each task folder holds `config.parquet.gzip` (index `trial`), `metrics.parquet.gzip` (index
`(trial, epoch)`) and `results.parquet.gzip`. Choices made here:

* Epoch 0 is the evaluation *before* training: it is dropped, so the fidelities are the trained
  epochs 1..51 and every report follows some training.
* `time` is cumulative wall-clock seconds since the start of training; it becomes the objective
  `elapsed_time` (`time` is a column of the tuner's own results).
* Objective names keep LCBench's (`Train/val_cross_entropy`, ...), so published analyses match.
* The 7 varying hyperparameters get LCBench's published domains (log where the paper samples
  log-uniformly, integers as (log)randint); other varying columns get an inferred domain;
  constant columns are left out of the space and kept in `metadata["fixed_hyperparameters"]`.

Command line, for one task folder or a folder of task folders::

    python -m backends.blackbox.lcbench /data/lcbench/segment out/lcbench
    python -m backends.blackbox.lcbench /data/lcbench out/lcbench     # every task inside
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backends.blackbox.blackbox import Blackbox, BlackboxError
from backends.blackbox.infer import infer_domain
from hpo_core.space import ConfigSpace, Domain, lograndint, loguniform, randint, uniform

CONFIG_FILE = "config.parquet.gzip"
METRICS_FILE = "metrics.parquet.gzip"
RESULTS_FILE = "results.parquet.gzip"

#: LCBench's search space (Zimmer et al. 2021, table 1); the same for all 35 tasks.
LCBENCH_DOMAINS: dict[str, Domain] = {
    "batch_size": lograndint(16, 512),
    "learning_rate": loguniform(1e-4, 1e-1),
    "momentum": uniform(0.1, 0.99),
    "weight_decay": uniform(1e-5, 1e-1),
    "num_layers": randint(1, 4),
    "max_units": lograndint(64, 1024),
    "max_dropout": uniform(0.0, 1.0),
}

#: Source column -> (objective name, mode). `time` is renamed; the others keep their names.
DEFAULT_OBJECTIVES: dict[str, tuple[str, str]] = {
    "Train/val_accuracy": ("Train/val_accuracy", "max"),
    "Train/val_balanced_accuracy": ("Train/val_balanced_accuracy", "max"),
    "Train/val_cross_entropy": ("Train/val_cross_entropy", "min"),
    "Train/test_result": ("Train/test_result", "max"),
    "Train/test_balanced_accuracy": ("Train/test_balanced_accuracy", "max"),
    "Train/loss": ("Train/loss", "min"),
    "time": ("elapsed_time", "min"),
}
DEFAULT_METRIC = "Train/val_cross_entropy"

CITATION = (
    "Zimmer, L., Lindauer, M., Hutter, F. (2021). Auto-PyTorch Tabular: Multi-Fidelity "
    "MetaLearning for Efficient and Robust AutoDL. IEEE TPAMI 43(9), 3079-3090."
)


def is_task_dir(path: str | os.PathLike[str]) -> bool:
    path = Path(path)
    return (path / CONFIG_FILE).exists() and (path / METRICS_FILE).exists()


def _config_space(configs: pd.DataFrame) -> tuple[ConfigSpace, dict[str, Any]]:
    domains: dict[str, Domain] = {}
    fixed: dict[str, Any] = {}
    for column in configs.columns:
        values = configs[column]
        if values.nunique(dropna=False) <= 1:
            value = values.iloc[0]
            fixed[column] = value.item() if hasattr(value, "item") else value
            continue
        domain = LCBENCH_DOMAINS.get(column) or infer_domain(values, column)
        outside = [v for v in values.tolist() if not domain.contains(v)]
        if outside:
            raise BlackboxError(
                f"{CONFIG_FILE}: column {column!r} has values outside {domain!r}, e.g. {outside[0]!r}"
            )
        domains[column] = domain
    return ConfigSpace(domains), fixed


def import_lcbench(
    task_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    objectives: Mapping[str, tuple[str, str]] | None = None,
    default_metric: str = DEFAULT_METRIC,
) -> Blackbox:
    """Read one LCBench task folder into a Blackbox; with `out`, also save it there.

    Args:
        task_dir: folder with config/metrics/results `.parquet.gzip` files.
        out: folder to save the blackbox into (e.g. `<root>/lcbench/<task>`).
        objectives: source column -> (objective name, mode); `time` must be among them.
        default_metric: the objective a spec uses when it names none.
    """
    task_dir = Path(task_dir)
    if not is_task_dir(task_dir):
        raise FileNotFoundError(
            f"{task_dir}: not an LCBench task folder (needs {CONFIG_FILE} and {METRICS_FILE})"
        )
    objectives = dict(objectives or DEFAULT_OBJECTIVES)
    if "time" not in objectives:
        raise BlackboxError("objectives: must include the 'time' column (elapsed time)")
    # no threads: see `hpo_core.store.store.read_rows` (pyarrow's abort at exit)
    configs = pd.read_parquet(task_dir / CONFIG_FILE, use_threads=False).sort_index()
    metrics = pd.read_parquet(task_dir / METRICS_FILE, columns=list(objectives),
                              use_threads=False)
    missing = [c for c in objectives if c not in metrics.columns]
    if missing:
        raise BlackboxError(f"{METRICS_FILE}: no column {missing[0]!r}")
    trials = metrics.index.get_level_values("trial").to_numpy()
    epochs = metrics.index.get_level_values("epoch").to_numpy()
    keep = epochs > 0  # epoch 0: evaluation before any training
    trials, epochs = trials[keep], epochs[keep]
    fidelities = np.unique(epochs)
    rows = configs.index.get_indexer(pd.Index(trials))
    if (rows < 0).any():
        raise BlackboxError(f"{METRICS_FILE}: trial {trials[rows < 0][0]} has no config row")
    values = np.full((len(configs), 1, len(fidelities), len(objectives)), np.nan, np.float32)
    values[rows, 0, np.searchsorted(fidelities, epochs)] = (
        metrics.to_numpy(np.float32)[keep]
    )
    has_curve = ~np.isnan(values[:, 0, 0, list(objectives).index("time")])
    space, fixed = _config_space(configs)
    meta: dict[str, Any] = {
        "name": "lcbench",
        "task": task_dir.name,
        "citation": CITATION,
        "fixed_hyperparameters": fixed,
        "notes": "epoch 0 (evaluation before training) dropped; elapsed_time is LCBench's "
                 "cumulative `time` in seconds",
    }
    results_path = task_dir / RESULTS_FILE
    if results_path.exists():
        results = pd.read_parquet(results_path, use_threads=False)
        for column in ("OpenML_task_id", "instances", "classes", "features"):
            if column in results.columns:
                meta[column.lower()] = results[column].iloc[0].item()
    names = [name for name, _ in objectives.values()]
    blackbox = Blackbox(
        configs=configs.loc[has_curve, space.names].reset_index(drop=True),
        objectives=values[has_curve],
        config_space=space,
        fidelity_name="epoch",
        fidelity_values=fidelities.tolist(),
        objective_names=names,
        time_attr=objectives["time"][0],
        modes={name: mode for name, mode in objectives.values()},
        default_metric=default_metric,
        metadata=meta,
    )
    if out is not None:
        blackbox.save(out)
    return blackbox


def import_lcbench_tasks(
    root: str | os.PathLike[str], out_root: str | os.PathLike[str],
    tasks: Sequence[str] | None = None,
) -> list[Path]:
    """Import every task folder under `root` (or those named) into `out_root/<task>`."""
    root = Path(root)
    names = list(tasks) if tasks else sorted(p.name for p in root.iterdir() if is_task_dir(p))
    if not names:
        raise FileNotFoundError(f"{root}: no LCBench task folders inside")
    paths = []
    for name in names:
        import_lcbench(root / name, Path(out_root) / name)
        paths.append(Path(out_root) / name)
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m backends.blackbox.lcbench",
        description="Import LCBench task folders (LCBenchLite layout) as tunesmith blackboxes.",
    )
    parser.add_argument("source", help="a task folder, or a folder of task folders")
    parser.add_argument("out", help="output folder; each task lands in <out>/<task>")
    args = parser.parse_args(argv)
    source = Path(args.source)
    if is_task_dir(source):
        paths = [Path(args.out) / source.name]
        import_lcbench(source, paths[0])
    else:
        paths = import_lcbench_tasks(source, args.out)
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
