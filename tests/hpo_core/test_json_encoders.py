"""Encoders built once give the text `json.JSONEncoder.encode` gives."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hpo_core.json_encoders import compiled_encoder
from hpo_core.store.files import json_default

VALUES = [
    {"b": [1, 2.5, None, True], "a": {"x": "é\"\n", "y": math.nan}, "c": -math.inf},
    {"n": np.int64(3), "f": np.float32(0.5), "arr": np.arange(3), "o": object},
    [0.1, 1e300, 5e-324, -0.0, 2**70], "plain text", 3.25, None, {},
]


@pytest.mark.parametrize("encoder", [
    json.JSONEncoder(separators=(",", ":"), default=json_default),
    json.JSONEncoder(sort_keys=True, default=str),
    json.JSONEncoder(ensure_ascii=False, default=str),
], ids=["state", "config-key", "unicode"])
def test_compiled_encoder_gives_the_same_text(encoder):
    encode = compiled_encoder(encoder)
    for value in VALUES:
        assert encode(value) == encoder.encode(value)


def test_an_indenting_encoder_is_used_as_it_is():
    encoder = json.JSONEncoder(indent=2)
    assert compiled_encoder(encoder) == encoder.encode
