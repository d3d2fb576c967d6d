"""Values as the configuration writes them: durations, sizes, URLs, names. Pure parsing.

Each function returns the value or raises ValueError with the message a user reads.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from standardwebhooks.webhooks import Webhook

HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
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


def string(value: object) -> str:
    if isinstance(value, dict | list):
        raise ValueError("expected a string")
    return str(value)


def webhook_secret(value: object) -> str:
    text = string(value)
    if text:
        try:
            Webhook(text)
        except Exception:
            raise ValueError("expected a Standard Webhooks secret: whsec_ then base64") from None
    return text


def whole(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a whole number, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"expected a whole number, got {value!r}") from None


def positive(value: object) -> int:
    number = whole(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def port(value: object) -> int:
    number = whole(value)
    if not 0 <= number <= 65535:
        raise ValueError("must be a port number from 0 to 65535")
    return number


def workers(value: object) -> int:
    if value == "auto":
        return cores()
    return positive(value)


CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cores(cpu_max: Path = CPU_MAX) -> int:
    """The cores this process may use: those it may run on, capped by its cgroup's CPU quota
    (a container's `--cpus`), rounded up."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota to read: the affinity stands
    return count


def boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in {"true", "yes", "on", "1"}:
        return True
    if str(value).lower() in {"false", "no", "off", "0", ""}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def base_url(value: object) -> str | None:
    """An http(s) URL that paths are appended to: no query or fragment, no trailing slash."""
    text = url(value)
    if text is None:
        return None
    parts = urlsplit(text)
    if parts.query or parts.fragment:
        raise ValueError("a base URL takes no query or fragment")
    return text.rstrip("/")


def url(value: object) -> str | None:
    text = string(value).strip()
    if not text or text == "null":
        return None
    parts = urlsplit(text)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {text!r}")
    return text


def prefix(value: object) -> str:
    text = string(value)
    if not text.startswith("/") or text == "/":
        raise ValueError("must be a path starting with / such as /_gateway/jobs")
    return text.rstrip("/")


def route_path(value: object) -> str:
    text = string(value)
    if not text.startswith("/"):
        raise ValueError("must start with /")
    return text


def name_list(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("expected a list of names")
    return list(value)


def methods(value: object) -> list[str]:
    names = [m.upper() for m in name_list(value)]
    unknown = [m for m in names if m not in HTTP_METHODS]
    if unknown:
        raise ValueError(f"unknown HTTP method {unknown[0]!r}")
    return names


def statuses(value: object) -> list[int]:
    if not isinstance(value, list):
        raise ValueError("expected a list of status codes")
    codes = [whole(v) for v in value]
    if any(not 100 <= c <= 599 for c in codes):
        raise ValueError("status codes run from 100 to 599")
    return codes


def choice(*options: str) -> Callable[[object], Any]:
    def convert(value: object) -> str:
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {value!r}")
        return str(value)

    return convert


PG_SCHEMES = frozenset({"postgresql", "postgres"})
PG_PARAMETERS = frozenset(
    {
        "host", "port", "dbname", "database", "user", "password", "passfile", "service",
        "sslmode", "sslcert", "sslkey", "sslrootcert", "sslcrl", "sslpassword", "sslnegotiation",
        "ssl_min_protocol_version", "ssl_max_protocol_version", "target_session_attrs",
        "krbsrvname", "gsslib", "application_name",
    }
)  # fmt: skip
_PG_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.%]+\]|[^\s/?#\[\]:@,]*)(?::([0-9]{1,5}))?$")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def postgres_url(value: object) -> str | None:
    """libpq's URL form, checked without connecting: postgresql:// or postgres://, hosts with
    optional ports (a list, as libpq takes it), known parameters only (`?host=/dir` for a unix
    socket directory, `?sslmode=…`). Empty or null: none."""
    text = string(value).strip()
    if not text or text == "null":
        return None
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in PG_SCHEMES:
        raise ValueError("expected a postgresql:// or postgres:// URL")
    parts = urlsplit("postgresql://" + rest)
    if parts.fragment:
        raise ValueError("a PostgreSQL URL takes no fragment")
    for host in parts.netloc.rpartition("@")[2].split(","):
        _host_port(host)
    for name, param in parse_qsl(parts.query, keep_blank_values=True):
        _pg_parameter(name, param)
    return text


def _host_port(host: str) -> None:
    found = _PG_HOST.match(host)
    if found is None:
        raise ValueError(f"{host!r} is not a host name, a host:port or an [IPv6]:port")
    if found[1] is not None and not 0 < int(found[1]) < 65536:
        raise ValueError(f"port {found[1]} is not from 1 to 65535")


def _pg_parameter(name: str, value: str) -> None:
    if name not in PG_PARAMETERS:
        raise ValueError(f"unknown parameter {name!r} (known: {', '.join(sorted(PG_PARAMETERS))})")
    if name == "sslmode" and value not in SSLMODES:
        raise ValueError(f"sslmode must be one of {', '.join(SSLMODES)}")
    if name == "port" and not all(_PG_HOST.match(":" + p) for p in value.split(",")):
        raise ValueError(f"port {value!r} is not a number")
    if name == "host" and not value:
        raise ValueError("host is empty")


def redacted(url: str) -> str:
    """The URL with any password replaced, fit for a log line."""
    parts = urlsplit(url)
    query = "&".join(
        f"{k}=***" if k == "password" else f"{k}={v}" for k, v in parse_qsl(parts.query, True)
    )
    netloc = parts.netloc
    users, at, hosts = netloc.rpartition("@")
    if at and ":" in users:
        netloc = users.split(":", 1)[0] + ":***@" + hosts
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
