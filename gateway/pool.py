"""Keep-alive connections to upstreams: resolving (cached briefly), connecting, TLS, reuse.

A connection goes back to its origin's idle list only after an exchange read to its clean end;
one idle too long, or closed by the upstream, is never handed out again.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.http1 import Broken, Connection

IDLE = 4.0  # seconds a connection may sit idle and still be reused (servers close at 5 s and up)
DNS_TTL = 10.0  # seconds a name's addresses are reused


@dataclass(frozen=True)
class Origin:
    """Where an upstream URL points: the pool's key, and what each request's head needs."""

    scheme: str
    host: str
    port: int
    base: str  # the URL's path, put before each target
    authority: str  # the Host header

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


@functools.lru_cache(maxsize=256)
def origin_of(url: str) -> Origin:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    default = 443 if scheme == "https" else 80
    port = parts.port or default
    shown = f"[{host}]" if ":" in host else host
    authority = shown if port == default else f"{shown}:{port}"
    return Origin(scheme, host, port, parts.path.rstrip("/"), authority)


class Pool:
    """Idle connections by origin; every connection it made, so that closing ends them all."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._idle: dict[Origin, list[Connection]] = {}
        self._open: set[Connection] = set()
        self._names: dict[tuple[str, int], tuple[float, list[tuple[str, int]]]] = {}
        self._tls = tls

    async def acquire(self, origin: Origin, connect_timeout: float) -> Connection:
        """An idle connection to `origin` still fit for use, else a new one."""
        idle = self._idle.get(origin)
        if idle:
            now = asyncio.get_running_loop().time()
            while idle:
                conn = idle.pop()
                if not conn.lost and now - conn.idle_since < IDLE:
                    conn.reused = True
                    return conn
                conn.transport.abort()
        return await self._connect(origin, connect_timeout)

    def release(self, origin: Origin, conn: Connection) -> None:
        """Keep `conn` for the next exchange if its last one ended clean, else close it."""
        if conn.reusable():
            conn.idle_since = asyncio.get_running_loop().time()
            conn.pieces.clear()  # what the caller left unread; still `done`: an idle line
            self._idle.setdefault(origin, []).append(conn)
        elif not conn.lost:
            conn.transport.abort()

    async def close(self) -> None:
        for conn in list(self._open):
            conn.transport.abort()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports' connection_lost run

    def _lost(self, conn: Connection) -> None:
        self._open.discard(conn)
        for idle in self._idle.values():
            if conn in idle:
                idle.remove(conn)

    async def _connect(self, origin: Origin, timeout: float) -> Connection:
        try:
            async with asyncio.timeout(timeout):
                return await self._open_one(origin)
        except TimeoutError as e:
            raise Broken(
                "timeout", f"connecting to the upstream timed out after {timeout:g}s", False
            ) from e
        except (OSError, ssl.SSLError) as e:
            raise Broken("refused", f"cannot connect to the upstream: {e}", False) from e

    async def _open_one(self, origin: Origin) -> Connection:
        loop = asyncio.get_running_loop()
        tls = self._context() if origin.tls else None
        error: OSError | None = None
        for host, port in await self._addresses(origin.host, origin.port):
            try:
                _, conn = await loop.create_connection(
                    lambda: Connection(self._lost),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
            except OSError as e:
                error = e
                continue
            self._open.add(conn)
            return conn
        raise error or OSError(f"no address for {origin.host}")

    async def _addresses(self, host: str, port: int) -> list[tuple[str, int]]:
        """The name's addresses, looked up at most every DNS_TTL seconds; literals as they are."""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return [(host, port)]
        now = asyncio.get_running_loop().time()
        cached = self._names.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        found = list(dict.fromkeys((str(info[4][0]), int(info[4][1])) for info in infos))
        self._names[(host, port)] = (now + DNS_TTL, found)
        return found

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls
