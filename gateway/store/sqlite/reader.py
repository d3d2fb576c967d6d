"""Reading the SQLite file: lookups by key on the event loop, everything else on a thread.

A lookup by key (a poll, a replay's pieces) runs on the event loop itself: in WAL mode it almost
never waits on writers, and it costs a fraction of a hop to a thread. It may wait at most
POINT_BUSY_S for a lock (a WAL reset); longer waits, and every other read, go to the reader
thread. Both connections are in autocommit, and every query runs to its end in one step, so no
read leaves a transaction open that would pin an old snapshot.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import aiosqlite

from gateway.errors import StorageError

POINT_BUSY_S = 0.02  # the longest a read on the event loop may wait for a lock


class Reader:
    def __init__(self, path: str, busy_timeout_s: float) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        self._thread: aiosqlite.Connection | None = None
        self._point: sqlite3.Connection | None = None

    async def open(self) -> None:
        self._thread = await aiosqlite.connect(
            self.path, isolation_level=None, timeout=self._busy_timeout_s
        )
        self._point = sqlite3.connect(self.path, isolation_level=None, timeout=POINT_BUSY_S)

    async def close(self) -> None:
        if self._point is not None:
            self._point.close()
            self._point = None
        if self._thread is not None:
            await self._thread.close()
            self._thread = None

    async def one(self, query: str, args: tuple[Any, ...]) -> Any:
        """The first row of a lookup by key, or None: on the event loop unless it must wait."""
        if self._point is None:
            raise StorageError("storage is not open")
        try:
            rows = self._point.execute(query, args).fetchall()  # to its end: no open read
        except sqlite3.Error:  # busy for a moment: wait off the loop instead
            rows = await self.all(query, args)
        return rows[0] if rows else None

    async def all(self, query: str, args: tuple[Any, ...]) -> list[Any]:
        """Every row of a query, run to its end in one step on the reader's thread.

        Handlers share the reader connection; a statement left open between steps would hold
        a read transaction, and another handler's query inside it would see an old snapshot
        (a job just committed would look missing).
        """
        if self._thread is None:
            raise StorageError("storage is not open")
        try:
            return list(await self._thread.execute_fetchall(query, args))
        except sqlite3.Error as e:
            raise StorageError(f"read failed: {e}") from e
