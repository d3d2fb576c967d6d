"""The console's Store verbs: the same contract over every backend (the `store` fixture of
`tests/stores.py`), then the SQLite plans that keep them cheap with a million jobs stored."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from gateway.jobs import Answer, Failure, NewJob, Status
from gateway.store import Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore, console_sql
from gateway.store.views import Filter, split_target
from tests.test_store import T0, pieces

FAILED = Filter(status=Status.FAILED)


async def put(
    store: Store, job_id: str, upstream: str = "up", route: str = "/r", target: str = ""
) -> None:
    job = NewJob(
        id=job_id,
        route=route,
        upstream=upstream,
        method="POST",
        target=target or f"{route}/{job_id}?token=SECRET&q=1",
        headers=(("Authorization", "Bearer SECRET"),),
        created_at=T0,
        retry_on_interrupt=False,
        binding="BINDING",
    )
    await store.accept(job, pieces(b"SECRET body"))


async def run(store: Store, upstream: str = "up", now: float = T0) -> str:
    job = await store.claim(upstream, "w1", now, now + 15)
    assert job is not None
    return job.id


async def failed(store: Store, job_id: str, upstream: str = "up", at: float = T0) -> None:
    await put(store, job_id, upstream)
    assert await run(store, upstream, at) == job_id
    assert await store.fail(job_id, "w1", Failure("refused", "no route", False), at, at + 999)


async def test_a_page_is_newest_first_and_the_next_one_resumes_by_key(store: Store) -> None:
    for n in range(7):
        await put(store, f"j{n}")
    first = await store.find_jobs(Filter(), None, 3)
    assert [r.id for r in first] == ["j6", "j5", "j4"]
    await put(store, "late")  # jobs arriving meanwhile do not shift the next page
    second = await store.find_jobs(Filter(), first[-1].key, 3)
    assert [r.id for r in second] == ["j3", "j2", "j1"]
    assert [r.id for r in await store.find_jobs(Filter(), second[-1].key, 3)] == ["j0"]
    assert [r.id for r in await store.find_jobs(Filter(), None, 1)] == ["late"]


async def test_filters_by_status_upstream_route_and_prefix(store: Store) -> None:
    await put(store, "abc1", upstream="a", route="/x")
    await put(store, "abd2", upstream="b", route="/y")
    await put(store, "zzz3", upstream="a", route="/y", target="/y/deep/1?v=1")
    await failed(store, "fff4", upstream="c")

    async def ids(**where: object) -> list[str]:
        return [r.id for r in await store.find_jobs(Filter(**where), None, 50)]  # type: ignore[arg-type]

    assert await ids(status=Status.FAILED) == ["fff4"]
    assert await ids(status=Status.QUEUED, upstream="a") == ["zzz3", "abc1"]
    assert await ids(route="/y") == ["zzz3", "abd2"]
    assert await ids(prefix="ab") == ["abd2", "abc1"]
    assert await ids(prefix="/y/deep") == ["zzz3"]
    assert await ids(prefix="/y", upstream="b") == ["abd2"]
    assert await ids(status=Status.COMPLETED) == []
    assert await store.count_jobs(Filter(upstream="a"), 10) == 2
    assert await store.count_jobs(Filter(), 3) == 3  # stops at its limit


def test_a_path_prefix_cannot_reach_into_the_query() -> None:
    with pytest.raises(ValueError):
        Filter(prefix="/r/x?token=S")


async def test_the_projection_holds_no_header_value_body_query_value_or_binding(
    store: Store,
) -> None:
    await put(store, "a")
    assert await run(store) == "a"
    headers = (
        ("Content-Type", "text/plain"),
        ("Set-Cookie", "SECRET"),
        ("Content-Length", "6"),
    )
    assert await store.complete(
        "a", "w1", Answer(201, "Created", headers), pieces(b"SECRET"), T0 + 2, T0 + 99
    )
    found = await store.find_job("a", T0 + 3)
    assert found is not None and "SECRET" not in repr(found) and "BINDING" not in repr(found)
    assert (found.path, found.query_names) == ("/r/a", ("token", "q"))
    assert (found.status, found.answer_status, found.answer_size) == (Status.COMPLETED, 201, 6)
    assert found.answer_headers == (
        ("Content-Type", "text/plain"),
        ("Set-Cookie", None),
        ("Content-Length", "6"),
    )
    assert (found.created_at, found.started_at, found.finished_at) == (T0, T0, T0 + 2)
    [listed] = await store.find_jobs(Filter(), None, 50)
    assert listed == found
    assert await store.find_job("a", T0 + 99) is None  # past its retention
    assert await store.find_job("nope", T0) is None


async def test_a_failed_job_shows_its_cause(store: Store) -> None:
    await failed(store, "a")
    found = await store.find_job("a", T0)
    assert found is not None
    assert (found.status, found.failure_kind, found.failure_detail, found.attempts) == (
        Status.FAILED,
        "refused",
        "no route",
        1,
    )


async def test_lanes_count_each_upstream_up_to_a_limit(store: Store) -> None:
    for n in range(4):
        await put(store, f"q{n}", upstream="a")
    await run(store, "a")
    await failed(store, "f1", upstream="b", at=T0 - 600)  # ended before the window
    await failed(store, "f2", upstream="b", at=T0)
    await put(store, "c1", upstream="b")
    assert await run(store, "b") == "c1"
    await store.complete("c1", "w1", Answer(200, "OK", ()), pieces(b""), T0, T0 + 99)
    await put(store, "x1", upstream="b")
    assert await store.cancel("x1", T0, T0 + 99)
    a, b, idle = await store.lanes(["a", "b", "idle"], T0 - 300, 2)
    assert (a.upstream, a.queued, a.running, a.oldest_queued_at) == ("a", 2, 1, T0)
    assert a.ended == {"completed": 0, "failed": 0, "canceled": 0} and a.failed == 0
    assert (b.queued, b.running, b.oldest_queued_at, b.failed) == (0, 0, None, 2)
    assert b.ended == {"completed": 1, "failed": 1, "canceled": 1}
    assert (idle.queued, idle.running, idle.failed, idle.oldest_queued_at) == (0, 0, 0, None)
    [wide] = await store.lanes(["a"], T0 - 300, 1000)
    assert wide.queued == 3


async def test_bulk_retry_takes_failed_jobs_that_ended_before_it_in_batches(store: Store) -> None:
    for n in range(5):
        await failed(store, f"f{n}", upstream="a")
    await failed(store, "other", upstream="b")
    await failed(store, "later", upstream="a", at=T0 + 50)
    await put(store, "queued", upstream="a")
    assert await store.retry_failed(Filter(upstream="a"), T0 + 10, 2) == 5
    assert await store.count_jobs(Filter(status=Status.QUEUED, upstream="a"), 50) == 6
    assert [r.id for r in await store.find_jobs(FAILED, None, 50)] == ["later", "other"]
    assert await store.retry_failed(Filter(status=Status.QUEUED), T0 + 99, 2) == 0
    retried = await store.find_job("f0", T0)
    assert retried is not None and (retried.attempts, retried.failure_kind) == (0, None)


async def test_bulk_retries_racing_queue_each_job_once(store: Store) -> None:
    for n in range(9):
        await failed(store, f"f{n}")
    both = await asyncio.gather(
        store.retry_failed(FAILED, T0 + 1, 2), store.retry_failed(Filter(), T0 + 1, 3)
    )
    assert sum(both) == 9
    assert await store.count_jobs(Filter(status=Status.QUEUED), 50) == 9


async def test_bulk_retries_from_two_processes_queue_each_job_once(
    store_pair: tuple[Store, Store],
) -> None:
    one, two = store_pair
    for n in range(20):
        await failed(one, f"f{n}")
    both = await asyncio.gather(*(s.retry_failed(FAILED, T0 + 1, 3) for s in store_pair))
    assert sum(both) == 20
    assert await two.count_jobs(Filter(status=Status.QUEUED), 50) == 20


@pytest.mark.parametrize(
    ("target", "path", "names"),
    [
        ("/a", "/a", ()),
        ("/a?", "/a", ()),
        ("/a?x=1&y&x=2&=v", "/a", ("x", "y", "")),
        ("/a?x=1?b=2", "/a", ("x",)),
    ],
)
def test_a_target_shows_its_path_and_the_names_of_its_query(
    target: str, path: str, names: tuple[str, ...]
) -> None:
    assert split_target(target) == (path, names)


def _plan(db: Path, query: str, args: tuple[object, ...]) -> str:
    with sqlite3.connect(db) as c:
        return " | ".join(row[3] for row in c.execute("EXPLAIN QUERY PLAN " + query, args))


async def test_the_console_reads_by_index(tmp_path: Path) -> None:
    db = tmp_path / "plan.db"
    opened = SQLiteStore(str(db))
    await opened.open()
    await opened.close()
    ended = _plan(db, console_sql._ENDED, ("up", "failed", T0, 1001))
    assert "INDEX jobs_ended" in ended and "SCAN jobs" not in ended, ended
    oldest = _plan(db, console_sql._OLDEST, ("up",))
    assert "INDEX jobs_queue" in oldest, oldest
    clause, args = console_sql._where(FAILED, "99")
    listed = _plan(db, f"SELECT id FROM jobs {clause} ORDER BY seq DESC LIMIT 51", tuple(args))
    assert "INDEX jobs_failed" in listed and "SCAN jobs" not in listed, listed
    # an id prefix within the time part matches most jobs: walked newest first, never sorted
    for prefix, by_id in (("0Vcr", False), ("0VcrQlAGtXwa", True)):
        clause, args = console_sql._where(Filter(prefix=prefix))
        query = f"SELECT id FROM jobs {clause} ORDER BY seq DESC LIMIT 51"
        plan = _plan(db, query, tuple(args))
        assert ("sqlite_autoindex_jobs" in plan) is by_id, plan
        assert ("TEMP B-TREE" in plan) is by_id, plan


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_bulk_retry_commits_one_batch_at_a_time(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A bulk retry of many jobs never holds the one write transaction for all of them."""
    commits: list[int] = []
    url = request.getfixturevalue("postgres_url") if kind == "postgres" else ""
    opened: Store = (
        PostgresStore(url, lambda n, _: commits.append(n))
        if kind == "postgres"
        else SQLiteStore(str(tmp_path / "batches.db"), lambda n, _: commits.append(n))
    )
    await opened.open()
    try:
        for n in range(7):
            await failed(opened, f"f{n}")
        commits.clear()
        assert await opened.retry_failed(FAILED, T0 + 1, 3) == 7
        assert len(commits) >= 3  # 3 + 3 + 1, each in its own transaction
    finally:
        await opened.close()
