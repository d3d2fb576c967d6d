"""The one owner of SQLite's write transaction: group commit from a single thread.

Callers hand in operations (functions of a sqlite3 connection); the writer runs every waiting
operation in one transaction and resolves each caller's future only after the COMMIT that holds
its rows. Should one operation fail, the batch is run again with each operation in a savepoint
of its own, so one caller's failure is that caller's alone (operations are functions of the
connection, safe to run again after a rollback). A failed COMMIT fails every operation of that
batch, so no caller is ever told "stored" for a row that was rolled back.

With a Durability (for a connection at `synchronous = NORMAL`), the WAL is synced after the turn
is given up and before any caller hears back (`durability.py` says why that is as safe).

Processes sharing the file (`server.workers`) take turns through an flock on a lock file beside
it before each transaction. A waiting writer looks again after 0.1 ms, doubling to at most 1 ms,
where SQLite's busy handler would sleep 1, 2, 5, 10... ms between tries; while one process
commits, the other's batch grows, so the group commit holds across processes. SQLite's own
locking still decides what is safe: a writer that does not take the turn (the sqlite3 shell)
only waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gateway.errors import StorageError
from gateway.store import OnCommit
from gateway.store.sqlite.durability import Durability

Operation = Callable[[sqlite3.Connection], Any]
MAX_BATCH = 256
TURN_PAUSE, TURN_PAUSE_MAX = 0.0001, 0.001  # waits between looks at another process's turn


class Writer:
    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        on_commit: OnCommit | None = None,
        turns: str | None = None,
        timeout: float = 5.0,
        durability: Durability | None = None,
    ) -> None:
        self._connect = connect
        self._on_commit = on_commit
        self._turns = turns  # the lock file writers take turns on, if any
        self._timeout = timeout
        self._durability = durability
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._local = threading.local()
        self._pending: list[tuple[Operation, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._open)
        self._task = asyncio.create_task(self._run(), name="sqlite-writer")

    async def stop(self) -> None:
        """Commit what is waiting, then close; later writes are refused."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)

    async def run(self, op: Operation) -> Any:
        """Run `op` in the next transaction; return its result once that transaction commits."""
        if self._task is None or self._closing:
            raise StorageError("storage is not open")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        self._wake.set()
        return await future

    async def checkpoint(self, wait: float) -> bool:
        """Copy the WAL into the database and truncate it to nothing, between transactions;
        False if readers still on older snapshots kept it from finishing within `wait`."""
        if self._task is None or self._closing:
            raise StorageError("storage is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._checkpoint, wait)
        except (sqlite3.Error, OSError) as e:
            raise StorageError(f"checkpoint failed: {e}") from e

    def _checkpoint(self, wait: float) -> bool:
        conn: sqlite3.Connection = self._local.conn
        with self._turn():
            conn.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
            try:
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
        return not busy

    def _open(self) -> None:
        if self._turns is not None:
            # flock needs no write access: any user who may write the database can take a turn
            self._local.turns = os.open(self._turns, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._local.conn = self._connect()

    def _close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        turns = getattr(self._local, "turns", None)
        if turns is not None:
            os.close(turns)

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """This process's turn at the write lock, among the processes sharing the file; as
        bounded as SQLite's own wait (a process stuck in its turn fails writes, not hangs them).
        """
        turns = getattr(self._local, "turns", None)
        if turns is None:
            yield
            return
        deadline, pause = time.monotonic() + self._timeout, TURN_PAUSE
        while True:
            try:
                fcntl.flock(turns, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise sqlite3.OperationalError("another process kept the write turn") from None
                time.sleep(pause)
                pause = min(pause * 2, TURN_PAUSE_MAX)
        try:
            yield
        finally:
            fcntl.flock(turns, fcntl.LOCK_UN)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing or self._pending:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                ops = [op for op, _ in batch]
                try:
                    results, seconds = await asyncio.shield(
                        loop.run_in_executor(self._executor, self._commit, ops)
                    )
                except Exception as e:  # never leave a caller waiting on a dead writer
                    results = [(False, StorageError(f"write failed: {e!r}"))] * len(ops)
                else:
                    if self._on_commit is not None and seconds is not None:
                        self._on_commit(len(ops), seconds)
                for (_, future), (ok, value) in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)

    def _commit(self, ops: list[Operation]) -> tuple[list[tuple[bool, Any]], float | None]:
        """Each operation's outcome, and how long the transaction took if it committed."""
        conn: sqlite3.Connection = self._local.conn
        durable = self._durability
        try:
            # the turn ends before the sync that `committing` ends with
            with durable.committing() if durable else contextlib.nullcontext(), self._turn():
                started = time.perf_counter()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    results = [(True, op(conn)) for op in ops]
                except Exception:  # one failed: run them again, each in its own savepoint
                    conn.execute("ROLLBACK")
                    conn.execute("BEGIN IMMEDIATE")
                    results = [self._apply(conn, op) for op in ops]
                conn.execute("COMMIT")
            seconds = time.perf_counter() - started
        except (sqlite3.Error, OSError) as e:
            _rollback(conn)
            return [(False, StorageError(f"write failed: {e}"))] * len(ops), None
        return results, seconds

    @staticmethod
    def _apply(conn: sqlite3.Connection, op: Operation) -> tuple[bool, Any]:
        """One operation in a savepoint; a failure of the transaction itself propagates."""
        conn.execute("SAVEPOINT op")
        try:
            value = op(conn)
        except Exception as e:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            return False, StorageError(str(e)) if isinstance(e, sqlite3.Error) else e
        conn.execute("RELEASE op")
        return True, value


def _rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):  # nothing may be left to roll back
        conn.execute("ROLLBACK")
