"""The training-script reporter: report lines, the incremental parser, config, checkpoints."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys

import pytest

from hpo_core.report import (
    CHECKPOINT_ENV,
    CONFIG_ENV,
    MalformedReport,
    Reporter,
    ReportParser,
    config_args,
    format_report,
    get_config,
    load_checkpoint,
    parse_report_line,
    report,
    save_checkpoint,
)

# What syne-tune 0.16's `Reporter()(epoch=1, accuracy=0.5)` prints (it adds the st_ fields).
SYNE_TUNE_LINE = (
    '[tune-metric]: {"epoch": 1, "accuracy": 0.5, "st_worker_timestamp": 1763822000.25, '
    '"st_worker_time": 0.0123, "st_worker_iter": 0}'
)


def test_report_prints_one_parsable_line(capsys):
    report(epoch=3, val_loss=0.41, name="a b")
    Reporter()(epoch=4, val_loss=float("nan"))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == '[tunesmith]: {"epoch": 3, "val_loss": 0.41, "name": "a b"}'
    assert parse_report_line(out[0]) == {"epoch": 3, "val_loss": 0.41, "name": "a b"}
    assert math.isnan(parse_report_line(out[1])["val_loss"])


def test_only_rank_zero_of_a_distributed_launch_reports(capsys, monkeypatch):
    for rank, printed in (("1", False), ("3", False), ("0", True), ("", True)):
        monkeypatch.setenv("RANK", rank)
        report(epoch=1)
        assert bool(capsys.readouterr().out) is printed, rank
    monkeypatch.delenv("RANK")
    report(epoch=1)
    assert capsys.readouterr().out


def test_numpy_like_scalars_are_reported_as_numbers():
    class Scalar:  # numpy / torch scalars have .item()
        def item(self):
            return 0.25

    assert format_report({"loss": Scalar()}) == '[tunesmith]: {"loss": 0.25}'


def test_parser_joins_partial_lines_across_chunks():
    parser = ReportParser()
    line = format_report({"epoch": 1, "loss": 0.5}) + "\n"
    got = []
    for i in range(0, len(line), 3):  # 3-character chunks split the prefix and the JSON
        got += parser.feed(line[i:i + 3])
    assert got == [{"epoch": 1, "loss": 0.5}]
    assert parser.feed("noise\n[tunesmith]: {\"epoch\": 2}\n[tunesmith]: {\"ep") == [{"epoch": 2}]
    assert parser.feed("och\": 3}") == []
    assert parser.flush() == [{"epoch": 3}]  # a last line without newline
    assert parser.flush() == []


def test_parser_skips_malformed_lines_with_a_warning(caplog):
    parser = ReportParser("trial 7")
    text = (
        "plain garbage ]: with a bracket\n"
        "[tunesmith]: {not json\n"
        "[tunesmith]: [1, 2]\n"
        "\x00\x01 binary junk\n"
        "[tunesmith]: {\"epoch\": 1}\n"
    )
    with caplog.at_level(logging.WARNING, logger="hpo_core.report"):
        assert parser.feed(text) == [{"epoch": 1}]
    assert parser.num_malformed == 2
    assert "trial 7: skipped a malformed report line" in caplog.text
    with pytest.raises(MalformedReport):
        parse_report_line("[tunesmith]: 3")


def test_parser_drops_an_overlong_line_and_recovers(caplog):
    parser = ReportParser(max_line_chars=100)
    with caplog.at_level(logging.WARNING, logger="hpo_core.report"):
        assert parser.feed("[tunesmith]: {\"x\": \"" + "y" * 150) == []
        assert parser.feed("y" * 150 + "\"}\n[tunesmith]: {\"epoch\": 1}\n") == [{"epoch": 1}]
    assert parser.num_malformed == 1
    assert "longer than 100" in caplog.text


def test_parser_understands_syne_tune_lines():
    metrics = ReportParser().feed("Epoch 1 done\n" + SYNE_TUNE_LINE + "\n")
    assert metrics == [{"epoch": 1, "accuracy": 0.5, "st_worker_timestamp": 1763822000.25,
                        "st_worker_time": 0.0123, "st_worker_iter": 0}]


def test_config_args_round_trip_through_get_config():
    config = {"lr": 0.01, "layers": 3, "act": "relu", "flag": True, "none": None,
              "text": "a b; echo 'q' \"dq\" $HOME | x", "neg": -2.5, "dash": "-x",
              "digits": "3", "shape": [64, 32], "nested": {"a": 1}}
    args = config_args(config)
    assert args[:4] == ["--lr", "0.01", "--layers", "3"]
    assert "--neg=-2.5" in args and "--dash=-x" in args
    assert get_config(args) == {**config, "digits": 3}  # without the JSON file "3" is a number


def test_get_config_prefers_typed_values_of_the_config_file(tmp_path, monkeypatch):
    config = {"digits": "3", "lr": 0.1, "name": "true"}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    monkeypatch.setenv(CONFIG_ENV, str(path))
    assert get_config(config_args(config)) == config
    # an argument that differs from the file wins (a manual override)
    assert get_config(["--lr", "0.5", "--extra=x", "--verbose"]) == {
        **config, "lr": 0.5, "extra": "x", "verbose": True}


def test_get_config_reads_sys_argv(monkeypatch):
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.setattr(sys, "argv", ["train.py", "--epochs", "5", "--opt", "adam"])
    assert get_config() == {"epochs": 5, "opt": "adam"}


def test_checkpoint_helpers(tmp_path, monkeypatch):
    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    assert save_checkpoint({"epoch": 1}) is None  # outside tunesmith: a no-op
    assert load_checkpoint() is None
    folder = tmp_path / "ckpt"
    monkeypatch.setenv(CHECKPOINT_ENV, str(folder))
    assert load_checkpoint() is None
    assert save_checkpoint({"epoch": 2}) == folder / "checkpoint.json"
    assert save_checkpoint({"weights": [1.5, 2.5], "step": 7}, "model.pkl") == folder / "model.pkl"
    assert load_checkpoint() == {"epoch": 2}
    assert load_checkpoint("model.pkl") == {"weights": [1.5, 2.5], "step": 7}
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.json", "model.pkl"]


def test_import_is_light():
    """Every trial imports the reporter: it must pull in nothing beyond json and math."""
    code = ("import sys; before = set(sys.modules); import hpo_core.report; "
            "print(sorted(set(sys.modules) - before))")
    new = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout.replace("'", '"'))
    heavy = {"logging", "typing", "pickle", "tempfile", "numpy", "threading", "subprocess"}
    assert not heavy & set(new), new
    assert set(new) <= {"hpo_core", "hpo_core.report", "json", "json.decoder", "json.scanner",
                        "_json", "json.encoder", "math", "pathlib",
                        "__future__"}, new  # preloaded on Python 3.11, not on 3.12
    # No timed assertion here (a loaded CI machine measured 114 ms): the module set above is
    # what keeps the import light; benchmarks/ measure speed.
