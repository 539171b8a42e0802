"""hpo_core.secrets: names, references, known values, one mask; hpo_core.loading's limits."""

from __future__ import annotations

import json
import logging

import pytest

from hpo_core import secrets
from hpo_core.loading import LoadError, load_json, load_yaml
from hpo_core.secrets import MASK as REDACTED
from hpo_core.secrets import (
    SecretError,
    check_references,
    mask_text,
    redact,
    resolve,
    spec_secret_names,
)


def test_redact_masks_secret_names_and_secret_values() -> None:
    params = {
        "lr": 0.1, "max_tokens": 512, "monkey": 1, "batch_size": 32, "key_dim": 64,
        "token_dim": 16, "num_keys": 8, "ssh_key": "k0",
        "api_key": "k1", "AWS_SECRET_ACCESS_KEY": "k2", "authToken": "k3", "db_password": "k4",
        "hf-token": "k5", "credentials": {"user": "u", "pass": "k6"},
        "nested": {"depth": 3, "private_key": "k7", "url": "postgres://me:k8@db:5432/x"},
        "aws_id": "AKIAABCDEFGHIJKLMNOP", "names": ["ok", "https://u:k9@host/path"],
    }
    safe = redact(params)
    # a model's hyperparameters named after keys and tokens (Keras' key_dim) are not secrets
    plain = ("lr", "max_tokens", "monkey", "batch_size", "key_dim", "token_dim", "num_keys")
    assert {k: safe[k] for k in plain} == {k: params[k] for k in plain}
    for key in ("api_key", "AWS_SECRET_ACCESS_KEY", "authToken", "db_password", "hf-token",
                "credentials", "ssh_key"):
        assert safe[key] == REDACTED, key
    assert safe["nested"]["depth"] == 3 and safe["nested"]["private_key"] == REDACTED
    assert safe["nested"]["url"] == f"postgres://me:{REDACTED}@db:5432/x"
    assert safe["aws_id"] == REDACTED and safe["names"][1] == f"https://u:{REDACTED}@host/path"
    assert not any(f"k{i}" in json.dumps(safe) for i in range(1, 10))
    assert params["api_key"] == "k1"  # the input is left alone


def test_spec_marked_secrets() -> None:
    spec = {"backend_options": {"secret_hyperparameters": {"wandb_api": "s1"},
                                "instance": "ml.m5.large"}}
    names = spec_secret_names(spec)
    assert names == {"wandb_api"}
    assert redact({"wandb_api": "s1", "x": 1}, names) == {"wandb_api": REDACTED, "x": 1}
    assert redact(spec, names) == {"backend_options": {
        "secret_hyperparameters": REDACTED, "instance": "ml.m5.large"}}


def test_references_resolve_into_the_trial_only_and_their_values_are_masked(monkeypatch):
    monkeypatch.setenv("TS_TEST_TOKEN", "value-of-the-reference")
    config = {"lr": 0.1, "hf": {"secret": "env:TS_TEST_TOKEN"}}
    check_references(config, "spec.config_space")
    assert resolve(config) == {"lr": 0.1, "hf": "value-of-the-reference"}
    assert config["hf"] == {"secret": "env:TS_TEST_TOKEN"}  # the input keeps the reference
    assert mask_text("got value-of-the-reference!") == f"got {REDACTED}!"
    assert redact({"api_key": {"secret": "env:X"}}) == {"api_key": {"secret": "env:X"}}


@pytest.mark.parametrize(("reference", "message"), [
    ({"secret": "TS_NOPE"}, "spec.config_space.k: a secret reference reads"),
    ({"secret": "vault:x"}, "unknown secret source 'vault'"),
    ({"secret": "env:TS_SURELY_UNSET_VARIABLE"}, "'TS_SURELY_UNSET_VARIABLE' is not set"),
])
def test_bad_references_name_the_field(reference, message):
    with pytest.raises(SecretError, match=message):
        check_references({"k": reference}, "spec.config_space")


def test_prefect_references_need_their_resolver(monkeypatch):
    monkeypatch.setattr(secrets, "_resolvers", {})
    with pytest.raises(SecretError, match="no resolver for 'prefect'"):
        resolve({"secret": "prefect:my-block"})
    secrets.register_resolver("prefect", lambda name: f"block-value-of-{name}")
    assert resolve({"secret": "prefect:my-block"}) == "block-value-of-my-block"


def test_another_process_imports_the_resolvers_this_one_registered(monkeypatch, tmp_path):
    """What a Dask worker does with the tuner's `resolver_modules()`: the same references
    resolve there; a module it cannot import makes the reference fail with the reason."""
    (tmp_path / "my_block_resolver.py").write_text(
        "from hpo_core.secrets import register_resolver\n"
        "register_resolver('prefect', lambda name: f'value-of-{name}')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(secrets, "_resolvers", {})
    secrets.import_resolvers({"prefect": "my_block_resolver"})
    assert secrets.resolver_modules() == {"prefect": "my_block_resolver"}
    assert resolve({"secret": "prefect:b"}) == "value-of-b"

    monkeypatch.setattr(secrets, "_resolvers", {})
    secrets.import_resolvers({"prefect": "no_such_resolver_module"})
    with pytest.raises(SecretError, match="importing no_such_resolver_module failed "
                                          r"\(ModuleNotFoundError"):
        resolve({"secret": "prefect:b"})


def test_credential_environment_values_are_masked(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value-123")
    monkeypatch.setenv("SOME_FLAG", "a-plain-value-456")
    text = mask_text("aws-secret-value-123 and a-plain-value-456")
    assert text == f"{REDACTED} and a-plain-value-456"


def test_log_records_are_masked_as_they_are_created(monkeypatch, caplog):
    monkeypatch.setenv("MY_API_TOKEN", "token-in-a-log-789")
    secrets.mask_logs()
    logger = logging.getLogger("tests.secrets")
    with caplog.at_level(logging.INFO, "tests.secrets"):
        logger.info("calling with %s", "token-in-a-log-789")
        try:
            raise RuntimeError("failed with token-in-a-log-789")
        except RuntimeError:
            logger.exception("it failed")
    text = caplog.text
    assert "token-in-a-log-789" not in text and "calling with [redacted]" in text
    assert "RuntimeError: failed with [redacted]" in text


@pytest.mark.parametrize(("text", "message"), [
    ("a: 1\na: 2\n", "duplicate key 'a' at line 2"),
    ("a: [1, 2\n", "invalid YAML"),
    ("x: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\n" + "".join(
        f"x{i}: &a{i} [*{'a' if i == 0 else f'a{i - 1}'}, *{'a' if i == 0 else f'a{i - 1}'}, "
        f"*{'a' if i == 0 else f'a{i - 1}'}, *{'a' if i == 0 else f'a{i - 1}'}]\n"
        for i in range(12)), "after expanding aliases"),
    ("a: " + "[" * 40 + "]" * 40 + "\n", "nested deeper than 32 levels"),
])
def test_yaml_is_read_with_limits(text, message):
    with pytest.raises(LoadError, match=message):
        load_yaml(text, "spec")


def test_json_is_read_with_limits():
    with pytest.raises(LoadError, match="duplicate key 'a'"):
        load_json('{"a": 1, "a": 2}')
    with pytest.raises(LoadError, match="nested deeper"):
        load_json("[" * 100 + "]" * 100)
    assert load_json('{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}


def test_a_spec_s_literal_secrets_are_remembered_but_not_its_words(monkeypatch):
    monkeypatch.setattr(secrets, "_known", set())
    secrets.remember_spec({
        "config_space": {"api_key": "literal-key-1", "num_keys": 1000,
                         "proxy_auth": {"type": "choice", "categories": ["oauth-x1", "basic-x2"]}},
        "backend_options": {"env": {"DB_PASSWORD": "pw-literal-2", "HOME_DIR": "/home/me"},
                            "secret_hyperparameters": ["HF_TOKEN"]},
    })
    assert secrets._known == {"literal-key-1", "oauth-x1", "basic-x2", "pw-literal-2"}
