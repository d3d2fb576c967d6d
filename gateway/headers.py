"""Every header decision the gateway makes: hop-by-hop removal, X-Forwarded-*, replay filtering.

Pure functions over lists of (name, value) pairs, order and repeats kept; no I/O, no clock reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

Header = tuple[str, str]
Headers = tuple[Header, ...]

# RFC 9110 §7.6.1, plus the RFC 2616 names that proxies still strip.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
        "trailer",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
JOB_ID = "X-Gateway-Job-Id"
JOB_STATUS = "X-Gateway-Job-Status"
# Headers the gateway itself sets on what it sends upstream or back; a client's or upstream's copy
# must not pass for the gateway's.
_OWN = frozenset({JOB_ID.lower(), JOB_STATUS.lower()})
# The gateway frames bodies itself (it knows the stored size), so it drops the sender's framing.
_FRAMING = frozenset({"content-length", "host", "expect"})
VIA = "async-gateway"
# The operator console's session cookie: a browser sends it to every port of the console's host,
# the public one included (cookies are not scoped by port), and it must never reach an upstream.
CONSOLE_COOKIE = "gateway_console"


@dataclass(frozen=True)
class Peer:
    """What the gateway knows of the client connection a request came in on."""

    address: str
    scheme: str
    host: str
    version: str = "1.1"


def decode(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    """Header bytes as the gateway holds them: text of one code point a byte (latin-1), so that
    `encode` gives back exactly the bytes that came, UTF-8 or not."""
    return tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in raw)


def encode(text: str) -> bytes:
    """The bytes a header's text stands for. Text past U+00FF can only be from before headers
    were held as latin-1 (a job stored by an older version, which decoded UTF-8): as UTF-8."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", re.ASCII)


def writable(name: str, value: str) -> bool:
    """Whether a header can be written as it is: a token for a name, no CR, LF or NUL in the
    value (what a parser let through; anything else would split the head)."""
    return _TOKEN.fullmatch(name) is not None and not any(c in value for c in "\r\n\0")


def connection_named(headers: Sequence[Header]) -> frozenset[str]:
    """The hop-by-hop set for this message: the fixed names and those listed in Connection."""
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
        if token.strip()
    }
    return HOP_BY_HOP | named


def end_to_end(headers: Sequence[Header]) -> Headers:
    """Drop hop-by-hop headers, including those named in Connection (RFC 9110 §7.6.1)."""
    drop = connection_named(headers)
    return tuple((n, v) for n, v in headers if n.lower() not in drop)


def for_upstream(headers: Sequence[Header], peer: Peer, trust_forwarded: bool) -> Headers:
    """What is sent upstream for a client's request, less X-Gateway-Job-Id and framing."""
    kept = [
        (n, v)
        for n, v in end_to_end(headers)
        if n.lower() not in _FRAMING and n.lower() not in _OWN
    ]
    kept = [(n, c) for n, v in kept if (c := _without_console(n, v)) is not None]
    forwarded_for = [v for n, v in kept if n.lower() == "x-forwarded-for"]
    out = [(n, v) for n, v in kept if n.lower() not in _FORWARDING]
    chain = ", ".join([*forwarded_for, peer.address]) if peer.address else ", ".join(forwarded_for)
    if chain:
        out.append(("X-Forwarded-For", chain))
    out.append(
        ("X-Forwarded-Proto", _kept_or(kept, "x-forwarded-proto", peer.scheme, trust_forwarded))
    )
    out.append(("X-Forwarded-Host", _kept_or(kept, "x-forwarded-host", peer.host, trust_forwarded)))
    via = [v for n, v in kept if n.lower() == "via"]
    out.append(("Via", ", ".join([*via, f"{peer.version} {VIA}"])))
    return tuple(out)


def _without_console(name: str, value: str) -> str | None:
    """A header's value as it came, but a Cookie header's less the console's session (None if
    that was all it held); the other pairs' bytes unchanged."""
    if CONSOLE_COOKIE not in value or name.lower() != "cookie":
        return value
    pairs = value.split(";")
    kept = [p for p in pairs if p.split("=", 1)[0].strip() != CONSOLE_COOKIE]
    if len(kept) == len(pairs):
        return value
    return ";".join(kept).lstrip(" ") or None


_FORWARDING = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "via"})


def _kept_or(headers: Sequence[Header], name: str, own: str, trust: bool) -> str:
    if trust:
        for n, v in headers:
            if n.lower() == name:
                return v.split(",")[0].strip()
    return own


def for_client(headers: Sequence[Header]) -> Headers:
    """An upstream answer's headers as the gateway passes them on (proxy) or replays them.

    Content-Length stays in its place; the caller sets it to the length it really sends.
    """
    return tuple((n, v) for n, v in end_to_end(headers) if n.lower() not in _OWN)


def number(value: str | None) -> int | None:
    """A count written as HTTP writes it, 1*DIGIT in ASCII (RFC 9110 §5.6), else None.

    Python's int() also takes "²", "٣", "+1", "1_0" and refuses past 4300 digits: none of that
    is HTTP. Values past MAX_DIGITS digits saturate, so a megabyte of nines stays cheap.
    """
    if value is None:
        return None
    text = value.strip(" \t")
    if not text or not text.isascii() or not text.isdigit():
        return None
    if len(text) > MAX_DIGITS:
        return SATURATED
    return int(text)


MAX_DIGITS = 15
SATURATED: int = int("1" + "0" * MAX_DIGITS)


def content_length(headers: Sequence[Header]) -> int | None:
    return number(first(headers, "Content-Length"))


def every(headers: Sequence[Header], name: str) -> list[str]:
    wanted = name.lower()
    return [v for n, v in headers if n.lower() == wanted]


def idempotency_key(value: str) -> str | None:
    """The key of an Idempotency-Key value, an sf-string or a bare token of 1 to 255 visible
    ASCII characters (draft-ietf-httpapi-idempotency-key-header), else None."""
    key = value.strip(" \t")
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not 0 < len(key) <= MAX_KEY or not key.isascii() or not key.isprintable():
        return None
    return key if '"' not in key and "\\" not in key else None


MAX_KEY = 255


def first(headers: Sequence[Header], name: str) -> str | None:
    wanted = name.lower()
    return next((v for n, v in headers if n.lower() == wanted), None)


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from Retry-After: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    seconds = number(value)
    if seconds is not None:
        return float(seconds)
    value = value.strip()
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


# RFC 9112 §3.2 and RFC 3986 §3.2.2: uri-host [":" port], an IP literal or a reg-name.
_HOST = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+)(?::([0-9]{0,5}))?",
    re.ASCII,
)


def valid_host(value: str) -> bool:
    """Whether a Host (or X-Forwarded-Host) value is a host and optional port, nothing more:
    no userinfo, path, query, fragment, space or second value."""
    match = _HOST.fullmatch(value)
    return match is not None and int(match.group(1) or 0) <= 65535


def base_url(peer: Peer, headers: Sequence[Header], public_url: str | None, trust: bool) -> str:
    """The scheme and host that status URLs are built on; a forwarded scheme or host that is
    not one (a proxy's mistake) is passed over for the connection's own."""
    if public_url:
        return public_url
    scheme = _kept_or(headers, "x-forwarded-proto", peer.scheme, trust).lower()
    host = _kept_or(headers, "x-forwarded-host", peer.host, trust)
    if scheme not in ("http", "https"):
        scheme = peer.scheme
    if not valid_host(host):
        host = peer.host
    return f"{scheme}://{host}"


@dataclass(frozen=True)
class Preferences:
    """What a client asked for in Prefer (RFC 7240) that the gateway honours."""

    respond_async: bool = False
    wait: float | None = None


def preferences(headers: Sequence[Header]) -> Preferences:
    respond_async, wait = False, None
    for name, value in headers:
        if name.lower() != "prefer":
            continue
        for item in value.split(","):
            key, _, raw = item.split(";")[0].strip().partition("=")
            key, raw = key.strip().lower(), raw.strip().strip('"')
            if key == "respond-async":
                respond_async = True
            elif key == "wait" and wait is None:
                seconds = number(raw)
                wait = None if seconds is None else float(seconds)
    return Preferences(respond_async, wait)


def hold(route_wait: float, max_wait: float, prefs: Preferences) -> tuple[float, str | None]:
    """How long an async route holds a request for the upstream, and the Preference-Applied."""
    if prefs.respond_async:
        return 0.0, "respond-async"
    if prefs.wait is not None:
        seconds = min(prefs.wait, max_wait)
        return seconds, f"wait={seconds:g}"
    return min(route_wait, max_wait), None
