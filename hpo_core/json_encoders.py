"""JSON encoders built once: `json.JSONEncoder.encode` builds CPython's C encoder on every call,
which costs as much as encoding a small config does."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

_C_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)  # CPython's (not in typeshed)


def compiled_encoder(encoder: json.JSONEncoder) -> Callable[[Any], str]:
    """`encoder.encode` with its C encoder built once: the same text, without the check for
    reference cycles (for data of plain dicts and lists: configs, tuner states). Without the C
    encoder (or with `indent`), `encoder.encode` itself."""
    if _C_MAKE_ENCODER is None or encoder.indent is not None:
        return encoder.encode
    strings = (json.encoder.encode_basestring_ascii if encoder.ensure_ascii
               else json.encoder.encode_basestring)
    iterencode = _C_MAKE_ENCODER(None, encoder.default, strings, None, encoder.key_separator,
                                 encoder.item_separator, encoder.sort_keys, encoder.skipkeys,
                                 encoder.allow_nan)

    def encode(value: Any) -> str:
        if isinstance(value, str):
            return encoder.encode(value)
        return "".join(iterencode(value, 0))

    return encode
