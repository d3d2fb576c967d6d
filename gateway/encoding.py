"""JSON in and out: orjson, at a fifth to a third of json's time, and json for what orjson
refuses.

orjson refuses strings that hold lone surrogates, which aiohttp makes of bytes that are not
UTF-8 in an upstream's reason phrase, and ints past 64 bits; json writes those as escapes and
reads them back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    try:
        return orjson.dumps(value, default=default)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(value, default=default, separators=(",", ":")).encode()


def dumps_text(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    return dumps(value, default).decode()


def loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # an escaped lone surrogate, as json writes one
        return json.loads(text)
