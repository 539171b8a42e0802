"""Any Optuna sampler as a searcher, through Optuna's ask-and-tell interface.

Optuna is an optional extra (`pip install 'tunesmith[optuna]'`), imported when the searcher is
built. The sampler is named (`"tpe"`, multivariate by default; `"cmaes"`, `"nsga2"`, `"gp"`,
`"qmc"`, `"random"`) with `sampler_options` passed to its class, or given as an Optuna sampler
instance. The searcher keeps one in-memory study (minimizing): each trial it proposes is
`study.ask()` with the space's distributions, and its value is told when the trial ends (the
last value observed; a trial with none is told as failed). Configs it did not propose (from
`points_to_evaluate`) are added to the study as finished trials when they end. Under a
pause/resume scheduler a trial is told at its first pause; when it is resumed and ends again it
is added once more as a new finished trial (an Optuna trial cannot be reopened).

Domains map to Optuna distributions: `uniform`/`loguniform` to floats, `randint`/`lograndint`
to integers, ordered values (`ordinal`, `finrange`) to the integer index of the value, `choice`
to a categorical over the index of the value (any JSON value works as a category).

A conditional space (hyperparameters under `when`) is asked define-by-run: the trial's
hyperparameters are suggested one by one in the space's order, each only when its conditions
hold for the values drawn before it, so the study records the active ones only (Optuna's way
for conditional spaces). TPE then samples the groups of hyperparameters that occur together
jointly (`group=True`, unless `sampler_options` says otherwise); samplers that need one fixed
space (CMA-ES, GP, QMC) sample the hyperparameters outside the space all trials share
independently. Those that log a warning for each such hyperparameter of each trial
(`warn_independent_sampling`; TPE's is deprecated) are built with it off, unless
`sampler_options` turns it on.

A config is never proposed twice, as with every searcher here: when the sampler asks for one
it proposed (or saw started) before, that Optuna trial is told the value the config got
(Optuna's own advice for repeats; failed if it has none yet) and the sampler is asked again,
up to `MAX_REPEATS` times, after which the space is taken as exhausted (a small finite space).

State: the ask/tell history. Loading it replays the history into a fresh study with a sampler
seeded the same way, so a resumed searcher proposes what the original would have (samplers
given as instances cannot be rebuilt: their state holds the history only).
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from hpo_core.searchers.base import Searcher
from hpo_core.searchers.seen_configs import SeenConfigs, config_digest
from hpo_core.space import Categorical, ConfigSpace, Float, Integer, Ordinal

SAMPLERS = {
    "tpe": ("TPESampler", {"multivariate": True}),
    "cmaes": ("CmaEsSampler", {}),
    "nsga2": ("NSGAIISampler", {}),
    "gp": ("GPSampler", {}),
    "qmc": ("QMCSampler", {}),
    "random": ("RandomSampler", {}),
}

logger = logging.getLogger(__name__)

#: asks in a row that found only configs proposed before, after which the space is exhausted
MAX_REPEATS = 100


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ValueError("searcher: 'optuna' needs Optuna: pip install 'tunesmith[optuna]'"
                         ) from err
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no INFO line per told trial
    return optuna


class OptunaSearcher(Searcher):
    """Proposes configs with an Optuna sampler (ask) and feeds it the results (tell).

    Args:
        sampler: a name of `SAMPLERS` or an `optuna.samplers.BaseSampler` instance.
        sampler_options: keyword arguments of the sampler class (`seed` is the searcher's).
    """

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        seed: int | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
        sampler: Any = "tpe",
        sampler_options: Mapping[str, Any] | None = None,
    ):
        super().__init__(config_space, seed, points_to_evaluate)
        optuna = _optuna()
        if isinstance(sampler, str) and sampler not in SAMPLERS:
            raise ValueError(f"sampler: unknown sampler {sampler!r}; expected "
                             f"one of {sorted(SAMPLERS)} or an Optuna sampler instance")
        if sampler == "gp" and importlib.util.find_spec("torch") is None:
            raise ValueError("sampler: 'gp' (Optuna's GPSampler) needs PyTorch: "
                             "pip install torch")
        if not isinstance(sampler, str) and not isinstance(sampler, optuna.samplers.BaseSampler):
            raise ValueError(f"sampler: expected a name or an Optuna sampler, "
                             f"got {type(sampler).__name__}")
        if sampler_options is not None and not isinstance(sampler_options, Mapping):
            raise ValueError(f"sampler_options: must be a mapping of the sampler's keyword "
                             f"arguments, got {sampler_options!r}")
        self.sampler = sampler
        self.sampler_options = dict(sampler_options or {})
        if "seed" in self.sampler_options:
            raise ValueError("sampler_options.seed: the searcher's seed is used")
        self._distributions = {name: _distribution(optuna, name, domain)
                               for name, domain in self.config_space.domains.items()}
        self._study = self._new_study()
        self._asked: dict[int, Any] = {}  # trial id -> Optuna trial asked for it
        self._foreign: dict[int, dict[str, Any]] = {}  # trial id -> config not asked by us
        self._values: dict[int, float] = {}  # last value observed per pending trial
        # ["ask", id, params] / ["tell", id, v] / ["add", p, v] / ["repeat", params, v]
        self._log: list[list[Any]] = []
        self._seen = SeenConfigs()  # configs proposed or seen started
        self._outcomes: dict[str, float | None] = {}  # a finished config's value, by digest

    def _new_study(self) -> Any:
        optuna = _optuna()
        if isinstance(self.sampler, str):
            class_name, defaults = SAMPLERS[self.sampler]
            sampler_class = getattr(optuna.samplers, class_name)
            if self.sampler == "tpe" and self.config_space.is_conditional:
                defaults = {**defaults, "group": True}  # the branches' groups, jointly
            if self.sampler != "tpe" and \
                    "warn_independent_sampling" in inspect.signature(sampler_class).parameters:
                defaults = {**defaults, "warn_independent_sampling": False}
            options = {**defaults, **self.sampler_options}
            try:
                with warnings.catch_warnings():  # e.g. `group` is experimental
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    sampler = sampler_class(seed=self.seed, **options)
            except TypeError as err:
                raise ValueError(f"searcher_options.sampler_options: {err}") from err
        else:
            sampler = self.sampler
        return optuna.create_study(sampler=sampler, direction="minimize")

    # -- proposing and learning ----------------------------------------------------------------
    def _suggest(self, trial_id: int) -> dict[str, Any] | None:
        for _ in range(MAX_REPEATS):
            trial = self._ask()
            config = self._config(trial.params)
            digest = config_digest(self.config_space, config)
            if digest not in self._seen:
                self._seen.add(digest)
                self._asked[trial_id] = trial
                self._log.append(["ask", trial_id, dict(trial.params)])
                return config
            value = self._outcomes.get(digest)  # a repeat: what that config got, if known
            self._tell(trial, value)
            self._log.append(["repeat", dict(trial.params), value])
        return None  # the space looks exhausted

    def _ask(self) -> Any:
        """A new Optuna trial with its hyperparameters suggested (the active ones only)."""
        space = self.config_space
        if not space.is_conditional:
            return self._study.ask(self._distributions)
        trial = self._study.ask()
        drawn: dict[str, Any] = {}  # the values so far, for the conditions of the next ones
        for name in space.order:
            if space.is_active(name, drawn):
                param = _suggest_param(trial, name, self._distributions[name])
                drawn[name] = self._value(name, param)
        return trial

    def _value(self, name: str, param: Any) -> Any:
        domain = self.config_space.domains[name]
        return domain.categories[int(param)] if isinstance(domain, Categorical) \
            else domain.cast(param)

    def _config(self, params: Mapping[str, Any]) -> dict[str, Any]:
        config = {name: self._value(name, params[name])
                  for name in self.config_space.domains if name in params}
        config.update(self.config_space.fixed)
        return config

    def _params(self, config: Mapping[str, Any]) -> dict[str, Any]:
        return {name: domain.index(config[name]) if isinstance(domain, Categorical)
                else config[name] for name, domain in self.config_space.domains.items()
                if name in config}

    def on_trial_start(self, trial_id: int, config: Mapping[str, Any]) -> None:
        if trial_id not in self._asked:
            self._foreign[trial_id] = dict(config)
            self._seen.add(config_digest(self.config_space, config))

    def on_result(self, trial_id: int, config: Mapping[str, Any], value: float,
                  resource: float | None = None, metrics: Mapping[str, Any] | None = None) -> None:
        if trial_id not in self._asked and trial_id not in self._foreign:
            self._foreign[trial_id] = dict(config)
        self._values[trial_id] = float(value)

    def on_trial_end(self, trial_id: int) -> None:
        value = self._values.pop(trial_id, None)
        if trial_id in self._asked:
            trial = self._asked.pop(trial_id)
            self._tell(trial, value)
            self._log.append(["tell", trial_id, value])
            self._outcomes[config_digest(self.config_space, self._config(trial.params))] = value
        elif trial_id in self._foreign:
            config = self._foreign.pop(trial_id)
            params = self._params(config)
            self._add(params, value)
            self._log.append(["add", params, value])
            self._outcomes[config_digest(self.config_space, config)] = value

    def _tell(self, trial: Any, value: float | None) -> None:
        optuna = _optuna()
        if value is None:
            self._study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self._study.tell(trial, value)

    def _add(self, params: Mapping[str, Any], value: float | None) -> None:
        optuna = _optuna()
        state = optuna.trial.TrialState.COMPLETE if value is not None \
            else optuna.trial.TrialState.FAIL
        self._study.add_trial(optuna.trial.create_trial(
            params=dict(params), distributions={n: self._distributions[n] for n in params},
            value=value, state=state))

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "log": self._log,
                "values": {str(t): v for t, v in self._values.items()},
                "foreign": {str(t): c for t, c in self._foreign.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._study, self._asked, self._log = self._new_study(), {}, []
        self._seen, self._outcomes = SeenConfigs(), {}
        space = self.config_space
        asked: dict[int, Any] = {}  # params by trial id, until told
        for entry in state["log"]:
            if entry[0] == "ask":
                _, trial_id, params = entry
                trial = self._ask()
                if trial.params != params:  # the sampler did not replay the same proposal
                    logger.warning("optuna searcher: replay of trial %s differs; keeping the "
                                   "original config", trial_id)
                    self._study.tell(trial, state=_optuna().trial.TrialState.FAIL)
                    self._foreign[int(trial_id)] = self._config(params)
                else:
                    self._asked[int(trial_id)] = trial
                asked[int(trial_id)] = params
                self._seen.add(config_digest(space, self._config(params)))
                self._log.append(["ask", int(trial_id), params])
            elif entry[0] == "tell":
                _, trial_id, value = entry
                if int(trial_id) in self._asked:
                    self._tell(self._asked.pop(int(trial_id)), value)
                else:
                    self._add(self._params(self._foreign.pop(int(trial_id))), value)
                self._log.append(["tell", int(trial_id), value])
                config = self._config(asked.pop(int(trial_id)))
                self._outcomes[config_digest(space, config)] = value
            elif entry[0] == "repeat":
                _, params, value = entry
                self._tell(self._ask(), value)  # a repeat asked and told again, as it was
                self._log.append(["repeat", dict(params), value])
            else:
                _, params, value = entry
                self._add(params, value)
                self._log.append(["add", dict(params), value])
                config = self._config(params)
                self._seen.add(config_digest(space, config))
                self._outcomes[config_digest(space, config)] = value
        self._values = {int(t): float(v) for t, v in state["values"].items()}
        self._foreign.update({int(t): dict(c) for t, c in state["foreign"].items()})
        for config in self._foreign.values():
            self._seen.add(config_digest(space, config))


def _suggest_param(trial: Any, name: str, distribution: Any) -> Any:
    """`trial.suggest_*` for one of `_distribution`'s distributions."""
    distributions = _optuna().distributions
    if isinstance(distribution, distributions.CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, distributions.IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, log=distribution.log)
    return trial.suggest_float(name, distribution.low, distribution.high, log=distribution.log)


def _distribution(optuna: Any, name: str, domain: Any) -> Any:
    distributions = optuna.distributions
    if isinstance(domain, Ordinal):  # ordered values: the index, so order means something
        return distributions.IntDistribution(0, len(domain.categories) - 1)
    if isinstance(domain, Categorical):
        return distributions.CategoricalDistribution(list(range(len(domain.categories))))
    if isinstance(domain, Float):
        return distributions.FloatDistribution(domain.lower, domain.upper, log=domain.log)
    if isinstance(domain, Integer):
        return distributions.IntDistribution(domain.lower, domain.upper, log=domain.log)
    raise ValueError(f"config_space.{name}: the optuna searcher cannot search a "
                     f"{type(domain).__name__} domain")
