"""Keep credentials out of trackers: names that look secret, and values that carry secrets.

`redact(params)` is what every MLflow param, tag and artifact built from a spec goes through.
A name looks secret when one of its words is password, secret, token, key, credential(s),
auth(orization), passphrase or private (camelCase and `_-./` split words; `apikey` counts);
its value is replaced by `REDACTED`, and a secret-named mapping is replaced whole. Values are
also scrubbed of passwords in URLs (`scheme://user:pass@host`) and of AWS access key ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "<redacted>"
SECRET_WORDS = frozenset({
    "password", "passwd", "pwd", "passphrase", "secret", "secrets", "token", "key",
    "keys", "apikey", "credential", "credentials", "auth", "authorization", "private",
})
SECRET_SUBSTRINGS = ("password", "secret", "credential", "apikey", "accesskey", "privatekey")
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]+:)[^@\s/]+(?=@)")
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")


def is_secret_name(name: Any, secret_names: Iterable[str] = ()) -> bool:
    """Whether a parameter, option or tag named `name` may hold a credential."""
    text = str(name)
    if text in set(secret_names):
        return True
    lowered = text.lower()
    if any(s in lowered.replace("_", "").replace("-", "") for s in SECRET_SUBSTRINGS):
        return True
    words = {w.lower() for w in _WORD_SPLIT.split(text) if w}
    return bool(words & SECRET_WORDS)


def scrub(value: str) -> str:
    """A string with URL passwords and AWS access key ids masked."""
    value = _URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED, value)
    return _AWS_KEY_ID.sub(REDACTED, value)


def redact_value(value: Any, secret_names: Iterable[str] = ()) -> Any:
    """`value` with secrets masked at any depth (mappings, lists, strings)."""
    names = frozenset(secret_names)
    if isinstance(value, Mapping):
        return redact(value, names)
    if isinstance(value, list | tuple):
        return [redact_value(v, names) for v in value]
    if isinstance(value, str):
        return scrub(value)
    return value


def redact(params: Mapping[str, Any], secret_names: Iterable[str] = ()) -> dict[str, Any]:
    """A copy of `params` safe to log: secret-looking (or listed) names masked, values scrubbed.

    Nested mappings are redacted recursively; a secret-named entry is masked whole.
    """
    names = frozenset(secret_names)
    return {
        key: REDACTED if is_secret_name(key, names) else redact_value(value, names)
        for key, value in params.items()
    }


def spec_secret_names(spec: Mapping[str, Any]) -> set[str]:
    """Names the spec marks secret: `backend_options.secret_hyperparameters` (a list of names or
    a mapping of names to values)."""
    options = spec.get("backend_options") or {}
    marked = options.get("secret_hyperparameters") if isinstance(options, Mapping) else None
    if isinstance(marked, Mapping):
        return {str(k) for k in marked}
    if isinstance(marked, list | tuple | set):
        return {str(k) for k in marked}
    return set()
