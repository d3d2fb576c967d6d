"""The PostgreSQL store's connections: a pool for the verbs, one listener connection of its own
for job ends, and what an outage looks like to the rest (StorageError, one log line per cause).

Nothing here knows a job's columns; `statements.py` holds the SQL and `store.py` the verbs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Collection

import asyncpg

from gateway import units
from gateway.endings import until
from gateway.errors import StorageError
from gateway.store import OnCommit
from gateway.store.postgres import schema
from gateway.store.postgres.schema import Connection
from gateway.store.postgres.statements import CHANNEL, ENDED

log = logging.getLogger("gateway.store")
CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 30.0
PING = 5.0  # how often the listener's connection is checked
RETRY = 1.0  # how soon a lost listener connects again
POOL_SIZE = 32  # a commit waits for the WAL's flush: as many in flight as share one
LOST = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class Database:
    def __init__(self, url: str, on_commit: OnCommit | None = None) -> None:
        self.url = url
        self._where = units.redacted(url)
        self._on_commit = on_commit
        self._pool: asyncpg.Pool | None = None
        self._key: bytes | None = None
        self._setup = asyncio.Lock()
        self._down: str | None = None  # the kind of outage last logged, while there is one
        self._ended: Callable[[str], None] = lambda _: None
        self._watched: Callable[[], Collection[str]] = tuple
        self._listener: asyncio.Task[None] | None = None
        self._listening = False  # the listener's LISTEN is in place

    async def open(self) -> None:
        """Never fails for a database that is down: the verbs raise StorageError until it is
        up, and the first one after that sets the schema up and reads the key."""
        self._pool = asyncpg.create_pool(
            self.url,
            min_size=0,
            max_size=POOL_SIZE,
            timeout=CONNECT_TIMEOUT,
            command_timeout=COMMAND_TIMEOUT,
            max_inactive_connection_lifetime=60.0,
            reset=_kept,
        )
        await self._pool
        self._listener = asyncio.create_task(self._listen(), name="postgres-listener")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._pool is not None:
            with contextlib.suppress(*LOST):
                await asyncio.wait_for(self._pool.close(), 5.0)
            self._pool.terminate()

    @property
    def down(self) -> bool:
        """Whether the database is unreachable, as last seen (and logged once)."""
        return self._down is not None

    def on_end(self, ended: Callable[[str], None], watched: Callable[[], Collection[str]]) -> None:
        self._ended, self._watched = ended, watched

    async def key(self) -> bytes:
        """The binding key kept in the database; the schema is set up on the way."""
        if self._key is None:
            async with self._setup, self._connect() as c:
                if self._key is None:
                    await schema.create(c)
                    await c.execute(
                        "INSERT INTO gateway_meta VALUES ('binding_key', $1)"
                        " ON CONFLICT (key) DO NOTHING",
                        secrets.token_hex(32),
                    )
                    value = await c.fetchval(
                        "SELECT value FROM gateway_meta WHERE key = 'binding_key'"
                    )
                    self._key = bytes.fromhex(value)
        return self._key

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection to a database whose schema is ready."""
        if self._key is None:
            await self.key()
        async with self._connect() as c:
            yield c

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[Connection]:
        """A pooled connection; losing the database on the way is a StorageError."""
        if self._pool is None:
            raise StorageError("the PostgreSQL store is not open")
        try:
            async with self._pool.acquire() as c:
                yield c
        except LOST as e:
            raise self._lost(e) from e
        if self._down is not None:
            self._down = None
            log.warning("storage back", extra={"event": "storage_back", "storage": self._where})

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """One short write transaction, timed for the commit hook."""
        started = time.perf_counter()
        async with self.connection() as c, c.transaction():
            yield c
        if self._on_commit is not None:
            self._on_commit(1, time.perf_counter() - started)

    @contextlib.asynccontextmanager
    async def statement(self) -> AsyncIterator[Connection]:
        """A connection for one statement that is a transaction of its own, timed alike."""
        started = time.perf_counter()
        async with self.connection() as c:
            yield c
        if self._on_commit is not None:
            self._on_commit(1, time.perf_counter() - started)

    def _lost(self, e: BaseException) -> StorageError:
        cause = f"{type(e).__name__}: {e}".strip()
        if _kind(e) != self._down:  # one line an outage (and one more if its kind changes)
            self._down = _kind(e)
            log.error(
                "storage unavailable",
                extra={"event": "storage_unavailable", "storage": self._where, "error": cause},
            )
        return StorageError(f"PostgreSQL: {cause}")

    # -- the listener ------------------------------------------------------------

    async def _listen(self) -> None:
        """One connection of its own (a pooled one would lose its LISTEN to the pool's reset),
        checked every PING and opened again when lost; each (re)connection catches up with the
        ends it may have missed, for every job a client here waits on."""
        while True:
            try:
                c = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT)
            except LOST as e:
                self._lost(e)
                await asyncio.sleep(RETRY)
                continue
            try:
                await self._hear(c)
            except LOST:
                pass
            finally:
                self._listening = False
                c.terminate()
            await asyncio.sleep(RETRY)

    async def _hear(self, c: asyncpg.Connection) -> None:
        lost = asyncio.Event()
        c.add_termination_listener(lambda _: lost.set())
        await c.add_listener(CHANNEL, self._heard)
        self._listening = True
        watched = list(self._watched())
        if watched:
            for row in await c.fetch(ENDED, watched):
                self._ended(row[0])
        while not await until(lost, PING):
            await c.fetchval("SELECT 1", timeout=PING)

    def _heard(self, _c: object, _pid: int, _channel: str, payload: object) -> None:
        self._ended(str(payload))


async def _kept(_c: asyncpg.Connection) -> None:
    """A pooled connection goes back as it is: an open transaction is rolled back by asyncpg
    itself, and the verbs leave no session state (their advisory locks end with their
    transactions, and LISTEN is only on the listener's own connection). The default reset is
    one more round trip a verb."""


def _kind(e: BaseException) -> str:
    """What an outage is, for logging it once: unreachable (refused, cut, starting, shutting
    down: SQLSTATE classes 08 and 57), or the server's own error (a wrong password, a missing
    database), which names itself."""
    state = getattr(e, "sqlstate", None) or ""
    if not isinstance(e, asyncpg.PostgresError) or state[:2] in ("08", "57"):
        return "unreachable"
    return f"{state}: {e}"
