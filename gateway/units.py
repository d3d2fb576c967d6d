"""Durations and sizes as the configuration writes them: pure parsing, no I/O."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_SIZE = re.compile(r"^\s*(\d+)\s*(b|k|kb|m|mb|g|gb)?\s*$", re.IGNORECASE)
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_BYTES = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def duration(value: object) -> float:
    """Seconds from `250ms`, `30s`, `15m`, `24h` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 250ms, 30s, 15m or 24h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError(f"{value!r} is not a duration such as 250ms, 30s, 15m or 24h")
        unit = (match.group(2) or "s").lower()
        seconds = float(match.group(1)) * _SECONDS[unit]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def size(value: object) -> int:
    """Bytes from `512KB`, `10MB`, `1GB` (powers of 1024) or a plain number of bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512KB, 10MB or 1GB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    match = _SIZE.match(str(value))
    if match is None:
        raise ValueError(f"{value!r} is not a size such as 512KB, 10MB or 1GB")
    unit = (match.group(2) or "b").lower()[0]
    return int(match.group(1)) * _BYTES[unit]
