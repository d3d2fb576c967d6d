"""The SQLite store's own promises, beyond the contract: its lanes, its sync, its plans."""

from __future__ import annotations

import fcntl
import sqlite3
from pathlib import Path

import pytest

from gateway.errors import StorageError
from gateway.jobs import Answer, Status
from gateway.store import CHUNK, Part
from gateway.store.sqlite import SQLiteStore, statements
from gateway.store.sqlite.durability import Durability
from tests.test_store import T0, accepted, new, pieces

pytestmark = pytest.mark.sqlite_only  # the SQLite store's own machinery


async def test_an_older_file_gets_its_lanes_counted_once(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    store = SQLiteStore(path)
    await store.open()
    for job_id in "abcd":
        await accepted(store, job_id)
    await store.claim("up", "w1", T0, T0 + 15)
    await store.close()
    with sqlite3.connect(path) as db:  # as a file written before the lanes table existed
        for trigger in ("insert", "update", "delete"):
            db.execute(f"DROP TRIGGER lanes_{trigger}")
        db.execute("DROP TABLE lanes")
    store = SQLiteStore(path)
    await store.open()
    assert await store.queued(100) == 3
    assert len(await store.claim_many("up", "w2", T0, T0 + 15, 5, cap=2)) == 1  # a still runs
    await accepted(store, "e")
    assert await store.queued_by_upstream() == {"up": 3}
    await store.close()


async def test_a_piece_removed_while_a_body_is_read_is_an_error(tmp_path: Path) -> None:
    """Not a body that ends short as if it were whole (a forget or a sweep, meanwhile)."""
    path = str(tmp_path / "g.db")
    store = SQLiteStore(path)
    await store.open()
    await store.accept(new("big"), pieces(*[bytes([i]) * CHUNK for i in range(3)]))
    reading = store.body("big", Part.REQUEST)
    assert await anext(reading) == bytes([0]) * CHUNK
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM bodies WHERE job_id = 'big' AND n = 1")
    with pytest.raises(StorageError, match="removed while it was read"):
        await anext(reading)
    await store.close()


async def test_an_ended_job_is_shown_only_once_its_end_is_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a writer of the file is between a COMMIT and its sync, what it ended may not be
    on disk yet: a read that would show an end syncs the WAL first; a pending job needs not."""
    syncs: list[str] = []
    real_sync = Durability.sync

    def counted(self: Durability) -> None:
        syncs.append("sync")
        real_sync(self)

    monkeypatch.setattr(Durability, "sync", counted)
    path = str(tmp_path / "g.db")
    store = SQLiteStore(path)
    await store.open()
    try:
        await accepted(store, "ended")
        await accepted(store, "waiting")
        await store.claim("up", "w1", T0, T0 + 15)
        await store.complete("ended", "w1", Answer(200, "OK", ()), pieces(b"a"), T0, T0 + 100)
        syncs.clear()
        with open(path + "-sync", "rb") as other:  # another process's writer, mid-commit
            fcntl.flock(other, fcntl.LOCK_SH)
            waiting = await store.get("waiting", T0)
            assert waiting is not None and waiting.status == Status.QUEUED and syncs == []
            ended = await store.get("ended", T0)
            assert ended is not None and ended.status == Status.COMPLETED and syncs == ["sync"]
        assert await store.get("ended", T0) is not None and syncs == ["sync"]  # settled: no sync
    finally:
        await store.close()


async def test_sqlite_key_survives_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "k.db")
    first = SQLiteStore(path)
    await first.open()
    key = await first.key()
    await first.close()
    second = SQLiteStore(path)
    await second.open()
    assert await second.key() == key
    assert await second.queued(100) == 0
    await second.close()


@pytest.mark.parametrize(
    ("query", "args", "indexes"),
    [
        (statements.EXPIRED, (T0, T0), {"jobs_expiry", "jobs_receiving"}),
        (statements.CLAIM, ("w", T0, T0, "up", T0, 8, 8, "up"), {"jobs_queue"}),
    ],
)
async def test_sweep_and_claim_are_found_by_index(
    tmp_path: Path, query: str, args: tuple[object, ...], indexes: set[str]
) -> None:
    store = SQLiteStore(str(tmp_path / "plan.db"))
    await store.open()
    await store.close()
    with sqlite3.connect(tmp_path / "plan.db") as db:
        plan = " | ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + query, args))
    assert all(f"INDEX {name}" in plan for name in indexes), plan
    assert "SCAN jobs" not in plan, plan  # never a walk over every live job
