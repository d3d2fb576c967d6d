"""One exchange with an upstream on the gateway's own HTTP/1.1 client, errors as values.

Every way a call can go wrong becomes an `UpstreamFailed` carrying a `Failure` that says whether
the request may have reached the upstream; the caller decides what follows. Callbacks keep
aiohttp's ClientSession (`new_session`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from aiohttp import StreamReader

from gateway.config import Upstream
from gateway.errors import GatewayError
from gateway.headers import Headers, content_length
from gateway.http1 import READ_SIZE, Broken, Connection, request_head
from gateway.jobs import Answer, Failure
from gateway.pool import Origin, origin_of
from gateway.pool import Pool as Pool

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


def new_pool() -> Pool:
    """One pool of keep-alive connections for every upstream; the dispatcher bounds its use."""
    return Pool()


def new_session() -> aiohttp.ClientSession:
    """The callbacks' client session."""
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
    pool: Pool,
    upstream: Upstream,
    method: str,
    target: str,
    headers: Headers,
    body: Body,
) -> AsyncIterator[Reply]:
    """Send one request; yield the answer's head and its body as it arrives.

    The whole exchange, until the caller leaves the block, is bounded by `upstream.timeout`.
    """
    origin = origin_of(upstream.url)
    head, chunked = _head(method, origin, target, headers, body is not None)
    conn = await _connect(pool, origin, min(upstream.connect_timeout, upstream.timeout))
    conn.begin(method)
    loop = asyncio.get_running_loop()
    timer = loop.call_at(loop.time() + upstream.timeout, _expire, conn, upstream.timeout)
    try:
        await _send(conn, head, body, chunked)
        while not conn.head_done:
            if conn.error is not None:
                raise conn.error
            await conn.wait()
        answer = Answer(conn.status, conn.reason, tuple(conn.headers))
        yield Reply(answer, _Pieces(conn, content_length(answer.headers)))
    except Broken as e:
        raise UpstreamFailed(e.failure) from e
    finally:
        timer.cancel()
        pool.release(origin, conn)


Body = AsyncIterator[bytes] | StreamReader | None


def _head(
    method: str, origin: Origin, target: str, headers: Headers, has_body: bool
) -> tuple[bytes, bool]:
    try:
        return request_head(method, origin.base + target, origin.authority, headers, has_body)
    except Broken as e:
        raise UpstreamFailed(e.failure) from e


async def _connect(pool: Pool, origin: Origin, timeout: float) -> Connection:
    try:
        return await pool.acquire(origin, timeout)
    except Broken as e:
        raise UpstreamFailed(e.failure) from e


def _expire(conn: Connection, seconds: float) -> None:
    conn.fail(Broken("timeout", f"the upstream did not answer within {seconds:g}s", True))


async def _send(conn: Connection, head: bytes, body: Body, chunked: bool) -> None:
    """The head, then the body piece by piece as the upstream takes it. An upstream that
    answers before it has the whole body has its answer read (sending stops; the connection
    is not reused)."""
    conn.write(head)
    if body is None:
        conn.sent_whole = True
        return
    try:
        conn.sent_whole = await _send_body(conn, body, chunked)
    except Broken:
        if not conn.head_done:
            raise


async def _send_body(
    conn: Connection, body: AsyncIterator[bytes] | StreamReader, chunked: bool
) -> bool:
    """Whether the whole body went; not if the upstream answered before it had it."""
    pieces = body.iter_chunked(READ_SIZE) if isinstance(body, StreamReader) else body
    async for piece in pieces:
        if piece:
            conn.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
            await conn.drain()
            if conn.head_done:  # answered already: the rest is not wanted
                return False
    if chunked:
        conn.write(b"0\r\n\r\n")
    return True


class _Pieces:
    """The answer's body: pieces of at most READ_SIZE bytes, each taken only when asked for; a
    body declared no larger than that (most answers) whole, so a short one fails before any of
    it is handed on."""

    def __init__(self, conn: Connection, length: int | None) -> None:
        self._conn = conn
        self._whole = length is not None and length <= READ_SIZE

    def __aiter__(self) -> _Pieces:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        while not conn.pieces or (self._whole and not conn.done):
            if conn.done:
                raise StopAsyncIteration
            if conn.error is not None:
                raise UpstreamFailed(conn.error.failure) from conn.error
            await conn.wait()
        return conn.take()
