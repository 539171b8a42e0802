"""Screenshots of what a user sees, taken with headless Chromium (not part of `make test`).

Starts `prefect server start` and `mlflow server` on free loopback ports (state in a temporary
folder), runs a small experiment through the `tune` flow against both, and saves PNGs of the
Prefect flow run, its summary and leaderboard artifacts, and the MLflow experiment, parent run
and compare pages into this folder. Needs a `chromium` binary (Debian: `apt-get install chromium`).

    .venv/bin/python docs/screenshots/take.py [--trials 60] [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} ended with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return time.monotonic() - started
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def api(url: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def shoot(chromium: str, url: str, path: Path, height: int = 1000) -> None:
    """One page as a PNG, after its scripts had 20 s (virtual time) to fetch and draw."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        subprocess.run(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--window-size=1440,{height}",
             "--virtual-time-budget=20000", f"--screenshot={path}", url],
            check=True, timeout=120, capture_output=True)
    print(f"saved {path.relative_to(REPO) if path.is_relative_to(REPO) else path}  <- {url}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("error: no chromium binary (apt-get install chromium)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="tunesmith-shots-"))
    prefect_port, mlflow_port = free_port(), free_port()
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect"),
           "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
           "DO_NOT_TRACK": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = []
    try:
        procs.append(subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
             "--port", str(prefect_port)], env=env, cwd=work, start_new_session=True,
            stdout=open(work / "prefect.log", "wb"), stderr=subprocess.STDOUT))  # noqa: SIM115
        procs.append(subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}",
             "--artifacts-destination", str(work / "mlartifacts")],
            env=env, cwd=work, start_new_session=True,
            stdout=open(work / "mlflow.log", "wb"), stderr=subprocess.STDOUT))  # noqa: SIM115
        prefect_ui, mlflow_ui = f"http://127.0.0.1:{prefect_port}", f"http://127.0.0.1:{mlflow_port}"
        print(f"prefect server healthy after {wait_for(prefect_ui + '/api/health', procs[0]):.0f} s")
        print(f"mlflow server healthy after {wait_for(mlflow_ui + '/health', procs[1]):.0f} s")

        spec = {"name": "lcbench-asha", "metric": "Train/val_cross_entropy", "mode": "min",
                "scheduler": "asha", "scheduler_options": {"reduction_factor": 3},
                "backend_options": {"blackbox": "lcbench",
                                    "task": "blood-transfusion-service-center"},
                "stop": {"max_trials_completed": args.trials}, "n_workers": 4, "seed": 0,
                "results_root": str(work / "experiments")}
        code = ("import json, sys; from flows.tune import run_tune; "
                "print('OUTCOME ' + json.dumps(run_tune(json.loads(sys.argv[1]), "
                "tracking_uri=sys.argv[2])))")
        done = subprocess.run([sys.executable, "-c", code, json.dumps(spec), mlflow_ui],
                              env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
        lines = [line for line in done.stdout.splitlines() if line.startswith("OUTCOME ")]
        if done.returncode != 0 or not lines:
            print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
            return 1
        outcome = json.loads(lines[-1][len("OUTCOME "):])
        flow_run, experiment = outcome["flow_run_id"], outcome["mlflow_experiment_id"]
        artifacts = api(f"{prefect_ui}/api/artifacts/filter",
                        {"flow_runs": {"id": {"any_": [flow_run]}}})
        by_key = {a["key"]: a["id"] for a in artifacts if a.get("key")}
        runs = api(f"{mlflow_ui}/api/2.0/mlflow/runs/search", {
            "experiment_ids": [experiment], "max_results": 5,
            "filter": f"tags.`mlflow.parentRunId` = '{outcome['mlflow_parent_run_id']}'",
            "order_by": ["metrics.`best_Train/val_cross_entropy` ASC"]})["runs"]
        top = [r["info"]["run_id"] for r in runs if r["info"]["run_id"] !=
               outcome["mlflow_parent_run_id"]][:5]
        compare = urllib.parse.quote(json.dumps(top)), urllib.parse.quote(json.dumps([experiment]))

        out = args.out
        out.mkdir(parents=True, exist_ok=True)
        shoot(chromium, f"{prefect_ui}/runs/flow-run/{flow_run}", out / "prefect-flow-run.png")
        shoot(chromium, f"{prefect_ui}/artifacts/artifact/{by_key['lcbench-asha-summary']}",
              out / "prefect-summary.png", height=2000)
        shoot(chromium, f"{prefect_ui}/artifacts/artifact/{by_key['lcbench-asha-leaderboard']}",
              out / "prefect-leaderboard.png")
        view = "workflowType=machine_learning"  # what the links we print ask for
        shoot(chromium, f"{mlflow_ui}/#/experiments/{experiment}?{view}",
              out / "mlflow-experiment.png")
        shoot(chromium, outcome["mlflow_run_url"], out / "mlflow-parent-run.png", height=1400)
        shoot(chromium, f"{mlflow_ui}/#/compare-runs?runs={compare[0]}&experiments={compare[1]}"
                        f"&{view}", out / "mlflow-compare.png", height=1400)
        print(f"best {outcome['metric']} = {outcome['best_value']:.4g} "
              f"(trial {outcome['best_trial_id']}); {outcome['counts']}")
        return 0
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
