"""YAHPO Gym surrogates: learning curves predicted by the authors' ONNX models.

A YAHPO scenario folder (`config_space.json`, `encoding.json`, `model.onnx`, as published in
slds-lmu/yahpo_data) plus our `scenario.json` (what YAHPO keeps in its Python package: the order
of the model's inputs and outputs, the time output, each metric's direction) makes one
`YahpoBlackbox` per task. The model is read with onnxruntime; the input is the raw config (the
continuous inputs as float32 in `cont_inputs` order, the categorical ones as integer codes from
`encoding.json`). A config's whole curve (every fidelity) is predicted in one model call and
cached, so replaying it costs one call per distinct config.

    blackbox = load_yahpo(BUNDLED_ROOT / "yahpo-lcbench", task="3945")
    blackbox.curve({"batch_size": 64, ...})     # (52 epochs, 6 objectives), float32

Numerics: a single row reproduces the official `yahpo-gym` package exactly; rows predicted in a
batch of 4 or more go through another matrix kernel of onnxruntime and differ by up to ~3e-4
(relative) in the last float32 digits of the network's arithmetic, the same way for every
call, so replays stay deterministic.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from backends.blackbox.blackbox import RESERVED_NAMES, BlackboxError
from backends.blackbox.surrogate import CurveSurrogate
from hpo_core.space import (
    ConfigSpace,
    Domain,
    choice,
    lograndint,
    loguniform,
    ordinal,
    randint,
    uniform,
)

SCENARIO_FILE = "scenario.json"
SCENARIO_KEYS = ("name", "task_parameter", "fidelity", "cont_inputs", "cat_inputs", "outputs",
                 "time_output", "modes")
#: Curves kept per blackbox (one (fidelities x objectives) float32 array each).
CACHE_SIZE = 100_000

_sessions: dict[Path, Any] = {}


def _session(path: Path) -> Any:
    """The onnxruntime session of a model file (one per process; single-threaded)."""
    if path not in _sessions:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        _sessions[path] = ort.InferenceSession(str(path), options,
                                               providers=["CPUExecutionProvider"])
    return _sessions[path]


def _domain(param: Mapping[str, Any]) -> Domain | Any:
    """A ConfigSpace (JSON format 0.2) hyperparameter as a tunesmith domain or fixed value."""
    kind, name = param.get("type"), param.get("name")
    log = bool(param.get("log", False))
    if kind == "uniform_float":
        return (loguniform if log else uniform)(param["lower"], param["upper"])
    if kind == "uniform_int":
        return (lograndint if log else randint)(int(param["lower"]), int(param["upper"]))
    if kind == "categorical":
        return choice(list(param["choices"]))
    if kind == "ordinal":
        return ordinal(list(param["sequence"]))
    if kind == "constant":
        return param["value"]
    raise BlackboxError(f"config_space.json: hyperparameter {name!r} has unsupported type {kind!r}")


def read_scenario(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed `scenario.json` of a YAHPO folder, with its config space and encoding."""
    folder = Path(folder)
    for required in (SCENARIO_FILE, "config_space.json", "encoding.json", "model.onnx"):
        if not (folder / required).exists():
            raise BlackboxError(f"yahpo: {folder} has no {required}")
    scenario = json.loads((folder / SCENARIO_FILE).read_text())
    missing = [k for k in SCENARIO_KEYS if k not in scenario]
    if missing:
        raise BlackboxError(f"{folder / SCENARIO_FILE}: missing {missing}")
    space = json.loads((folder / "config_space.json").read_text())
    if space.get("conditions") or space.get("forbiddens"):
        raise BlackboxError(f"{folder}/config_space.json: conditions and forbiddens are not supported")
    scenario["params"] = {p["name"]: p for p in space["hyperparameters"]}
    scenario["encoding"] = json.loads((folder / "encoding.json").read_text())
    task_param = scenario["params"].get(scenario["task_parameter"])
    if task_param is None or task_param.get("type") != "categorical":
        raise BlackboxError(f"{folder / SCENARIO_FILE}: task_parameter must name a categorical "
                            "hyperparameter of config_space.json")
    scenario["tasks"] = [str(c) for c in task_param["choices"]]
    unknown = [n for n in scenario["cont_inputs"] + scenario["cat_inputs"]
               if n not in scenario["params"]]
    if unknown:
        raise BlackboxError(f"{folder / SCENARIO_FILE}: inputs {unknown} are not in config_space.json")
    return scenario


class YahpoBlackbox(CurveSurrogate):
    """One task of a YAHPO scenario: its config space, fidelities and predicted curves.

    Offers what the simulated backend reads from a tabulated `Blackbox` (`config_space`,
    `fidelity_name`, `fidelity_values`, `objective_names`, `time_attr`, `modes`,
    `default_metric`, `name`, `num_seeds`) and predicts curves instead of looking them up.
    """

    num_seeds = 1

    def __init__(self, folder: str | os.PathLike[str], task: str | None = None):
        self.folder = Path(folder).resolve()
        scenario = read_scenario(self.folder)
        tasks = scenario["tasks"]
        if task is None:
            if len(tasks) != 1:
                raise BlackboxError(f"task: {scenario['name']!r} has several tasks, pick one of {tasks}")
            task = tasks[0]
        task = str(task)
        if task not in tasks:
            raise BlackboxError(f"task: {scenario['name']!r} has no task {task!r}; available: {tasks}")
        self.task = task
        self._scenario = scenario
        params = scenario["params"]
        fidelity = scenario["fidelity"]
        self.fidelity_name = fidelity
        fparam = params[fidelity]
        values = scenario.get("fidelity_values") or list(
            range(int(fparam["lower"]), int(fparam["upper"]) + 1))
        self.fidelity_values = np.asarray(values)
        skip = {fidelity, scenario["task_parameter"]}
        self.config_space = ConfigSpace({n: _domain(p) for n, p in params.items() if n not in skip})
        rename = scenario.get("rename", {})
        self.objective_names = [rename.get(n, n) for n in scenario["outputs"]]
        clash = sorted(set(self.objective_names) & RESERVED_NAMES)
        if clash:
            raise BlackboxError(f"{SCENARIO_FILE}: outputs {clash} are the tuner's own result "
                                "columns; rename them with 'rename'")
        self.time_attr = rename.get(scenario["time_output"], scenario["time_output"])
        self.modes = {rename.get(n, n): m for n, m in scenario["modes"].items()}
        self.default_metric = rename.get(scenario.get("default_metric", ""),
                                         scenario.get("default_metric")) or self.objective_names[0]
        self.metadata = {"name": scenario["name"], "task": task, "source": str(self.folder)}
        self._objective_index = {n: i for i, n in enumerate(self.objective_names)}
        self._time_index = self._objective_index[self.time_attr]
        self._cont = scenario["cont_inputs"]
        self._cat = scenario["cat_inputs"]
        self._codes = {n: {str(k): int(v) for k, v in scenario["encoding"][n].items()}
                       for n in self._cat}
        self._names = self.config_space.names
        self._cache: dict[Hashable, np.ndarray] = {}

    # -- what a tabulated Blackbox offers ------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def max_fidelity(self) -> float:
        return self.fidelity_values[-1].item()

    def objective_index(self, name: str) -> int:
        try:
            return self._objective_index[name]
        except KeyError:
            raise BlackboxError(f"metric: {name!r} is not an objective of blackbox {self.name!r}; "
                                f"it has {self.objective_names}") from None

    # -- predictions ---------------------------------------------------------------------------
    def _inputs(self, configs: list[Mapping[str, Any]], fidelities: list[float]
                ) -> dict[str, np.ndarray]:
        task_param, fidelity = self._scenario["task_parameter"], self.fidelity_name
        cont = np.empty((len(configs), len(self._cont)), dtype=np.float32)
        cat = np.empty((len(configs), len(self._cat)), dtype=np.int32)
        for row, (config, f) in enumerate(zip(configs, fidelities, strict=True)):
            for j, name in enumerate(self._cont):
                value = f if name == fidelity else config[name]
                cont[row, j] = float(value)
            for j, name in enumerate(self._cat):
                value = self.task if name == task_param else config[name]
                code = self._codes[name].get(str(value))
                if code is None:
                    raise BlackboxError(f"config.{name}: {value!r} has no code in encoding.json")
                cat[row, j] = code
        return {"x_cont": cont, "x_cat": cat}

    def predict(self, configs: list[Mapping[str, Any]], fidelities: list[float]) -> np.ndarray:
        """Model outputs (rows x objectives, float32) of configs at fidelities, in one call."""
        missing = sorted({n for c in configs for n in self._names if n not in c})
        if missing:
            raise BlackboxError(f"config: the blackbox {self.name!r} needs the hyperparameters "
                                f"{missing}")
        inputs = self._inputs(configs, fidelities)
        session = _session(self.folder / "model.onnx")
        return np.asarray(session.run(None, inputs)[0], dtype=np.float32)

    def key(self, config: Mapping[str, Any], seed: int = 0) -> Hashable:
        try:
            return tuple(float(config[n]) if isinstance(config[n], int | float) else config[n]
                         for n in self._names)
        except KeyError:
            missing = [n for n in self._names if n not in config]
            raise BlackboxError(f"config: the blackbox {self.name!r} needs the hyperparameters "
                                f"{missing}") from None

    def curve(self, config: Mapping[str, Any], seed: int = 0) -> np.ndarray:
        """(fidelities, objectives) float32 for `config`, every fidelity in one model call;
        the elapsed time made non-decreasing. Cached per config."""
        key = self.key(config)
        curve = self._cache.get(key)
        if curve is None:
            fidelities = self.fidelity_values.tolist()
            curve = self.predict([config] * len(fidelities), fidelities)
            times = curve[:, self._time_index]
            finite = np.where(np.isfinite(times), times, -math.inf)
            curve[:, self._time_index] = np.where(np.isfinite(times),
                                                  np.maximum.accumulate(finite), np.nan)
            curve.setflags(write=False)
            if len(self._cache) >= CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = curve
        return curve

    def __repr__(self) -> str:
        return (f"YahpoBlackbox({self.name!r}, task {self.task!r}: {len(self.fidelity_values)} "
                f"{self.fidelity_name}s, objectives {self.objective_names})")


def is_yahpo_folder(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / SCENARIO_FILE).exists() and (Path(path) / "model.onnx").exists()


def yahpo_tasks(folder: str | os.PathLike[str]) -> list[str]:
    """The task ids of a YAHPO scenario folder."""
    return read_scenario(folder)["tasks"]
