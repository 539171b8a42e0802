"""Tune a digits example with ASHA on the local backend: examples/train_digits.py (scikit-learn,
spec digits-asha.yaml) or, with `--spec examples/digits-torch-asha.yaml`, the PyTorch one.

    python examples/launch_digits.py                 # the Prefect `tune` flow, tracked in MLflow
    python examples/launch_digits.py --no-flow       # the bare tuner: only the experiment folder
    python examples/launch_digits.py --max-trials 9 --workers 4 --name digits-small
    python examples/launch_digits.py --spec examples/digits-torch-asha.yaml   # on the GPUs

Workers default to the spec's `n_workers`, capped by what the machine offers
(`LocalBackend.default_n_workers()`: GPU slots when there are GPUs, else CPUs).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

from backends.local import LocalBackend  # noqa: E402
from hpo_core.spec import ExperimentSpec  # noqa: E402


def load_spec(path: Path, overrides: argparse.Namespace) -> ExperimentSpec:
    import yaml

    data: dict[str, Any] = yaml.safe_load(path.read_text())
    options = data.setdefault("backend_options", {})
    entry = Path(options["entry_point"])
    if not entry.is_absolute() and not entry.exists():  # relative to the repository root
        options["entry_point"] = str(ROOT / entry)
    if overrides.name:
        data["name"] = overrides.name
    if overrides.max_trials:
        data.setdefault("stop", {})["max_trials_started"] = overrides.max_trials
    if overrides.results_root:
        data["results_root"] = overrides.results_root
    available = LocalBackend(**options).default_n_workers()
    wanted = data.get("n_workers", 4)
    data["n_workers"] = overrides.workers or (
        available if wanted == "auto" else min(int(wanted), available))
    return ExperimentSpec.from_dict(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=HERE / "digits-asha.yaml")
    parser.add_argument("--no-flow", action="store_true", help="run the bare tuner")
    parser.add_argument("--name", help="experiment name (default: the spec's)")
    parser.add_argument("--max-trials", type=int, help="stop.max_trials_started")
    parser.add_argument("--workers", type=int, help="trials at once")
    parser.add_argument("--results-root", help="folder of experiment folders")
    args = parser.parse_args(argv)
    spec = load_spec(args.spec, args)
    print(f"{spec.name}: {spec.scheduler} on {spec.n_workers} local workers, stop {spec.stop}")
    if args.no_flow:
        from flows.experiment import build_tuner

        result = build_tuner(spec).run()
        print(f"ended: {result.reason}")
    else:
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from flows.tune import run_tune

        outcome = run_tune(spec)
        print({k: v for k, v in outcome.items() if isinstance(v, str | int | float)})
    from hpo_core.store import load_experiment

    experiment = load_experiment(spec.experiment_path)
    print(f"best {experiment.metric}: {experiment.best_value()} with {experiment.best_config()}")
    print(f"results: {experiment.path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
