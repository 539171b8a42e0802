"""The canary: secrets given three ways reach the trial, and nothing else.

A secret as a literal hyperparameter (`api_key`), as a reference (`{secret: env:...}`) and as a
credential environment variable (AWS_SECRET_ACCESS_KEY) go through `tunesmith run` (the `tune`
flow on the local backend); one trial fails with a traceback that holds all three. Then the
bytes of the Prefect database, PREFECT_HOME, the MLflow database and artifact folder and the
console output are searched: no canary anywhere, while the trial received every value.
"""

from __future__ import annotations

import json
import os
import tempfile
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flows.cli import main

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

LITERAL = "SK-canary-literal-7f3a91"
REFERENCED = "canary-referenced-42b8c0d1"
CREDENTIAL = "canary-credential-9d1e55c3b7"
CANARIES = (LITERAL, REFERENCED, CREDENTIAL)

SCRIPT = textwrap.dedent("""
    import json, os, sys
    from hpo_core.report import get_config, report, trial_id

    config = get_config()
    with open(os.environ["CONFIG_FILE_COPY"] + str(trial_id()), "w") as f:
        f.write(open(os.environ["TUNESMITH_CONFIG"]).read())
    received = {"api_key": config["api_key"], "endpoint": config["endpoint"],
                "aws": os.environ["AWS_SECRET_ACCESS_KEY"]}
    print("config:", config, "aws:", received["aws"])
    with open(os.environ["RECEIVED"] + str(trial_id()), "w") as f:
        json.dump(received, f)
    report(epoch=1, loss=float(config["x"]))
    if config["x"] > 0.9:
        raise RuntimeError("cannot reach " + " ".join(received.values()))
""")


def all_bytes(paths: list[Path]) -> bytes:
    """Every file under these paths; parquet files also as their decoded text."""
    chunks = []
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in files:
            chunks.append(path.read_bytes())
            if path.suffix == ".parquet":
                chunks.append(pd.read_parquet(path).to_json().encode())
    return b"\n".join(chunks)


def prefect_database() -> Path:
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    url = PREFECT_API_DATABASE_CONNECTION_URL.value()
    return Path(url.split(":///", 1)[1])


def test_no_secret_leaks_through_the_tune_flow(tmp_path: Path, monkeypatch, prefect_console) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIAL)
    monkeypatch.setenv("CANARY_ENDPOINT", REFERENCED)
    monkeypatch.setenv("RECEIVED", str(tmp_path / "received-"))
    monkeypatch.setenv("CONFIG_FILE_COPY", str(tmp_path / "config-file-"))
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    spec = {
        "name": "canary",
        "metric": "loss",
        "config_space": {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0},
                         "api_key": LITERAL,
                         "endpoint": {"secret": "env:CANARY_ENDPOINT"}},
        "scheduler": "random",
        "scheduler_options": {"points_to_evaluate": [{"x": 0.2}, {"x": 0.95}, {"x": 0.5}]},
        "backend": "local",
        "backend_options": {"entry_point": str(script), "gpus": None},
        "stop": {"max_trials_started": 3},
        "n_workers": 1,
        "results_root": str(tmp_path / "experiments"),
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    spec_path = tmp_path / "canary.yaml"
    spec_path.write_text(yaml.safe_dump(spec))

    assert main(["run", str(spec_path)]) == 0
    time.sleep(3)  # logs go to the API in batches, the server writes events in the background
    console = prefect_console.readouterr()

    # the trial got every value: as arguments, in its config file, in its environment
    for tid in range(3):
        received = json.loads((tmp_path / f"received-{tid}").read_text())
        assert received == {"api_key": LITERAL, "endpoint": REFERENCED, "aws": CREDENTIAL}
        assert json.loads((tmp_path / f"config-file-{tid}").read_text())["endpoint"] == REFERENCED
    store = tmp_path / "experiments" / "canary"
    state = json.loads((store / "state.json").read_text())
    assert state["trials"]["1"]["status"] == "failed"
    assert "cannot reach" in state["trials"]["1"]["failure_reason"]
    assert "cannot reach " + " ".join(CANARIES) in (store / "trials" / "1" / "stderr").read_text()
    # the store keeps the reference, never its value
    kept = all_bytes([store / "spec.json", store / "state.json", store / "results.parquet",
                      *store.glob("trials/*/config.json")])
    assert b"env:CANARY_ENDPOINT" in kept and REFERENCED.encode() not in kept
    left = Path(tempfile.gettempdir()).glob("tunesmith-*/config-*.json")  # removed at each end
    assert not [p for p in left if REFERENCED in p.read_text()]

    database = prefect_database()
    searched = {
        "prefect database": all_bytes([p for p in database.parent.glob(database.name + "*")]),
        "PREFECT_HOME": all_bytes([Path(os.environ["PREFECT_HOME"])]),
        "mlflow": all_bytes([tmp_path / "mlflow.db", tmp_path / "mlartifacts"]),
        "console": (console.out + console.err).encode(),
    }
    assert b"canary" in searched["prefect database"]  # the flow run is there: right database
    assert b"logs/stderr.txt" in searched["mlflow"] or (tmp_path / "mlartifacts").exists()
    assert "cannot reach" in console.err + console.out or b"cannot reach" in \
        searched["prefect database"]
    for where, data in searched.items():
        for canary in CANARIES:
            assert canary.encode() not in data, f"{canary} leaked into the {where}"
