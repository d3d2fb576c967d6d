"""Leases: whose jobs the housekeeping tick takes back, and whose it leaves alone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.jobs import Job
from gateway.leases import Housekeeping, dead_predecessor, new_owner
from gateway.store.sqlite import SQLiteStore
from tests.test_store import T0, accepted

HOST = socket.gethostname()


def gone_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(child.stdout)


def test_a_dead_predecessor_is_a_gone_pid_or_our_own_pid_under_another_token() -> None:
    me = new_owner()
    assert dead_predecessor(f"{HOST}:{gone_pid()}:aaaa", me)
    assert dead_predecessor(f"{HOST}:{os.getpid()}:other", me)  # restarted as the same pid
    assert not dead_predecessor(me, me)
    assert not dead_predecessor(f"{HOST}:{os.getppid()}:aaaa", me)  # alive
    assert not dead_predecessor(f"elsewhere:{gone_pid()}:aaaa", me)  # cannot tell: wait it out
    assert not dead_predecessor("garbage", me)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(str(tmp_path / "store.db"))
    await opened.open()
    yield opened
    await opened.close()


def housekeeping(
    store: SQLiteStore, owner: str, now: float, calls: set[str], settled: list[str]
) -> Housekeeping:
    async def settle(job: Job) -> None:
        settled.append(job.id)

    return Housekeeping(store, owner, 15.0, 600.0, lambda: now, lambda: calls, settle)


async def test_recover_takes_back_only_dead_or_lapsed_leases(store: SQLiteStore) -> None:
    me = new_owner()
    for job_id, owner, lease_until in [
        ("dead", f"{HOST}:{gone_pid()}:aaaa", T0 + 15),
        ("lapsed", "elsewhere:1:aaaa", T0 - 1),
        ("alive", "elsewhere:1:bbbb", T0 + 15),
        ("ours", me, T0 - 1),  # lapsed, but its call is still going on here
    ]:
        await accepted(store, job_id)
        await store.claim("up", owner, T0 - 5, lease_until)
    settled: list[str] = []
    keeper = housekeeping(store, me, T0, {"ours"}, settled)
    assert await keeper.recover(T0) == 2
    assert sorted(settled) == ["dead", "lapsed"]
    assert await keeper.recover(T0) == 0  # taken once, under a fresh lease of ours
    owners = {job.id: job.owner for job in await store.running()}
    assert owners == {"dead": me, "lapsed": me, "alive": "elsewhere:1:bbbb", "ours": me}


async def test_sweep_deletes_expired_jobs_only(store: SQLiteStore) -> None:
    await accepted(store, "done")
    await store.claim("up", "w", T0, T0 + 15)
    await store.cancel("done", T0, T0 + 10)
    await accepted(store, "waiting")
    keeper = housekeeping(store, new_owner(), T0 + 11, set(), [])
    assert await keeper.sweep(T0 + 11) == 1
    assert await store.get("done", T0) is None
    assert await store.get("waiting", T0 + 11) is not None
