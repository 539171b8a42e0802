"""The `tunesmith` console script: run, demo, resume, list, show, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.cli import main
from hpo_core.store.lock import experiment_lock

SPEC = {
    "name": "cli-random", "metric": "Train/val_cross_entropy", "scheduler": "random",
    "backend_options": {"blackbox": "lcbench", "task": "blood-transfusion-service-center",
                        "max_fidelity": 5},
    "stop": {"max_trials_completed": 12}, "n_workers": 3, "seed": 1,
}


def write_spec(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({**SPEC, "results_root": str(tmp_path / "exp"), **changes}))
    return path


def test_run_list_show_and_resume_without_prefect(tmp_path, capsys):
    root = str(tmp_path / "exp")
    assert main(["run", str(write_spec(tmp_path)), "--no-flow"]) == 0
    out = capsys.readouterr().out
    assert "ended: max_trials_completed" in out and "best Train/val_cross_entropy" in out

    assert main(["list", "--results-root", root]) == 0
    listing = capsys.readouterr().out.splitlines()
    name, trials, _, ended = listing[1].split()[:4]
    assert name == "cli-random" and int(trials) >= 12  # and the ones running at the end
    assert ended == "yes"

    assert main(["show", "cli-random", "--results-root", root, "--top", "3"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[1].startswith("ended: max_trials_completed")
    assert shown[2].split()[:2] == ["trial_id", "status"] and len(shown) == 3 + 3 + 1

    assert main(["resume", "cli-random", "--results-root", root, "--no-flow"]) == 0
    assert "ended: max_trials_completed" in capsys.readouterr().out  # nothing left to do


def test_show_says_an_interrupted_experiment_can_be_resumed(tmp_path, monkeypatch, capsys):
    from flows.experiment import build_tuner
    from hpo_core.spec import ExperimentSpec

    spec = ExperimentSpec.from_file(write_spec(tmp_path, name="cli-killed"))
    tuner = build_tuner(spec)
    calls = []

    def interrupt(*_):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt

    tuner.scheduler.on_trial_add = interrupt
    with pytest.raises(KeyboardInterrupt):
        tuner.run()
    assert main(["show", "cli-killed", "--results-root", str(tmp_path / "exp")]) == 0
    out = capsys.readouterr().out
    assert ("interrupted by KeyboardInterrupt: `tunesmith resume cli-killed` continues it"
            in out)
    # no process runs it: the trials it was running are not said to run
    assert " interrupted" in out.splitlines()[0] and "running" not in out
    lock = experiment_lock(spec.experiment_path)
    lock.acquire()  # as the process that runs it holds it
    try:
        assert main(["show", "cli-killed", "--results-root", str(tmp_path / "exp")]) == 0
        out = capsys.readouterr().out
    finally:
        lock.release()
    assert out.splitlines()[1] == "running now" and " running" in out.splitlines()[0]
    assert main(["list", "--results-root", str(tmp_path / "exp")]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[3] == "no"
    # the folder it was started with, spelled relative to the working directory this time
    monkeypatch.chdir(tmp_path)
    assert main(["resume", "cli-killed", "--results-root", "exp", "--no-flow"]) == 0
    assert "ended: max_trials_completed" in capsys.readouterr().out


def test_an_interrupted_transfer_experiment_resumes_after_its_source_moved(tmp_path, capsys):
    from flows.experiment import build_tuner
    from hpo_core.spec import ExperimentSpec

    source = tmp_path / "sources" / "q3"
    assert main(["run", str(write_spec(tmp_path, name="q3", results_root=str(source.parent))),
                 "--no-flow"]) == 0
    spec = ExperimentSpec.from_file(write_spec(
        tmp_path, name="cli-transfer", scheduler="bounding_box",
        scheduler_options={"transfer_from": [str(source)], "top_k": 3}))
    tuner = build_tuner(spec)
    on_trial_add = tuner.scheduler.on_trial_add

    def interrupt(trial):
        if trial.trial_id == 5:
            raise KeyboardInterrupt
        on_trial_add(trial)

    tuner.scheduler.on_trial_add = interrupt  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        tuner.run()
    source.rename(tmp_path / "q3copy")
    (tmp_path / "exp").rename(tmp_path / "moved")  # the experiment's own folder too
    capsys.readouterr()
    root = str(tmp_path / "moved")
    assert main(["show", "cli-transfer", "--results-root", root]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith(
        "interrupted by KeyboardInterrupt: `tunesmith resume cli-transfer` continues it")
    assert main(["resume", "cli-transfer", "--results-root", root, "--no-flow"]) == 0
    assert "ended: max_trials_completed" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["show", "nothing-here"], "no experiment folder"),
    (["list", "--results-root", __file__], "is not a folder"),
    (["show", "../etc"], "not a valid name"),
    (["resume", "nothing-here"], "no experiment at"),
    (["run", "missing.yaml"], "missing.yaml"),
])
def test_bad_input_is_one_clear_line_and_exit_code_2(tmp_path, monkeypatch, capsys, argv,
                                                      message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_a_bad_spec_names_the_field(tmp_path, capsys):
    spec = write_spec(tmp_path, config_space={"x": {"type": "uniform", "lower": 2, "upper": 1}},
                      backend_options={})
    assert main(["run", str(spec), "--no-flow"]) == 2
    assert "spec.config_space.x" in capsys.readouterr().err


def test_demo_through_the_tune_flow(tmp_path, monkeypatch, capsys, prefect_harness):
    """The README's first command (`make run`), on the session's Prefect test API."""
    monkeypatch.chdir(tmp_path)  # MLflow defaults to ./mlflow.db
    assert main(["demo", "--results-root", str(tmp_path / "exp")]) == 0
    out = capsys.readouterr().out
    assert "experiment   demo-lcbench-asha  (asha on the simulated backend)" in out
    assert "prefect run" in out
    assert ("mlflow ui    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --workers 1 "
            "--backend-store-uri sqlite:///") in out
    assert (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("damaged, text", [
    ("state.json", '{"trials": '), ("results.parquet", "not parquet"), ("spec.json", "{,")])
def test_a_damaged_experiment_is_named_and_the_others_are_still_listed(
        tmp_path, capsys, damaged, text):
    root = str(tmp_path / "exp")
    for name in ("a-damaged", "b-good"):
        assert main(["run", str(write_spec(tmp_path, name=name)), "--no-flow"]) == 0
    (tmp_path / "exp" / "a-damaged" / damaged).write_text(text)
    capsys.readouterr()
    assert main(["list", "--results-root", root]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[1].startswith("a-damaged") and \
        f"cannot read {tmp_path / 'exp' / 'a-damaged' / damaged}" in listing[1]
    good = listing[2].split()
    assert good[0] == "b-good" and good[3] == "yes"  # listed as usual
    assert main(["show", "a-damaged", "--results-root", root]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot read {tmp_path / 'exp' / 'a-damaged' / damaged}" in err[0]


@pytest.mark.parametrize("argv", [["show", "x", "--top", "-1"], ["show", "x", "--top", "0"],
                                  ["compare", "--workers", "0"], ["compare", "--processes", "-2"]])
def test_counts_on_the_command_line_must_be_at_least_1(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "must be a whole number of at least 1" in capsys.readouterr().err


def test_output_into_a_closed_pipe_stops_quietly(tmp_path):
    """`tunesmith show x | head -1`: the reader goes away; no traceback."""
    import os
    import subprocess
    import sys

    assert main(["run", str(write_spec(tmp_path)), "--no-flow"]) == 0
    read, write = os.pipe()
    os.close(read)  # nobody reads: the first write gets EPIPE
    shown = subprocess.run([sys.executable, "-m", "flows.cli", "show", "cli-random",
                            "--results-root", str(tmp_path / "exp")], stdout=write,
                           stderr=subprocess.PIPE, text=True, timeout=120,
                           cwd=Path(__file__).resolve().parents[2])
    os.close(write)
    assert shown.returncode == 1 and "Traceback" not in shown.stderr, shown.stderr


def test_every_option_of_every_command_has_a_help_text() -> None:
    import argparse

    from flows.cli import build_parser

    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [f"{command} {action.dest}" for command, parser in sub.choices.items()
               for action in parser._actions if not action.help]
    assert not missing, missing


def test_show_of_a_multi_objective_experiment_prints_its_pareto_front(tmp_path, capsys):
    from hpo_core.store import load_experiment

    metrics = ["Train/val_cross_entropy", "elapsed_time"]
    path = write_spec(tmp_path, name="cli-mo", scheduler="moasha", metric=metrics,
                      mode=["min", "min"], scheduler_options={"reduction_factor": 3},
                      stop={"max_trials_completed": 20})
    assert main(["run", str(path), "--no-flow"]) == 0
    capsys.readouterr()
    root = str(tmp_path / "exp")
    assert main(["show", "cli-mo", "--results-root", root, "--top", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    experiment = load_experiment(tmp_path / "exp" / "cli-mo")
    reports = experiment.results.dropna(subset=metrics)
    values = reports[metrics].to_numpy(dtype=float)  # both minimized; brute force
    dominated = [((values <= v).all(axis=1) & (values < v).any(axis=1)).any() for v in values]
    front = reports[[not d for d in dominated]]
    at = next(i for i, line in enumerate(out) if line.startswith("Pareto front of "))
    assert out[at] == (f"Pareto front of Train/val_cross_entropy (min), elapsed_time (min): "
                       f"{len(front)} reports of {front['trial_id'].nunique()} trials"
                       + (", the first 4 by Train/val_cross_entropy" if len(front) > 4 else ""))
    assert out[at + 1].split()[:4] == ["trial_id", "epoch", *metrics]
    best = front.sort_values(metrics[0]).head(4)
    shown = [int(line.split()[0]) for line in out[at + 2: at + 2 + len(best)]]
    assert shown == [int(t) for t in best["trial_id"]]
    assert main(["list", "--results-root", root]) == 0
    listed = capsys.readouterr().out.splitlines()[1]
    assert listed.endswith(f"Train/val_cross_entropy, elapsed_time; Pareto front of "
                           f"{front['trial_id'].nunique()} trials"), listed


def test_show_masks_secret_hyperparameters_in_both_tables(tmp_path, capsys):
    script = tmp_path / "train.py"
    script.write_text("from hpo_core.report import get_config, report\n"
                      "config = get_config()\n"
                      "report(epoch=1, loss=config['x'], latency=1 - config['x'])\n")
    path = write_spec(tmp_path, name="cli-secret", scheduler="mo_rea",
                      metric=["loss", "latency"], mode=["min", "min"],
                      config_space={"x": {"type": "uniform", "lower": 0, "upper": 1},
                                    "api_token": "tk-secret-123"},
                      backend="local", backend_options={"entry_point": str(script),
                                                        "gpus": None},
                      stop={"max_trials_started": 3}, n_workers=3)
    assert main(["run", str(path), "--no-flow"]) == 0
    capsys.readouterr()
    assert main(["show", "cli-secret", "--results-root", str(tmp_path / "exp")]) == 0
    out = capsys.readouterr().out
    assert "Pareto front of loss (min), latency (min)" in out
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Pareto front of "))
    # no resource (mo_rea): each point says which report of its trial it is
    assert lines[at + 1].split()[:4] == ["trial_id", "report", "loss", "latency"]
    assert "tk-secret-123" not in out and out.count("[redacted]") >= 2  # ranked, then front


def test_a_kill_as_the_experiment_finishes_does_not_ask_for_a_resume(tmp_path, capsys,
                                                                    monkeypatch):
    """A SIGTERM that lands after the experiment ended (its end saved, its trials ended) is
    reported as such: its results are complete and a resume would do nothing (before: "trials
    ended, state saved; `tunesmith resume` continues it")."""
    import os
    import signal

    from hpo_core.tuner import Tuner

    emit = Tuner._emit

    def kill_at_the_end(self, name, *args):
        emit(self, name, *args)
        if name == "on_tuning_end":
            os.kill(os.getpid(), signal.SIGTERM)  # the CLI's handler raises at once

    monkeypatch.setattr(Tuner, "_emit", kill_at_the_end)
    assert main(["run", str(write_spec(tmp_path)), "--no-flow"]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("interrupted by SIGTERM: after the experiment ended (max_trials_completed 12 "
                   "reached); its results are complete")


def test_python_dash_m_tunesmith_is_the_console_script(tmp_path):
    import subprocess
    import sys

    root = tmp_path / "none"
    done = subprocess.run([sys.executable, "-m", "tunesmith", "list", "--results-root",
                           str(root)], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"no experiments under {root}"


def test_when_no_report_meets_the_constraint_the_views_say_so(tmp_path, capsys):
    """cbo under a constraint no report meets (a loss is never <= 0): no best, and why."""
    spec = tmp_path / "cbo.json"
    spec.write_text(json.dumps({
        "name": "never-feasible", "metric": "Train/val_cross_entropy", "scheduler": "cbo",
        "scheduler_options": {"constraint_attr": "Train/loss"},
        "backend_options": {"blackbox": "lcbench", "task": "blood-transfusion-service-center",
                            "max_fidelity": 3},
        "stop": {"max_trials_completed": 6}, "n_workers": 2, "results_root": str(tmp_path)}))
    assert main(["run", "--no-flow", str(spec)]) == 0
    out = capsys.readouterr().out
    reason = "no trial reported Train/val_cross_entropy with Train/loss <= 0"
    assert f"best Train/val_cross_entropy (min): none yet: {reason}" in out  # the status view
    assert f"best         none: {reason}" in out  # the summary
