"""The writer: a batch commits together, one operation's failure is that caller's alone, and
processes take bounded turns."""

from __future__ import annotations

import asyncio
import fcntl
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.errors import StorageError
from gateway.store.sqlite.durability import Durability
from gateway.store.sqlite.writer import Writer

pytestmark = pytest.mark.sqlite_only  # the SQLite store's writer thread


async def test_a_failing_operation_fails_alone_and_the_batch_commits(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    writer = Writer(lambda: sqlite3.connect(path, isolation_level=None, check_same_thread=False))
    await writer.start()

    def put(key: str) -> Callable[[sqlite3.Connection], int]:
        return lambda c: c.execute("INSERT INTO t VALUES (?)", (key,)).rowcount

    def put_then_fail(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t VALUES ('half')")
        raise ValueError("refused")

    try:
        results = await asyncio.gather(
            writer.run(put("a")),
            writer.run(put_then_fail),
            writer.run(put("b")),
            writer.run(put("a")),  # a duplicate: its own failure
            return_exceptions=True,
        )
    finally:
        await writer.stop()
    assert results[0] == 1 and results[2] == 1
    assert isinstance(results[1], ValueError)
    assert isinstance(results[3], Exception)
    with sqlite3.connect(path) as check:
        assert sorted(r[0] for r in check.execute("SELECT k FROM t")) == ["a", "b"]


async def test_nothing_is_written_after_stop(tmp_path: Path) -> None:
    writer = Writer(lambda: sqlite3.connect(tmp_path / "w.db", check_same_thread=False))
    await writer.start()
    await writer.stop()
    with pytest.raises(Exception, match="not open"):
        await writer.run(lambda c: None)


async def test_a_turn_kept_by_another_process_fails_writes_in_bounded_time(tmp_path: Path) -> None:
    path, turns = tmp_path / "w.db", tmp_path / "w.db-writer"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    seen: list[tuple[int, float]] = []
    writer = Writer(
        lambda: sqlite3.connect(path, isolation_level=None, check_same_thread=False),
        on_commit=lambda operations, seconds: seen.append((operations, seconds)),
        turns=str(turns),
        timeout=0.2,
    )
    await writer.start()
    put = "INSERT INTO t VALUES ('a')"
    try:
        with turns.open("rb") as other:  # another process in its turn, stuck
            fcntl.flock(other, fcntl.LOCK_EX)
            with pytest.raises(StorageError, match="kept the write turn"):
                await asyncio.wait_for(writer.run(lambda c: c.execute(put)), timeout=5)
            assert seen == []
        await writer.run(lambda c: c.execute(put))  # its turn over (the file closed): on we go
    finally:
        await writer.stop()
    assert len(seen) == 1 and seen[0][0] == 1 and seen[0][1] > 0


class Watched(Durability):
    """The real sync, noting what another process could see while it runs."""

    def __init__(self, path: Path, seen: list[str]) -> None:
        super().__init__(str(path))
        self.path, self.seen = path, seen

    def sync(self) -> None:
        with open(str(self.path) + "-writer", "rb") as turns:
            fcntl.flock(turns, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if the turn is still held
        reader = Durability(str(self.path))
        reader.open()
        self.seen.append("settled" if reader.settled() else "unsettled")
        reader.close()
        super().sync()
        self.seen.append("synced")


def _durable_writer(path: Path, durability: Durability) -> Writer:
    with sqlite3.connect(path) as setup:
        setup.execute("PRAGMA journal_mode = WAL")
        setup.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY)")
    return Writer(
        lambda: sqlite3.connect(path, isolation_level=None, check_same_thread=False),
        turns=str(path) + "-writer",
        durability=durability,
    )


async def test_a_write_is_synced_after_its_turn_and_before_its_caller_hears(
    tmp_path: Path,
) -> None:
    """The sync leaves the write lock to the other processes; readers can tell it is under way;
    the caller hears only once it is done."""
    path, seen = tmp_path / "w.db", list[str]()
    durability = Watched(path, seen)
    durability.open()
    writer = _durable_writer(path, durability)
    await writer.start()
    try:
        await writer.run(lambda c: c.execute("INSERT INTO t VALUES ('a')"))
        seen.append("answered")
    finally:
        await writer.stop()
        durability.close()
    assert seen == ["unsettled", "synced", "answered"]
    reader = Durability(str(path))
    reader.open()
    assert reader.settled()
    reader.close()


class Failing(Durability):
    def sync(self) -> None:
        raise OSError(5, "Input/output error")


async def test_a_write_that_cannot_be_synced_is_not_reported_stored(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    durability = Failing(str(path))
    durability.open()
    writer = _durable_writer(path, durability)
    await writer.start()
    try:
        with pytest.raises(StorageError, match="Input/output error"):
            await writer.run(lambda c: c.execute("INSERT INTO t VALUES ('a')"))
    finally:
        await writer.stop()
        durability.close()
