"""The porting examples (examples/porting/): each runs as its users would run it (`python
from_*.py`: the `tune` flow, MLflow in ./mlflow.db), and each differs from its Ray Tune or Optuna
original in a handful of lines."""

from __future__ import annotations

import difflib
import runpy
from pathlib import Path

import pytest

from hpo_core.store import load_experiment

PORTING = Path(__file__).resolve().parents[2] / "examples" / "porting"


def changed_lines(original: str, port: str) -> int:
    """Lines of the port that are not in the original (the docstring left out)."""
    a = (PORTING / original).read_text().splitlines()[1:]
    b = (PORTING / port).read_text().splitlines()[1:]
    return sum(1 for line in difflib.ndiff(a, b) if line.startswith("+ "))


@pytest.mark.parametrize(("port", "original", "most_changed", "trials"), [
    ("from_ray_tune.py", "ray_tune_original.py", 5, 20),
    ("from_optuna.py", "optuna_original.py", 6, 30),
])
def test_a_porting_example_runs_through_the_flow(tmp_path, monkeypatch, prefect_harness, capsys,
                                                  port, original, most_changed, trials):
    assert changed_lines(original, port) <= most_changed
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(PORTING / port), run_name="__main__")
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    (folder,) = (tmp_path / "experiments").iterdir()
    experiment = load_experiment(folder)
    assert len(experiment.trials()) >= trials
    assert str(experiment.best_config()) in printed
    assert experiment.spec["backend_options"]["entry_point"] == f"{PORTING / port}:objective"
    assert (tmp_path / "mlflow.db").is_file()


def test_the_readme_python_example_runs(tmp_path, monkeypatch, prefect_harness, capsys):
    readme = (PORTING.parents[1] / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "readme_example.py").write_text(code)
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(tmp_path / "readme_example.py"), run_name="__main__")
    (folder,) = (tmp_path / "experiments").iterdir()
    experiment = load_experiment(folder)
    assert len(experiment.trials()) >= 30 and experiment.spec["scheduler"] == "asha"
    assert str(experiment.best_value()) in capsys.readouterr().out
