"""The experiment as a Prefect flow: `tune(spec)`; and `run_tune(spec)` for the CLI.

`tune` takes the spec as an ExperimentSpec, a dict or a path to a YAML/JSON file (so a
deployment parameter can carry it). On a real backend each trial segment is one Prefect task
(`flows._prefect_backend`); a simulated experiment runs inside one task (Prefect's per-task
overhead would dominate a simulated trial). The experiment is tracked in MLflow
(`flows.tracking`) and reported as Prefect artifacts (`flows.artifacts`): live progress, a
leaderboard table and a summary with the incumbent-trajectory plot.

Running `tune` again on an experiment whose store holds a state resumes it: finished trials
are kept, paused and interrupted ones continue, and the MLflow parent run is reused.

The flow has no retries: a user error (a spec field, an option the backend or the scheduler
refuses, too many failed trials, a full disk) ends it Failed with a one-line message
(`flows.failures`), and an infrastructure error while launching a trial is retried by that
trial's task. Secrets never reach Prefect: the flow-run parameters are stored masked
(`hpo_core.secrets.redact`; the flow itself gets them whole), and every log record is masked.
"""

# No `from __future__ import annotations` in flow modules: Prefect validates parameters from the
# annotations, and a served flow run gets the function without all of its module's globals.
import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

# Defaults for Prefect's temporary local server, if this module is the first to import Prefect.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

from prefect import Flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.runtime import flow_run
from prefect.states import Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from prefect.utilities.urls import url_for

from flows._log_thread import LogThread
from flows._prefect_backend import PrefectTrialBackend
from flows.artifacts import ProgressArtifact, publish_leaderboard, publish_summary
from flows.experiment import assemble
from flows.failures import check_outcome, user_error
from flows.status import StatusView, TrialLogLines, api_only
from flows.tracking import MlflowTracker
from hpo_core.backend import ClockKind
from hpo_core.secrets import mask_logs, redact, spec_secret_names
from hpo_core.spec import ExperimentSpec
from hpo_core.store import Experiment, dumps, load_experiment
from hpo_core.trial import TrialStatus, counts_text, trial_counts
from hpo_core.trial_value import format_value
from hpo_core.tuner import TooManyFailuresError, Tuner, TuningResult

mask_logs()

SpecLike = ExperimentSpec | dict[str, Any] | str | Path


@task(name="simulate", task_run_name="simulate", cache_policy=NO_CACHE, persist_result=False)
def simulate(tuner: Tuner) -> TuningResult | TooManyFailuresError:
    """The whole simulated experiment as one task (too many failures: a result, not a crash)."""
    try:
        return tuner.run()
    except TooManyFailuresError as err:
        return err


def _flow_run_name() -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        return f"{ExperimentSpec.coerce(flow_run.parameters['spec']).name}-{stamp}"
    except Exception:  # noqa: BLE001 - a bad spec fails in the flow, with its message
        return f"experiment-{stamp}"


P = ParamSpec("P")
R = TypeVar("R")
RunLogger = logging.Logger | logging.LoggerAdapter[Any]  # what get_run_logger() gives


class MaskedFlow(Flow[P, R]):
    """A flow whose parameters are stored (in Prefect's database, its UI) with secrets masked."""

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        serialized = super().serialize_parameters(parameters)
        spec = serialized.get("spec")
        names = spec_secret_names(spec) if isinstance(spec, dict) else set()
        return redact(serialized, names)

    def with_options(self, **options: Any) -> "MaskedFlow[P, R]":
        new = super().with_options(**options)
        new.__class__ = MaskedFlow
        assert isinstance(new, MaskedFlow)
        return new


def masked_flow(**options: Any) -> Callable[[Callable[P, R | State]], MaskedFlow[P, R]]:
    """`@flow(**options)` for a MaskedFlow whose function may also return a final state:
    calling the flow gives the function's other results (a Failed state raises)."""
    def wrap(fn: Callable[P, R | State]) -> MaskedFlow[P, R]:
        return cast(MaskedFlow[P, R], MaskedFlow(fn, **options))
    return wrap


@masked_flow(name="tune", flow_run_name=_flow_run_name, task_runner=ThreadPoolTaskRunner(),
             persist_result=False)


def tune(
    spec: SpecLike,
    tracking_uri: str | None = None,
    track: bool = True,
    mlflow_experiment: str | None = None,
    checkpoint_interval: float = 5.0,
    leaderboard_size: int = 10,
    objective: Any = None,
    scheduler: Any = None,
    status_view: bool = False,
) -> dict[str, Any] | State:
    """Run (or resume) one experiment.

    Args:
        spec: an ExperimentSpec, its dict, or a path to its YAML/JSON file.
        tracking_uri: MLflow tracking URI (default: the spec's, $MLFLOW_TRACKING_URI, else
            `sqlite:///mlflow.db`).
        track: log to MLflow.
        mlflow_experiment: MLflow experiment holding the parent run (default: the spec's name).
        checkpoint_interval: wall seconds between saves of the experiment's state.
        leaderboard_size: configs in the leaderboard artifact.
        objective: a Python function or class to run instead of the spec's entry point, and
        scheduler: a method object to use instead of `spec.scheduler` (both for the Python
            API, `tunesmith.tune`, in this process; a deployment names them in the spec).
        status_view: show the live status view on stdout (`flows.status.StatusView`; the
            per-trial log lines then reach the Prefect API only, not the console).

    Returns:
        The outcome: best config and value, counts, store path, MLflow run ids and UI command
        (the data of a Completed state whose message states the best value).
    """
    try:
        return _tune(spec, tracking_uri, track, mlflow_experiment, checkpoint_interval,
                     leaderboard_size, objective, scheduler, status_view)
    except Exception as err:
        message = user_error(err)
        if message is None:
            raise
        return Failed(data=err, message=message)  # one line, and no retry


def _tune(spec: SpecLike, tracking_uri: str | None, track: bool, mlflow_experiment: str | None,
          checkpoint_interval: float, leaderboard_size: int, objective: Any,
          scheduler: Any, status_view: bool) -> State:
    logger = get_run_logger()
    threading.Thread(target=_import_matplotlib, daemon=True).start()  # for the plot at the end
    spec = ExperimentSpec.coerce(spec)
    experiment = assemble(spec, objective=objective, scheduler=scheduler)
    run_id = str(flow_run.id) if flow_run.id else None
    run_url = url_for("flow-run", run_id) if run_id else None
    prefect_tags = {"prefect.flow_run_id": run_id, **({"prefect.flow_run_url": run_url}
                                                      if run_url else {})} if run_id else None
    tracker = MlflowTracker(spec, tracking_uri, mlflow_experiment, tags=prefect_tags) \
        if track else None
    # the per-trial lines are written by their own thread (the tuner does not wait on logging)
    log_lines = LogThread(api_only(logger) if status_view else logger)
    views = [StatusView(), TrialLogLines(log_lines)] if status_view \
        else [TrialLogLines(log_lines)]
    callbacks = [c for c in (tracker, ProgressArtifact(spec.name), *views) if c is not None]
    simulated = experiment.backend.clock_kind is ClockKind.SIMULATED
    if not simulated:  # each trial segment becomes a Prefect task
        experiment.backend = PrefectTrialBackend(experiment.backend)
    tuner = experiment.tuner(callbacks)
    tuner.checkpoint_interval = checkpoint_interval
    resumed = tuner.store is not None and tuner.store.has_state()
    logger.info("%s experiment %s: %s on the %s backend, %d workers",
                "resuming" if resumed else "starting", spec.name, spec.scheduler, spec.backend,
                tuner.n_workers)
    try:
        try:
            # quote(): Prefect unwraps it before the call, but its Task types do not model it
            result = simulate(quote(tuner)) if simulated else tuner.run()  # type: ignore[call-overload]
        finally:
            log_lines.close()  # every trial's line is out before the experiment's last ones
        if isinstance(result, TooManyFailuresError):
            raise result
    except TooManyFailuresError:
        _report(spec, tuner, tuner.result(), tracker, run_id, resumed, leaderboard_size, logger)
        raise
    except BaseException as err:
        _close(tracker, logger)  # keep what was tracked; a new run resumes from the store
        if isinstance(err, Exception) and user_error(err) is None:
            logger.error("experiment %s failed: %s: %s", spec.name, type(err).__name__, err)
        elif not isinstance(err, Exception):  # a kill: Ctrl-C, a signal, a cancellation
            logger.warning("experiment %s interrupted (%s): trials ended, state saved; running "
                           "it again (`tunesmith resume %s`, or the same deployment run) "
                           "continues it", spec.name, type(err).__name__, spec.name)
        raise
    outcome = _report(spec, tuner, result, tracker, run_id, resumed, leaderboard_size, logger)
    check_outcome(outcome)
    # the message shows in the UI and with `--watch`
    return Completed(message=_final_message(outcome), data=outcome)


def _report(spec: ExperimentSpec, tuner: Tuner, result: TuningResult,
            tracker: MlflowTracker | None, run_id: str | None, resumed: bool,
            leaderboard_size: int, logger: RunLogger) -> dict[str, Any]:
    """The end of an experiment, however it ended: the plot, MLflow closed, the leaderboard
    and summary artifacts, one log line; the outcome."""
    assert tuner.store is not None  # build_tuner opens the experiment's store
    experiment = load_experiment(tuner.store.path)
    plot, curves = experiment.plot_trajectory(), experiment.plot_learning_curves()
    if tracker is not None:
        tracker.log_artifact(plot)
        tracker.log_artifact(curves)
    _close(tracker, logger)
    outcome = _outcome(spec, tuner, result, tracker, run_id, resumed)
    outcome.update(_best_step(experiment, result.best_trial_id))
    publish_leaderboard(spec.name, experiment, leaderboard_size)
    publish_summary(spec.name, experiment, outcome, plot, curves)
    logger.info("experiment %s: %s", spec.name, _final_message(outcome))
    return outcome


def _final_message(outcome: dict[str, Any]) -> str:
    """`best val_loss = 0.1138 (trial 3, epoch 9); 12 trials: ...; ended: <reason>`."""
    if outcome.get("best_trial_id") is None:
        best = f"no trial that did not fail reported {outcome['metric']}"
    else:
        best = (f"best {outcome['metric']} = {format_value(outcome['best_value'])} "
                f"(trial {outcome['best_trial_id']}, {outcome.get('best_step_name', 'step')} "
                f"{format_value(outcome.get('best_step'))})")
    return f"{best}; {counts_text(outcome['counts'])}; ended: {outcome['reason']}"


def _best_step(experiment: Experiment, trial_id: int | None) -> dict[str, Any]:
    """The step (e.g. epoch) of the best trial's best report, as the store's analysis has it."""
    if trial_id is None:
        return {}
    value = experiment.trial_values().get(trial_id)
    return {"best_step": value.step if value else None,
            "best_step_name": experiment.resource_attr or "report"}


def _import_matplotlib() -> None:
    """Import the plotting library while the experiment runs (seconds on a busy machine)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def _close(tracker: MlflowTracker | None, logger: RunLogger) -> None:
    if tracker is None:
        return
    tracker.close()
    if tracker.error:
        logger.warning("MLflow tracking incomplete: %s. The experiment store is complete.",
                       tracker.error)


def _outcome(spec: ExperimentSpec, tuner: Tuner, result: TuningResult,
             tracker: MlflowTracker | None, run_id: str | None, resumed: bool) -> dict[str, Any]:
    assert tuner.store is not None  # build_tuner opens the experiment's store
    status = tuner.status
    failed = [t for t in tuner.trials.values() if t.status == TrialStatus.FAILED]
    children = tracker.child_run_ids() if tracker else {}
    best_child = children.get(result.best_trial_id) if result.best_trial_id is not None else None
    outcome = {
        "experiment": spec.name,
        "store_path": str(Path(tuner.store.path).resolve()),
        "resumed": resumed,
        "reason": result.reason,
        "metric": tuner.scheduler.metric,
        "mode": tuner.scheduler.mode,
        "best_config": None if result.best_config is None
        else redact(result.best_config, spec_secret_names(spec.to_dict())),
        "best_value": result.best_value,
        "best_trial_id": result.best_trial_id,
        "counts": trial_counts((t.status for t in tuner.trials.values()), status.num_results,
                               ended=True),
        "last_failure": f"trial {failed[-1].trial_id}: {failed[-1].failure_reason}"
        if failed else None,
        "scheduler": spec.scheduler,
        "backend": spec.backend,
        "flow_run_id": run_id,
        "mlflow_tracking_uri": tracker.tracking_uri if tracker else None,
        "mlflow_experiment_id": tracker.experiment_id if tracker else None,
        "mlflow_parent_run_id": tracker.parent_run_id if tracker and not tracker.error else None,
        "mlflow_run_url": tracker.run_url() if tracker and not tracker.error else None,
        "mlflow_best_run_url": tracker.run_url(best_child) if tracker and best_child else None,
        "mlflow_ui_command": tracker.ui_command if tracker else None,
        "mlflow_error": tracker.error if tracker else None,
    }
    return json.loads(dumps(outcome))


def run_tune(spec: SpecLike, tracking_uri: str | None = None, **options: Any) -> dict[str, Any]:
    """Run `tune` here and now (Prefect's temporary local API unless PREFECT_API_URL is set;
    MLflow on `sqlite:///mlflow.db` unless told otherwise) and return its outcome: the best
    config, `flow_run_id`, `mlflow_parent_run_id` and `mlflow_ui_command` among others."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    spec = ExperimentSpec.coerce(spec)
    workers = spec.n_workers if isinstance(spec.n_workers, int) else 4 * (os.cpu_count() or 1)
    runner: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=workers + 4)  # "auto": room for GPU slots
    return tune.with_options(task_runner=runner)(spec, tracking_uri=tracking_uri, **options)
