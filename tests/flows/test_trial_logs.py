"""Trial output as MLflow artifacts: tails of long files, masked secrets, nothing for no output."""

from __future__ import annotations

import tempfile
from pathlib import Path

import flows._trial_logs as trial_logs
from flows._trial_logs import find_trial_logs, upload_trial_logs


def test_long_output_is_cut_to_its_tail_and_secrets_are_masked(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setattr(trial_logs, "MAX_LOG_BYTES", 200)
    trial = tmp_path / "trials" / "3"
    trial.mkdir(parents=True)
    lines = [f"step {i} token=s3cr3t-value" for i in range(100)]
    (trial / "stdout").write_text("\n".join(lines) + "\n")
    (trial / "stderr").write_text("")  # empty: not attached
    logs = find_trial_logs(trial, ["s3cr3t-value", "ab", None])
    assert logs is not None and [p.name for p in logs.files] == ["stdout"]
    assert logs.secrets == ["s3cr3t-value"]  # too short to be a secret: "ab"

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("logs")).info.run_id
    upload_trial_logs(client, run_id, logs)
    assert [a.path for a in client.list_artifacts(run_id, "logs")] == ["logs/stdout.txt"]
    with tempfile.TemporaryDirectory() as folder:
        text = Path(client.download_artifacts(run_id, "logs/stdout.txt", folder)).read_text()
    head, *kept = text.splitlines()
    assert head.startswith("[... the first ") and "bytes are left out" in head
    assert kept[-1] == "step 99 token=[redacted]" and len(text) < 300
    assert all(line.startswith("step ") for line in kept)  # the cut line was dropped whole
    assert "s3cr3t" not in text


def test_no_output_files_no_logs(tmp_path):
    assert find_trial_logs(tmp_path, []) is None
