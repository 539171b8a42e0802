"""User errors are one `error:` line and exit code 2, found before Prefect or any trial starts,
and a rejected spec writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.cli import main

GOOD: dict = {
    "name": "bad-input",
    "metric": "loss",
    "config_space": {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}},
    "scheduler": "random",
    "backend": "local",
    "backend_options": {"entry_point": "train.py", "gpus": None},
    "stop": {"max_trials_started": 2},
    "n_workers": 1,
}


def alias_bomb() -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    return "\n".join(lines) + "\nname: *a8\nmetric: loss\n"


CASES = {
    "a spec field": ({"n_workers": 0}, "spec.n_workers: must be between 1"),
    "an unknown field": ({"workers": 2}, "spec: unknown fields ['workers']"),
    "a missing entry point": ({"backend_options": {"entry_point": "nope.py", "gpus": None}},
                              "spec.backend_options.entry_point: no such file"),
    "an unknown backend option": ({"backend_options": {"entry_point": "train.py", "gpu": 1}},
                                  "spec.backend_options.gpu: unknown option"),
    "an unknown blackbox": ({"backend": "simulated", "config_space": {},
                             "backend_options": {"blackbox": "nope"}},
                            "spec.backend_options: "),
    "a scheduler option of the wrong type": (
        {"scheduler": "asha", "scheduler_options": {"reduction_factor": "three", "max_t": 3}},
        "spec.scheduler_options: reduction_factor"),
    "a million workers": ({"n_workers": 1_000_000}, "spec.n_workers: must be between 1 and"),
    "more workers than the backend runs": ({"n_workers": 5000},
                                           "spec.n_workers: the local backend runs at most"),
    "a multi-fidelity method without a stop": (
        {"scheduler": "asha", "stop": {}}, "spec.stop: set at least one limit"),
    "an unset secret reference": (
        {"config_space": {"x": 1, "key": {"secret": "env:TUNESMITH_TEST_UNSET"}}},
        "spec.config_space.key: the environment variable 'TUNESMITH_TEST_UNSET' is not set"),
    "a bad max_failures": ({"max_failures": 0}, "spec.max_failures: must be a positive"),
    "an interpreter that is not there": (
        {"backend_options": {"entry_point": "train.py", "gpus": None, "python": "/nope/python"}},
        "spec.backend_options.python: no such executable: '/nope/python'"),
    "GPUs that are not GPU ids": ({"backend_options": {"entry_point": "train.py", "gpus": "all"}},
                                  "spec.backend_options.gpus: must be 'auto', a list of GPU ids"),
}
FILES = {
    "YAML syntax": ("spec.yaml", "name: [x\n", "invalid YAML"),
    "a duplicate YAML key": ("spec.yaml", "name: a\nname: b\nmetric: loss\n", "duplicate key"),
    "a duplicate JSON key": ("spec.json", '{"name": "a", "name": "b"}', "duplicate key 'name'"),
    "an alias bomb": ("spec.yaml", alias_bomb(), "after expanding aliases"),
    "a 2 MB spec": ("spec.yaml", "name: x\nmetric: loss\npad: " + "y" * 2_000_000 + "\n",
                    "bytes; a spec file may have at most"),
    "a missing file": ("nope.yaml", None, "spec: no file"),
}


def check_one_line(capsys, code: int, expected: str) -> None:
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0]
    assert "Traceback" not in out + err and "running" not in out  # nothing started


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_spec_is_one_line_before_anything_runs(case, tmp_path: Path, monkeypatch,
                                                     capsys) -> None:
    changes, expected = CASES[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("print('never run')\n")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**GOOD, **changes, "results_root": str(tmp_path / "exp")}))
    check_one_line(capsys, main(["run", str(path)]), expected)
    assert not (tmp_path / "exp").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("case", sorted(FILES))
def test_a_bad_spec_file_is_one_line(case, tmp_path: Path, monkeypatch, capsys) -> None:
    name, text, expected = FILES[case]
    monkeypatch.chdir(tmp_path)
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    check_one_line(capsys, main(["run", str(path), "--results-root", "exp"]), expected)
    assert not (tmp_path / "exp").exists()


def test_a_directory_as_the_spec_path(tmp_path: Path, capsys) -> None:
    check_one_line(capsys, main(["run", str(tmp_path)]), "is a directory, not a YAML or JSON")


def test_a_full_disk_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    import errno

    import hpo_core.store.store as results

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "exp"))

    monkeypatch.setattr(results.ExperimentStore, "create", full)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "backend": "simulated", "config_space": {},
                                    "metric": "Train/val_cross_entropy",
                                    "backend_options": {}, "results_root": str(tmp_path / "e")}))
    code = main(["run", str(path), "--no-flow"])
    out, err = capsys.readouterr()
    assert code == 2 and err.strip().startswith("error: no space left on the device")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("root, expected", [
    ("a-file", "spec.results_root: "),  # given on the command line: checked as the spec's
    ("a-file/below", "spec.results_root: cannot store the experiment in"),  # no folder there
])
def test_a_results_root_that_cannot_hold_the_experiment_is_one_line(
        root, expected, tmp_path: Path, capsys) -> None:
    (tmp_path / "a-file").write_text("")
    check_one_line(capsys, main(["demo", "--no-flow", "--results-root", str(tmp_path / root)]),
                   expected)
