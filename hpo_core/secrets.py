"""The one place that knows what is secret: references, secret-looking names, known values.

A spec names a secret by reference, `{secret: "env:NAME"}` (an environment variable of the
process that launches trials) or `{secret: "prefect:BLOCK"}` (a Prefect `Secret` block; its
resolver lives in `flows` and is registered here with `register_resolver`). A reference may
stand for a hyperparameter (a fixed value in `config_space`) or for a value in
`backend_options` (e.g. an environment variable of the trials). It is resolved only when a
trial launches (`resolve`), into that trial's arguments, config file and environment; the store
keeps the reference.

Masking, one mask (`MASK`) and one implementation for MLflow, Prefect, files and the console:

- `redact(mapping)`: values under secret-looking names (password, secret, credential, ... as
  words of the name; token, key, auth as its last word: `api_key`, not `key_dim`) are replaced
  whole (a reference stays visible, it holds no secret); every other string is masked with
  `mask_text`.
- `mask_text(text)`: the known secret values (resolved references, literal values under
  secret-looking names in a spec, the values of credential environment variables such as
  `AWS_SECRET_ACCESS_KEY`), URL passwords (`scheme://user:pass@host`) and AWS access key ids.
- `mask_logs()`: every log record of the process is masked as it is created.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpo_core.trial import TrialEvent

MASK = "[redacted]"
SCHEMES = ("env", "prefect")
SECRET_WORDS = frozenset({
    "password", "passwd", "pwd", "passphrase", "secret", "secrets", "apikey", "credential",
    "credentials", "authorization", "private",
})
#: words that name a credential only as a name's last word (`api_key`, `hf_token`, `auth`), not
#: as a qualifier (`key_dim`, `token_dim`, `key_size`: model hyperparameters)
SECRET_LAST_WORDS = frozenset({"token", "key", "auth"})
SECRET_SUBSTRINGS = ("password", "secret", "credential", "apikey", "accesskey", "privatekey")
MIN_VALUE_CHARS = 4  # a shorter known value would mask ordinary text
MIN_ENV_VALUE_CHARS = 8  # values of secret-named environment variables ("1", "true" are not)
NOT_CREDENTIALS = frozenset({"PWD", "OLDPWD", "SSH_AUTH_SOCK"})  # paths, whatever their names say
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]+:)[^@\s/]+(?=@)")
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
_REFERENCE = re.compile(r"^(?P<scheme>[a-z]+):(?P<name>[^\s]+)$")

Resolver = Callable[[str], str]
_resolvers: dict[str, Resolver] = {}
_known: set[str] = set()
_lock = threading.Lock()


class SecretError(ValueError):
    """A malformed or unresolvable secret reference; the message names the field."""


# -- names ---------------------------------------------------------------------------------------
def is_secret_name(name: Any, secret_names: Iterable[str] = ()) -> bool:
    """Whether a parameter, option, tag or environment variable named `name` may hold a
    credential (or is listed in `secret_names`)."""
    text = str(name)
    if text in set(secret_names):
        return True
    lowered = text.lower().replace("_", "").replace("-", "")
    if any(s in lowered for s in SECRET_SUBSTRINGS):
        return True
    words = [w.lower() for w in _WORD_SPLIT.split(text) if w]
    return bool(set(words) & SECRET_WORDS) or bool(words) and words[-1] in SECRET_LAST_WORDS


def spec_secret_names(spec: Mapping[str, Any]) -> set[str]:
    """Names a spec marks secret: those in `backend_options.secret_hyperparameters` (a list of
    names or a mapping) and the config-space entries given as references."""
    names: set[str] = set()
    options = spec.get("backend_options") or {}
    marked = options.get("secret_hyperparameters") if isinstance(options, Mapping) else None
    if isinstance(marked, Mapping | list | tuple | set):
        names |= {str(k) for k in marked}
    space = spec.get("config_space") or {}
    if isinstance(space, Mapping):
        names |= {str(k) for k, v in space.items() if is_reference(v)}
    return names


# -- references ----------------------------------------------------------------------------------
def is_reference(value: Any) -> bool:
    """Whether `value` is a secret reference: a mapping whose only key is `secret`."""
    return isinstance(value, Mapping) and len(value) == 1 and "secret" in value


def parse_reference(value: Mapping[str, Any], field: str) -> tuple[str, str]:
    """(scheme, name) of a reference; SecretError naming `field` if it is malformed."""
    target = value.get("secret")
    match = _REFERENCE.match(target) if isinstance(target, str) else None
    if match is None:
        raise SecretError(f"{field}: a secret reference reads 'env:NAME' or 'prefect:BLOCK', "
                          f"got {target!r}")
    scheme, name = match["scheme"], match["name"]
    if scheme not in SCHEMES:
        raise SecretError(f"{field}: unknown secret source {scheme!r}; expected one of {SCHEMES}")
    return scheme, name


def check_references(data: Any, field: str) -> None:
    """Every reference in `data` is well formed, and each `env:` one names a variable that is
    set here (so a spec fails before anything runs, not when its first trial launches)."""
    for where, ref in _references(data, field):
        scheme, name = parse_reference(ref, where)
        if scheme == "env" and name not in os.environ:
            raise SecretError(f"{where}: the environment variable {name!r} is not set")


def has_references(data: Any) -> bool:
    return any(True for _ in _references(data, ""))


def register_resolver(scheme: str, resolver: Resolver) -> None:
    """Resolve references `{secret: "<scheme>:<name>"}` with `resolver(name)`."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown secret source {scheme!r}; expected one of {SCHEMES}")
    _resolvers[scheme] = resolver


def resolver_modules() -> dict[str, str]:
    """The module that registered each scheme's resolver, for another process that launches
    trials (a Dask worker) to import with `import_resolvers`."""
    return {scheme: resolver.__module__ for scheme, resolver in _resolvers.items()}


def import_resolvers(modules: Mapping[str, str]) -> None:
    """Import the modules of another process's `resolver_modules()`, so this process resolves
    the same references. A module that cannot be imported here leaves a resolver that says
    why when a reference of its scheme is resolved (the trial fails with that line)."""
    for scheme, module in modules.items():
        if scheme in _resolvers or scheme not in SCHEMES:
            continue
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - said when a reference needs it
            register_resolver(scheme, _unavailable(
                f"{scheme!r} secrets cannot be read in this process: importing {module} "
                f"failed ({type(err).__name__}: {err})"))


def _unavailable(reason: str) -> Resolver:
    def resolver(name: str) -> str:
        raise SecretError(reason)
    return resolver


def resolve(data: Any, field: str = "secret") -> Any:
    """A copy of `data` with each reference replaced by its value (remembered for masking).

    Call it where a trial launches, and give the result to that trial only."""
    if is_reference(data):
        scheme, name = parse_reference(data, field)
        resolver = _resolvers.get(scheme, _from_env if scheme == "env" else None)
        if resolver is None:
            raise SecretError(f"{field}: no resolver for {scheme!r} secrets in this process "
                              "(import flows.secret_blocks)")
        value = str(resolver(name))
        remember([value])
        return value
    if isinstance(data, Mapping):
        return {k: resolve(v, f"{field}.{k}") for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [resolve(v, f"{field}[{i}]") for i, v in enumerate(data)]
    return data


def _from_env(name: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise SecretError(f"the environment variable {name!r} of a secret reference is not set")
    return value


def _references(data: Any, field: str) -> Iterable[tuple[str, Mapping[str, Any]]]:
    if is_reference(data):
        yield field, data
    elif isinstance(data, Mapping):
        for k, v in data.items():
            yield from _references(v, f"{field}.{k}")
    elif isinstance(data, list | tuple):
        for i, v in enumerate(data):
            yield from _references(v, f"{field}[{i}]")


# -- known values --------------------------------------------------------------------------------
def remember(values: Iterable[Any]) -> None:
    """Mask these values wherever they appear from now on (in this process)."""
    new = {str(v) for v in values if v is not None and len(str(v)) >= MIN_VALUE_CHARS}
    if new - _known:
        with _lock:
            _known.update(new)


def remember_spec(spec: Mapping[str, Any]) -> None:
    """Remember the literal strings a spec gives under secret-looking names: fixed values and
    choices in `config_space`, values anywhere in `backend_options` (not the names listed in
    `secret_hyperparameters`)."""
    names = spec_secret_names(spec)
    values: list[str] = []
    space = spec.get("config_space") or {}
    for name, value in space.items() if isinstance(space, Mapping) else ():
        if not is_secret_name(name, names) or is_reference(value):
            continue
        if isinstance(value, Mapping) and "type" in value:  # a domain: only its choices
            value = value.get("categories") or []
        values += _strings(value)
    options = spec.get("backend_options") or {}
    if isinstance(options, Mapping):
        marked = options.get("secret_hyperparameters")
        rest = {k: v for k, v in options.items()
                if not (k == "secret_hyperparameters" and not isinstance(marked, Mapping))}
        values += _secret_leaves(rest, names, False)
    remember(values)


def _strings(data: Any) -> list[str]:
    if isinstance(data, str):
        return [data]
    if isinstance(data, list | tuple):
        return [v for v in data if isinstance(v, str)]
    if isinstance(data, Mapping):
        return [v for item in data.values() for v in _strings(item)]
    return []


def _secret_leaves(data: Any, names: set[str], inside: bool) -> Iterable[str]:
    if is_reference(data):
        return
    if isinstance(data, Mapping):
        for k, v in data.items():
            yield from _secret_leaves(v, names, inside or is_secret_name(k, names))
    elif isinstance(data, list | tuple):
        for v in data:
            yield from _secret_leaves(v, names, inside)
    elif inside and isinstance(data, str):
        yield data


_secret_env_names: dict[str, bool] = {}  # each environment variable name seen: secret-looking?


def credential_env_values(environ: Mapping[str, str] | None = None) -> set[str]:
    """Values of environment variables whose names look secret (AWS_SECRET_ACCESS_KEY, ...)."""
    environ = os.environ if environ is None else environ
    values = set()
    for name, value in list(environ.items()):
        secret = _secret_env_names.get(name)
        if secret is None:
            secret = _secret_env_names[name] = name not in NOT_CREDENTIALS \
                and is_secret_name(name)
        if secret and len(value) >= MIN_ENV_VALUE_CHARS:
            values.add(value)
    return values


def known_values() -> list[str]:
    """Every value masked by value now, longest first."""
    return sorted(_known | credential_env_values(), key=len, reverse=True)


# -- masking -------------------------------------------------------------------------------------
def mask_text(text: str, values: Iterable[str] = ()) -> str:
    """`text` with known secret values (and `values`), URL passwords and AWS key ids masked."""
    extra = [str(v) for v in values if v is not None and len(str(v)) >= MIN_VALUE_CHARS]
    for value in sorted(extra, key=len, reverse=True) + known_values():
        if value in text:
            text = text.replace(value, MASK)
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    return _AWS_KEY_ID.sub(MASK, text)


def mask_values(data: Any) -> Any:
    """`data` with `mask_text` applied to every string at any depth; names are left alone."""
    if isinstance(data, Mapping):
        return {k: mask_values(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [mask_values(v) for v in data]
    return mask_text(data) if isinstance(data, str) else data


_PLAIN = (int, float, bool, type(None))


def mask_event(event: TrialEvent) -> None:
    """Mask secrets in what a trial wrote: a report's text values, a failure reason (in place;
    a report of numbers only costs one pass over its values)."""
    metrics = event.metrics
    if metrics and not all(type(v) in _PLAIN for v in metrics.values()):
        event.metrics = {k: v if type(v) in _PLAIN else mask_values(v) for k, v in metrics.items()}
    if event.reason:
        event.reason = mask_text(event.reason)


def mask_value(value: Any, secret_names: Iterable[str] = ()) -> Any:
    """`value` with secrets masked at any depth (mappings by `redact`, strings by `mask_text`)."""
    if isinstance(value, Mapping):
        return redact(value, secret_names)
    if isinstance(value, list | tuple):
        return [mask_value(v, secret_names) for v in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


def redact(params: Mapping[str, Any], secret_names: Iterable[str] = ()) -> dict[str, Any]:
    """A copy of `params` safe to show: values under secret-looking (or listed) names replaced
    by MASK (references kept: they name a secret, they do not hold it), strings masked."""
    names = frozenset(secret_names)
    return {
        key: value if is_reference(value)
        else MASK if is_secret_name(key, names) else mask_value(value, names)
        for key, value in params.items()
    }


def one_line(text: str, limit: int = 300) -> str:
    """A message as one masked line: its first line, and its last one if they differ (for a
    traceback, the exception)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    line = mask_text(line)
    return line if len(line) <= limit else line[: limit - 3] + "..."


# -- logs ----------------------------------------------------------------------------------------
_installed = False


def mask_logs() -> None:
    """Mask every log record of this process (its message and traceback) as it is created,
    whichever handler (console, Prefect's API, a file) writes it. Idempotent."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        make_record = logging.getLogRecordFactory()

    def masked_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the handler's to report
            return record
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[0] is not None:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = mask_text(text)
        return record

    logging.setLogRecordFactory(masked_record)
