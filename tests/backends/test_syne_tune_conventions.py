"""Syne Tune's script conventions through the local backend, with real subprocesses:
`--st_config_json_filename`, `--st_checkpoint_dir` read as "resume from here" under PBT, and
`max_resource_attr` ending each segment of a pause/resume scheduler."""

from __future__ import annotations

import textwrap

from backends.local import LocalBackend
from hpo_core.registry import build_scheduler
from hpo_core.stopping import StoppingCriterion
from hpo_core.store import ExperimentStore, load_experiment
from hpo_core.trial import TrialStatus
from hpo_core.tuner import Tuner

# What syne_tune.utils.add_config_json_to_argparse / load_config_json do, and its Reporter.
CONFIG_JSON = """\
import argparse, json
parser = argparse.ArgumentParser()
parser.add_argument("--st_config_json_filename", type=str)
args, _ = parser.parse_known_args()
with open(args.st_config_json_filename) as f:  # a TypeError if the argument is missing
    config = json.load(f)
config.update(vars(args))
print("[tune-metric]: " + json.dumps({"loss": (config["x"] - 0.3) ** 2, "n": config["n"],
                                      "epoch": 1}), flush=True)
"""

# Behaves like Syne Tune's examples/training_scripts/pbt_example/pbt_example.py: an existing
# checkpoint folder means "resume from the checkpoint.json in it".
PBT_EXAMPLE = """\
import argparse, json, os, time
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float)
parser.add_argument("--st_checkpoint_dir", type=str)
args, _ = parser.parse_known_args()
accuracy, start, resumed_from = 0.0, 1, 0
if args.st_checkpoint_dir and os.path.isdir(args.st_checkpoint_dir):
    with open(os.path.join(args.st_checkpoint_dir, "checkpoint.json")) as f:
        state = json.load(f)
    accuracy, start = state["acc"], state["step"]
    resumed_from = start
for step in range(start, 10):
    accuracy += 1.0 / (1.0 + abs(args.lr - 0.05) * 100)
    os.makedirs(args.st_checkpoint_dir, exist_ok=True)
    with open(os.path.join(args.st_checkpoint_dir, "checkpoint.json"), "w") as f:
        f.write(json.dumps({"acc": accuracy, "step": step}))
    print("[tune-metric]: " + json.dumps({"mean_accuracy": accuracy, "training_iteration": step,
                                          "resumed_from": resumed_from}), flush=True)
    time.sleep(0.03)
"""

# Syne Tune's usual loop: from the epoch after the checkpoint's, reports without waiting.
FROM_NEXT_EPOCH = """\
import argparse, json, os, time
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float)
parser.add_argument("--epochs", type=int)
parser.add_argument("--st_checkpoint_dir", type=str)
args, _ = parser.parse_known_args()
checkpoint = os.path.join(args.st_checkpoint_dir, "ck.json")
start = json.load(open(checkpoint))["epoch"] if os.path.exists(checkpoint) else 0
for epoch in range(start + 1, args.epochs + 1):
    time.sleep(0.03)
    os.makedirs(args.st_checkpoint_dir, exist_ok=True)
    json.dump({"epoch": epoch}, open(checkpoint, "w"))
    print("[tune-metric]: " + json.dumps({"epoch": epoch, "loss": (args.lr - 0.01) ** 2 + 1 / epoch}),
          flush=True)
"""

# Trains from its checkpoint to config["epochs"] (set by the scheduler) and exits.
SEGMENTS = """\
from hpo_core.report import get_config, load_checkpoint, report, save_checkpoint
config = get_config()
first = (load_checkpoint() or {"epoch": 0})["epoch"] + 1
for epoch in range(first, config["epochs"] + 1):
    save_checkpoint({"epoch": epoch})
    report(epoch=epoch, loss=(config["x"] - 0.3) ** 2 + 1 / epoch, target=config["epochs"])
"""


def run(tmp_path, script_text, method, space, metric, mode, options, stop, n_workers,
        **backend_options):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(script_text))
    scheduler = build_scheduler(method, space, metric, mode, seed=1, options=options)
    backend = LocalBackend(str(script), gpus=None, **backend_options)
    store = ExperimentStore(tmp_path / "exp", method)
    tuner = Tuner(scheduler, backend, stop, n_workers=n_workers, store=store)
    tuner.run()
    return tuner, load_experiment(store.path).results, store


def test_a_script_reading_st_config_json_filename(tmp_path):
    space = {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}, "n": 3}
    tuner, results, _ = run(tmp_path, CONFIG_JSON, "random", space, "loss", "min", {},
                            StoppingCriterion(max_trials_started=2), 2, syne_tune_compat=True)
    assert [t.status for t in tuner.trials.values()] == [TrialStatus.COMPLETED] * 2
    for trial in tuner.trials.values():
        row = results[results["trial_id"] == trial.trial_id].iloc[0]
        assert row["loss"] == (trial.config["x"] - 0.3) ** 2 and row["n"] == 3


# Changes its working directory first, then reads what Syne Tune's arguments name.
CHDIR_THEN_READ = """\
import argparse, json, os
parser = argparse.ArgumentParser()
parser.add_argument("--st_config_json_filename", type=str)
parser.add_argument("--st_checkpoint_dir", type=str)
args, _ = parser.parse_known_args()
os.chdir("/")
config = json.load(open(args.st_config_json_filename))
print("[tune-metric]: " + json.dumps({
    "loss": config["x"], "key_resolved": config["api_key"] == "s3cr3t-value",
    "paths_absolute": all(map(os.path.isabs, [args.st_config_json_filename,
                                              args.st_checkpoint_dir]))}), flush=True)
"""


def test_syne_tune_arguments_name_absolute_paths_and_the_resolved_config(
        tmp_path, monkeypatch):
    """A relative results root still gives the script absolute paths (it may change its
    directory, as Syne Tune passes absolute ones), and the config file it is pointed at holds
    the trial's secret resolved, like the one `TUNESMITH_CONFIG` names (before: the store's
    config.json, with the reference in it)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TS_TEST_API_KEY", "s3cr3t-value")
    (tmp_path / "train.py").write_text(CHDIR_THEN_READ)
    space = {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0},
             "api_key": {"secret": "env:TS_TEST_API_KEY"}}
    scheduler = build_scheduler("random", space, "loss", "min", seed=1)
    store = ExperimentStore("exp", "relative")  # relative to the working directory
    backend = LocalBackend("train.py", gpus=None, syne_tune_compat=True)
    tuner = Tuner(scheduler, backend, StoppingCriterion(max_trials_started=2), n_workers=2,
                  store=store)
    tuner.run()
    results = load_experiment(store.path).results
    assert [t.status for t in tuner.trials.values()] == [TrialStatus.COMPLETED] * 2
    assert results["key_resolved"].tolist() == [True, True]
    assert results["paths_absolute"].tolist() == [True, True]
    stored = (store.path / "trials" / "0" / "config.json").read_text()
    assert "s3cr3t-value" not in stored and "env:TS_TEST_API_KEY" in stored


def test_a_pbt_example_style_script_exploits_and_continues(tmp_path):
    space = {"lr": {"type": "loguniform", "lower": 1e-3, "upper": 1.0}}
    options = {"resource_attr": "training_iteration", "population_size": 3,
               "perturbation_interval": 2, "quantile_fraction": 0.34}
    tuner, results, store = run(
        tmp_path, PBT_EXAMPLE, "pbt", space, "mean_accuracy", "max", options,
        StoppingCriterion(max_trials_started=8), 3, syne_tune_compat=True)
    trials = tuner.trials.values()
    assert not [t.failure_reason for t in trials if t.status == TrialStatus.FAILED]
    children = [t for t in trials if t.checkpoint_from is not None]
    assert children, "no exploit happened"
    for trial in trials:
        rows = results[results["trial_id"] == trial.trial_id]
        if rows.empty:
            continue  # started as the budget ran out, stopped before its first report
        first = rows.iloc[0]
        if trial.checkpoint_from is None:  # a fresh trial: no folder, so no resume
            assert first["resumed_from"] == 0 and first["training_iteration"] == 1
        else:  # a child continued from its parent's copied checkpoint
            assert first["resumed_from"] >= 1
            assert first["training_iteration"] == first["resumed_from"]
    # a checkpoint folder exists only with a checkpoint in it (none is made empty up front)
    for trial in trials:
        folder = store.path / "trials" / str(trial.trial_id) / "checkpoint"
        assert not folder.is_dir() or (folder / "checkpoint.json").is_file()


def test_pbt_children_of_parents_that_ran_to_max_t_complete_rather_than_fail(tmp_path):
    """The script does not wait for its reports to be seen, so a parent's checkpoint can be at
    max_t by the time a child copies it: the child has nothing left to train and exits without
    a report. That is a completed trial, not a failure (before: 10 of 31 trials failed "exited
    without reporting" and the experiment ended with too many failures)."""
    space = {"lr": {"type": "loguniform", "lower": 1e-4, "upper": 0.1}, "epochs": 9}
    options = {"resource_attr": "epoch", "max_t": 9, "population_size": 4,
               "perturbation_interval": 2}
    tuner, results, _ = run(tmp_path, FROM_NEXT_EPOCH, "pbt", space, "loss", "min", options,
                            StoppingCriterion(max_trials_started=24), 2, syne_tune_compat=True)
    assert not [t.failure_reason for t in tuner.trials.values() if t.status == TrialStatus.FAILED]
    assert [t for t in tuner.trials.values() if t.checkpoint_from is not None], "no exploit"
    assert results["epoch"].max() == 9


def test_max_resource_attr_ends_each_segment_of_a_pause_resume_scheduler(tmp_path):
    space = {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}, "epochs": 9}
    options = {"max_t": 9, "grace_period": 1, "reduction_factor": 3,
               "max_resource_attr": "epochs"}
    tuner, results, _ = run(tmp_path, SEGMENTS, "asha_promotion", space, "loss", "min",
                            options, StoppingCriterion(max_trials_started=9), 3)
    assert not [t for t in tuner.trials.values() if t.status == TrialStatus.FAILED]
    segments = 0
    for _, rows in results.groupby("trial_id"):
        epochs, targets = rows["epoch"].tolist(), rows["target"].tolist()
        assert epochs == list(range(1, len(epochs) + 1))  # each segment continued the last
        assert targets[0] == 1  # a new trial trains to the first rung level
        for target in set(targets):  # each segment ran exactly to the level it was given
            assert target in (1, 3, 9)
            assert max(e for e, t in zip(epochs, targets, strict=True) if t == target) == target
        segments += len(set(targets))
    assert segments > len(tuner.trials)  # some trials were promoted and resumed
    assert results["epoch"].max() == 9
