"""The only user of aiohttp's ClientSession: one exchange with an upstream, errors as values.

Every way a call can go wrong becomes an `UpstreamFailed` carrying a `Failure` that says whether
the request may have reached the upstream; the caller decides what follows.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from gateway.config import Upstream
from gateway.errors import GatewayError
from gateway.headers import Headers, decode
from gateway.jobs import Answer, Failure

READ_SIZE = 256 * 1024
# aiohttp would otherwise add headers the client never sent.
_NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


class UpstreamFailed(GatewayError):
    def __init__(self, failure: Failure) -> None:
        super().__init__(f"{failure.kind}: {failure.detail}")
        self.failure = failure


@dataclass(frozen=True)
class Reply:
    answer: Answer
    body: AsyncIterator[bytes]


def new_session() -> aiohttp.ClientSession:
    """One pooled session for every upstream; concurrency is bounded by the dispatcher."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=_NO_AUTO_HEADERS,
        trust_env=False,
    )
    # aiohttp silently sends an idempotent request a second time when the connection drops; the
    # gateway counts and bounds tries itself (`retry.attempts`), so that hidden try must not run.
    # There is no public switch: the attribute is what aiohttp's own test client sets.
    if hasattr(session, "_retry_connection"):
        session._retry_connection = False
    return session


@asynccontextmanager
async def exchange(
    session: aiohttp.ClientSession,
    upstream: Upstream,
    method: str,
    target: str,
    headers: Headers,
    body: Any,
) -> AsyncIterator[Reply]:
    """Send one request; yield the answer's head and its body as it arrives."""
    timeout = _timeout(upstream.timeout, upstream.connect_timeout)
    try:
        async with session.request(
            method,
            URL(upstream.url + target, encoded=True),
            headers=CIMultiDict((_aiohttp_text(n), _aiohttp_text(v)) for n, v in headers),
            data=body,
            allow_redirects=False,
            timeout=timeout,
            compress=None,
        ) as response:
            reason = (response.reason or "").encode("utf-8", "surrogateescape").decode("latin-1")
            answer = Answer(response.status, reason, decode(response.raw_headers))
            yield Reply(answer, _chunks(response, upstream))
    except UpstreamFailed:
        raise
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        raise UpstreamFailed(failure_of(e, upstream)) from e


def _aiohttp_text(text: str) -> str:
    """The gateway's header text (one code point a byte, headers.decode) as aiohttp's client
    takes it: aiohttp encodes text as UTF-8, so bytes that are UTF-8 go as that text and leave
    unchanged; any other bytes go as before, re-encoded, until the gateway has its own client."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


@functools.lru_cache(maxsize=64)
def _timeout(total: float, connect: float) -> aiohttp.ClientTimeout:
    """One ClientTimeout per upstream, not one per call (it is immutable)."""
    return aiohttp.ClientTimeout(total=total, sock_connect=connect)


async def _chunks(response: aiohttp.ClientResponse, upstream: Upstream) -> AsyncIterator[bytes]:
    """The body in pieces of at most READ_SIZE, each read only when the last is consumed; a
    body declared no larger than that (most answers) in one read."""
    try:
        length = response.content_length
        if length is not None and length <= READ_SIZE:
            whole = await response.content.read()
            if whole:
                yield whole
            return
        async for chunk in response.content.iter_chunked(READ_SIZE):
            yield chunk
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        raise UpstreamFailed(failure_of(e, upstream)) from e


def failure_of(error: BaseException, upstream: Upstream) -> Failure:
    """Name what went wrong, and whether the request may have reached the upstream."""
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return Failure("timeout", f"connecting to the upstream timed out: {error}", sent=False)
    if isinstance(error, aiohttp.ClientConnectorError):
        return Failure("refused", f"cannot connect to the upstream: {error.os_error}", sent=False)
    if isinstance(error, asyncio.TimeoutError):
        return Failure(
            "timeout", f"the upstream did not answer within {upstream.timeout:g}s", sent=True
        )
    if isinstance(error, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError | OSError):
        return Failure("reset", f"the upstream closed the connection: {error}", sent=True)
    return Failure("bad_answer", f"the upstream's answer was not valid HTTP: {error}", sent=True)
