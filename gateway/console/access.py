"""Who may use the console and how its answers protect a browser: the session cookie, Bearer
tokens, the same-origin rule for POSTs, CSRF tokens and the headers on every answer.

Keys come from the store's shared key and the configured token, so every process of one
gateway honours the same sessions, and a new token ends the old ones.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from aiohttp import web

from gateway import headers as h
from gateway.config import is_loopback

COOKIE = h.CONSOLE_COOKIE
SESSION_TTL = 12 * 3600.0
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def same(offered: str, expected: str) -> bool:
    """A comparison in constant time that takes any text a client sends (compare_digest
    refuses non-ASCII text, and a lone surrogate does not encode)."""
    return hmac.compare_digest(
        offered.encode("utf-8", "replace"), expected.encode("utf-8", "replace")
    )


@dataclass(frozen=True)
class Access:
    """The console's keys: `token` empty means open access (a loopback listener only)."""

    token: str
    key: bytes

    @classmethod
    @functools.lru_cache(maxsize=4)
    def of(cls, token: str, store_key: bytes) -> Access:
        """The keys for this token and store key (the store's arrives late if its database is
        down at start: callers ask again each time, and get the same keys while neither moves)."""
        key = hmac.new(store_key, b"console:" + token.encode(), hashlib.sha256).digest()
        return cls(token, key)

    def _sign(self, what: str) -> str:
        return hmac.new(self.key, what.encode(), hashlib.sha256).hexdigest()

    def new_session(self, now: float) -> str:
        """`issued.nonce.signature`: every sign-in its own value, valid for SESSION_TTL."""
        issued = f"{int(now)}.{secrets.token_urlsafe(16)}"
        return f"{issued}.{self._sign('session:' + issued)}"

    def session_ok(self, value: str, now: float) -> bool:
        issued, _, signature = value.rpartition(".")
        at, _, nonce = issued.partition(".")
        if not (at.isascii() and at.isdigit() and len(at) <= 12 and nonce):
            return False
        fresh = 0 <= now - int(at) < SESSION_TTL
        return fresh and same(signature, self._sign("session:" + issued))

    def token_ok(self, offered: str) -> bool:
        return bool(self.token) and same(offered, self.token)

    def bearer_ok(self, authorization: str | None) -> bool:
        scheme, _, offered = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(offered.strip())

    def csrf(self, session: str) -> str:
        """The token each form carries: tied to the session, or to the key when open."""
        return self._sign("csrf:" + session)


def who(request: web.Request, access: Access, now: float) -> str | None:
    """How the request is signed in: "open", "bearer" or "session"; None if it is not."""
    if not access.token:
        return "open"
    if access.bearer_ok(request.headers.get("Authorization")):
        return "bearer"
    cookie = request.cookies.get(COOKIE, "")
    if cookie and access.session_ok(cookie, now):
        return "session"
    return None


def same_origin(request: web.Request) -> bool:
    """Whether a POST comes from the console's own pages (or from no browser at all).

    Fetch Metadata says it outright where the browser sends it; otherwise `Origin` must name
    this very host. A request with neither comes from a script, not a page elsewhere.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin == f"{request.scheme}://{request.host}"


def loopback_host(request: web.Request) -> bool:
    """Whether the request names a loopback host: a console open without a token answers only
    such requests, so a page elsewhere cannot reach it by pointing its own name at 127.0.0.1
    (DNS rebinding)."""
    host = request.host
    name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0] or host
    return is_loopback(name)


def from_browser(request: web.Request) -> bool:
    return "Sec-Fetch-Site" in request.headers or "Origin" in request.headers


def session_of(request: web.Request) -> str:
    return request.cookies.get(COOKIE, "")


def csrf_ok(request: web.Request, access: Access, offered: str) -> bool:
    return same(offered, access.csrf(session_of(request)))


def set_session(response: web.StreamResponse, value: str, secure: bool) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=int(SESSION_TTL),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=secure,
    )


async def protect(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the same headers on every answer, errors and streams included."""
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
