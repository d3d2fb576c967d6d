"""The PostgreSQL store's own promises: leases on the database's clock, one heartbeat a
process, job ends heard across instances (and caught up after a lost listener), the schema
set up by replicas starting together, and what an outage or a wrong password does."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.errors import StorageError
from gateway.jobs import Answer, Failure
from gateway.store.postgres import PostgresStore
from tests.postgres import PASSWORD, PASSWORD_ROLE, Server
from tests.test_store import T0, accepted, pieces


@pytest.fixture
async def pair(postgres_url: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    one, two = PostgresStore(postgres_url), PostgresStore(postgres_url)
    await one.open()
    await two.open()
    yield one, two
    await two.close()
    await one.close()


async def eventually(check: Callable[[], object], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_leases_are_on_the_database_clock_not_the_callers(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    one, two = pair
    await accepted(one, "a")
    await one.claim("up", "w1", T0, T0 + 15)  # a caller whose clock is years behind
    [seen] = await two.running()
    assert seen.owner == "w1" and seen.lease_until is not None
    assert 13 < seen.lease_until - time.time() <= 15  # 15 s of the database's time, here
    assert not await two.steal(seen, "w2", time.time() + 15)  # its holder is alive


async def test_a_holder_that_stops_beating_loses_its_jobs_once(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    one, two = pair
    await accepted(one, "a")
    now = time.time()
    await one.claim("up", "w1", now, now + 0.3)
    [seen] = await two.running()
    assert not await two.steal(seen, "w2", now + 15)
    lapsed: list[bool] = []

    async def check() -> None:
        [job] = await two.running()
        lapsed.append((job.lease_until or 0) < time.time())

    while not lapsed or not lapsed[-1]:
        await check()
    assert await two.steal(seen, "w2", time.time() + 15)
    assert not await one.steal(seen, "w3", time.time() + 15)  # taken once
    assert not await one.fail("a", "w1", Failure("reset", "x", True), now, now + 9)


async def test_a_job_its_live_holder_no_longer_runs_lapses_at_once(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    one, two = pair
    await accepted(one, "kept")
    await accepted(one, "dropped")
    now = time.time()
    await one.claim_many("up", "w1", now, now + 0.2, 2)
    await asyncio.sleep(1.1)  # both claims are past the second a fresh claim is spared
    await one.renew("w1", ["kept"], time.time() + 15)  # alive, running "kept" only
    leases = {job.id: job.lease_until or 0 for job in await two.running()}
    assert leases["kept"] > time.time() + 10 and leases["dropped"] < time.time()


async def test_an_end_on_one_instance_is_heard_on_the_other(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    one, two = pair
    heard: list[str] = []
    two.on_end(heard.append, lambda: ["a"])
    await accepted(one, "a")
    await accepted(one, "b")
    await two.get("a", T0)  # the listener is connected by the time a verb has run
    await eventually(lambda: two._db._listening)
    await one.claim_many("up", "w1", T0, T0 + 15, 2)
    started = time.monotonic()
    await one.complete("a", "w1", Answer(200, "OK", ()), pieces(b"x"), T0, T0 + 99)
    await eventually(lambda: heard == ["a"], within=1.0)
    assert time.monotonic() - started < 1.0
    await one.cancel("b", T0, T0 + 99)
    await eventually(lambda: heard == ["a", "b"], within=1.0)


async def test_a_lost_listener_catches_up_on_the_ends_it_missed(
    pair: tuple[PostgresStore, PostgresStore], postgres: Server, postgres_url: str
) -> None:
    one, two = pair
    heard: list[str] = []
    two.on_end(heard.append, lambda: ["a"])
    await accepted(one, "a")
    await one.claim("up", "w1", T0, T0 + 15)
    await eventually(lambda: two._db._listening)
    db = postgres_url.split("/")[3].split("?")[0]
    postgres.psql(  # cut every listening connection; the end below is notified to no one
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE datname = '{db}' AND query LIKE 'LISTEN%'"
    )
    await one.fail("a", "w1", Failure("refused", "no", False), T0, T0 + 99)
    await eventually(lambda: heard == ["a"], within=5.0)


async def test_replicas_starting_together_set_the_schema_up_once(postgres_url: str) -> None:
    stores = [PostgresStore(postgres_url) for _ in range(6)]
    for store in stores:
        await store.open()
    try:
        keys = await asyncio.gather(*[store.key() for store in stores])
        assert len(set(keys)) == 1 and len(keys[0]) == 32
    finally:
        for store in stores:
            await store.close()


@pytest.mark.parametrize("problem", ["password", "database"])
async def test_a_wrong_password_or_database_is_one_log_line_without_the_password(
    postgres: Server, caplog: pytest.LogCaptureFixture, problem: str
) -> None:
    wrong = "not-the-" + PASSWORD
    url = (
        postgres.url("postgres", PASSWORD_ROLE, wrong)
        if problem == "password"
        else postgres.url("no_such_db", PASSWORD_ROLE, PASSWORD)
    )
    store = PostgresStore(url)
    await store.open()
    try:
        with caplog.at_level(logging.ERROR, logger="gateway.store"):
            for _ in range(3):
                with pytest.raises(StorageError):
                    await store.key()
            await asyncio.sleep(0.1)
    finally:
        await store.close()
    lines = [r for r in caplog.records if getattr(r, "event", "") == "storage_unavailable"]
    assert len(lines) == 1, [r.__dict__ for r in lines]
    error = lines[0].__dict__["error"]
    expected = "password authentication failed" if problem == "password" else "no_such_db"
    assert expected in error
    assert PASSWORD not in str(lines[0].__dict__) and wrong not in error


async def test_an_outage_is_a_storage_error_and_the_store_resumes_by_itself(
    pair: tuple[PostgresStore, PostgresStore], postgres: Server
) -> None:
    one, _ = pair
    await accepted(one, "before")
    await one.ping()
    postgres.stop("immediate")
    try:
        with pytest.raises(StorageError):
            await one.ping()
        with pytest.raises(StorageError):
            await accepted(one, "during")
        with pytest.raises(StorageError):
            await one.get("before", T0)
    finally:
        postgres.resume()
    await one.ping()
    assert await one.get("before", T0) is not None
    assert (await accepted(one, "after")).id == "after"
    assert await one.get("during", T0) is None
