"""The Store contract: every backend (memory, SQLite, PostgreSQL: `tests/stores.py`) passes it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.errors import IdempotencyConflict
from gateway.jobs import Answer, Failure, Job, NewJob, Status
from gateway.store import CHUNK, Part, Store

T0 = 1_700_000_000.0


def new(job_id: str, upstream: str = "up", method: str = "POST", at: float = T0) -> NewJob:
    return NewJob(
        id=job_id,
        route="/r",
        upstream=upstream,
        method=method,
        target=f"/r/{job_id}?q=1",
        headers=(("Authorization", "Bearer x"), ("X-A", "1"), ("X-A", "2")),
        created_at=at,
        retry_on_interrupt=method == "GET",
        binding="b1",
    )


async def pieces(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def body(store: Store, job_id: str, part: Part) -> bytes:
    return b"".join([chunk async for chunk in store.body(job_id, part)])


async def accepted(store: Store, job_id: str, data: bytes = b"payload", **kw: object) -> Job:
    return await store.accept(new(job_id, **kw), pieces(data))  # type: ignore[arg-type]


async def test_accept_stores_request_and_queues(store: Store) -> None:
    job = await accepted(store, "a")
    assert job.status == Status.QUEUED
    plain = await store.get("a", T0)
    assert plain is not None and plain.request_headers is None  # read only when asked for
    got = await store.get("a", T0, request=True)
    assert got is not None
    assert (got.method, got.target, got.binding) == ("POST", "/r/a?q=1", "b1")
    assert got.request_headers == (("Authorization", "Bearer x"), ("X-A", "1"), ("X-A", "2"))
    assert got.request_size == 7
    assert await body(store, "a", Part.REQUEST) == b"payload"
    assert await store.queued(100) == 1


async def test_the_queue_is_counted_up_to_a_limit(store: Store) -> None:
    for job_id in "abc":
        await accepted(store, job_id)
    await store.claim("up", "w1", T0, T0 + 15)
    assert await store.queued(100) == 2
    assert await store.queued(1) == 1


async def test_the_queue_depth_follows_every_move_in_and_out_of_the_queue(store: Store) -> None:
    async def depth() -> tuple[int, dict[str, int]]:
        return await store.queued(100), await store.queued_by_upstream()

    for job_id in "abcd":
        await accepted(store, job_id)
    await accepted(store, "z", upstream="other")
    await store.accept(new("big"), pieces(b"x" * CHUNK, b"tail"))  # received, then queued
    assert await depth() == (6, {"up": 5, "other": 1})
    await store.claim_many("up", "w1", T0, T0 + 15, 2)  # a, b
    assert await depth() == (4, {"up": 3, "other": 1})
    assert await store.requeue("a", "w1", T0 + 10)
    assert await store.cancel("c", T0, T0 + 50)  # queued
    assert await store.cancel("b", T0, T0 + 50)  # running: no change
    assert await depth() == (4, {"up": 3, "other": 1})
    claimed = await store.claim_many("up", "w1", T0 + 10, T0 + 25, 9)
    assert {job.id for job in claimed} == {"a", "d", "big"}
    assert await depth() == (1, {"other": 1})
    assert await store.fail("a", "w1", Failure("refused", "no", False), T0, T0 + 9)
    assert await store.retry("a")
    assert await depth() == (2, {"up": 1, "other": 1})


async def test_a_cap_bounds_the_running_jobs_of_every_owner_together(store: Store) -> None:
    for job_id in "abcdef":
        await accepted(store, job_id)
    first = await store.claim_many("up", "w1", T0, T0 + 15, 5, cap=2)
    assert [job.id for job in first] == ["a", "b"]
    assert await store.claim_many("up", "w2", T0, T0 + 15, 5, cap=2) == []  # another process
    assert await store.complete("a", "w1", Answer(200, "OK", ()), pieces(b"x"), T0, T0 + 9)
    assert [job.id for job in await store.claim_many("up", "w2", T0, T0 + 15, 5, cap=2)] == ["c"]
    assert await store.requeue("b", "w1", T0)
    assert await store.cancel("c", T0, T0 + 9)
    assert len(await store.claim_many("up", "w2", T0, T0 + 15, 5, cap=2)) == 2
    assert len(await store.claim_many("up", "w1", T0, T0 + 15, 5)) == 2  # no cap: the rest


async def test_accept_takes_many_pieces(store: Store) -> None:
    parts = [bytes([i]) * CHUNK for i in range(3)] + [b"tail"]
    job = await store.accept(new("big"), pieces(*parts))
    assert job.request_size == 3 * CHUNK + 4
    assert await body(store, "big", Part.REQUEST) == b"".join(parts)


async def test_an_upload_that_breaks_leaves_no_job(store: Store) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * CHUNK
        yield b"y" * CHUNK
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.accept(new("gone"), broken())
    assert await store.get("gone", T0) is None
    assert await store.queued(100) == 0


async def test_unknown_job_is_none(store: Store) -> None:
    assert await store.get("nope", T0) is None


async def test_claim_takes_oldest_due_job_once(store: Store) -> None:
    for name in ("first", "second"):
        await accepted(store, name)
    await accepted(store, "other", upstream="elsewhere")
    one = await store.claim("up", "w1", T0, T0 + 15)
    two = await store.claim("up", "w2", T0, T0 + 15)
    assert one is not None and two is not None
    assert (one.id, one.status, one.attempts) == ("first", Status.RUNNING, 1)
    assert two.id == "second"
    assert await store.claim("up", "w3", T0, T0 + 15) is None
    assert await store.queued(100) == 1


async def test_complete_stores_answer_and_drops_request(store: Store) -> None:
    await accepted(store, "a")
    await store.claim("up", "w1", T0, T0 + 15)
    answer = Answer(201, "Created", (("X-B", "1"), ("X-B", "2")))
    done = await store.complete("a", "w1", answer, pieces(b"ans", b"wer"), T0 + 1, T0 + 100)
    assert done
    job = await store.get("a", T0 + 2, request=True)
    assert job is not None and job.status == Status.COMPLETED
    assert job.answer == Answer(201, "Created", (("X-B", "1"), ("X-B", "2")), size=6)
    assert job.request_headers is None
    assert await body(store, "a", Part.ANSWER) == b"answer"
    assert await body(store, "a", Part.REQUEST) == b""
    assert job.finished_at == T0 + 1


async def test_only_the_lease_holder_ends_a_job(store: Store) -> None:
    await accepted(store, "a")
    await store.claim("up", "w1", T0, T0 + 15)
    answer = Answer(200, "OK", ())
    assert not await store.complete("a", "intruder", answer, pieces(b"x"), T0, T0 + 9)
    assert not await store.fail("a", "intruder", Failure("reset", "x", True), T0, T0 + 9)
    assert not await store.requeue("a", "intruder", T0)
    job = await store.get("a", T0)
    assert job is not None and job.status == Status.RUNNING
    assert await body(store, "a", Part.ANSWER) == b""


async def test_a_job_ends_once(store: Store) -> None:
    await accepted(store, "a")
    await store.claim("up", "w1", T0, T0 + 15)
    assert await store.fail("a", "w1", Failure("refused", "no", False), T0, T0 + 9)
    assert not await store.complete("a", "w1", Answer(200, "OK", ()), pieces(b""), T0, T0 + 9)
    job = await store.get("a", T0, request=True)
    assert job is not None and job.status == Status.FAILED
    assert job.failure == Failure("refused", "no", False)
    assert job.request_headers is not None  # a failed job keeps its request as a dead letter
    assert await body(store, "a", Part.REQUEST) == b"payload"


async def test_requeue_waits_until_due(store: Store) -> None:
    await accepted(store, "a")
    await store.claim("up", "w1", T0, T0 + 15)
    assert await store.requeue("a", "w1", T0 + 10)
    assert await store.claim("up", "w1", T0 + 5, T0 + 20) is None
    again = await store.claim("up", "w1", T0 + 10, T0 + 25)
    assert again is not None and again.attempts == 2


# Leases on the caller's clock; PostgreSQL keeps them on its own (`test_store_postgres.py`).
@pytest.mark.parametrize("store", ["memory", "sqlite"], indirect=True)
async def test_leases_are_renewed_and_stolen_by_compare_and_set(store: Store) -> None:
    await accepted(store, "a")
    await store.claim("up", "w1", T0, T0 + 15)
    [seen] = await store.running()
    assert (seen.owner, seen.lease_until) == ("w1", T0 + 15)
    await store.renew("w1", ["a"], T0 + 30)
    assert not await store.steal(seen, "w2", T0 + 60)  # the holder renewed since it was seen
    [renewed] = await store.running()
    assert await store.steal(renewed, "w2", T0 + 60)
    assert not await store.steal(renewed, "w3", T0 + 60)
    assert await store.requeue("a", "w2", T0)
    assert await store.running() == []


async def test_finished_jobs_expire_and_are_purged(store: Store) -> None:
    await accepted(store, "a")
    await accepted(store, "b")
    await store.claim("up", "w1", T0, T0 + 15)
    await store.complete("a", "w1", Answer(200, "OK", ()), pieces(b"x"), T0, T0 + 100)
    assert await store.get("a", T0 + 99) is not None
    assert await store.get("a", T0 + 100) is None
    assert await store.purge(T0 + 100, T0) == 1
    assert await body(store, "a", Part.ANSWER) == b""
    assert await store.get("b", T0 + 100) is not None  # pending jobs never expire


async def test_key_is_stable(store: Store) -> None:
    key = await store.key()
    assert len(key) >= 32 and await store.key() == key


async def test_cancel_ends_a_pending_job_and_drops_its_request(store: Store) -> None:
    await accepted(store, "q")
    await accepted(store, "r")
    await store.claim("up", "w1", T0, T0 + 15)
    assert await store.cancel("q", T0 + 1, T0 + 50)  # running
    assert await store.cancel("r", T0 + 1, T0 + 50)  # queued
    for job_id in ("q", "r"):
        job = await store.get(job_id, T0 + 2, request=True)
        assert job is not None and job.status == Status.CANCELED
        assert job.request_headers is None
        assert await body(store, job_id, Part.REQUEST) == b""
    assert not await store.cancel("q", T0 + 3, T0 + 50)  # once
    assert not await store.complete("q", "w1", Answer(200, "OK", ()), pieces(b"x"), T0, T0 + 9)
    assert await store.claim("up", "w1", T0 + 5, T0 + 20) is None


async def test_forget_deletes_only_finished_jobs(store: Store) -> None:
    await accepted(store, "a")
    assert not await store.forget("a")
    await store.claim("up", "w1", T0, T0 + 15)
    await store.complete("a", "w1", Answer(200, "OK", ()), pieces(b"x"), T0, T0 + 100)
    assert await store.forget("a")
    assert await store.get("a", T0) is None
    assert await body(store, "a", Part.ANSWER) == b""
    assert not await store.forget("a")


def keyed(job_id: str, key: str, target: str = "/r") -> NewJob:
    job = new(job_id)
    return NewJob(**{**job.__dict__, "idempotency_key": key, "target": target})


async def test_idempotency_key_keeps_the_first_job(store: Store) -> None:
    first = await store.accept(keyed("a", "k"), pieces(b"same"))
    again = await store.accept(keyed("b", "k"), pieces(b"same"))
    assert first.id == again.id == "a"
    assert await store.get("b", T0) is None
    with pytest.raises(IdempotencyConflict):
        await store.accept(keyed("c", "k"), pieces(b"other"))
    with pytest.raises(IdempotencyConflict):
        await store.accept(keyed("d", "k", target="/elsewhere"), pieces(b"same"))
    assert await store.queued(100) == 1


async def test_idempotency_key_frees_up_when_the_job_is_gone(store: Store) -> None:
    await store.accept(keyed("a", "k"), pieces(*[b"x" * CHUNK, b"y"]))
    await store.claim("up", "w1", T0, T0 + 15)
    await store.complete("a", "w1", Answer(200, "OK", ()), pieces(b"x"), T0, T0 + 100)
    assert await store.forget("a")
    fresh = await store.accept(keyed("b", "k"), pieces(b"new"))
    assert fresh.id == "b"


async def test_ending_a_job_owes_its_callback_in_the_same_step(store: Store) -> None:
    job = NewJob(**{**new("a").__dict__, "callback": "https://hooks.example/x"})
    await store.accept(job, pieces(b"p"))
    await accepted(store, "quiet")  # no callback: nothing owed
    assert await store.due_callback(T0 + 1, T0 + 60) is None
    await store.claim("up", "w1", T0, T0 + 15)
    await store.complete("a", "w1", Answer(200, "OK", ()), pieces(b""), T0, T0 + 100)
    owed = await store.due_callback(T0 + 1, T0 + 61)
    assert owed is not None and (owed.job_id, owed.url, owed.attempts) == (
        "a",
        "https://hooks.example/x",
        1,
    )
    assert await store.due_callback(T0 + 2, T0 + 62) is None  # held by the first taker
    await store.callback_later(owed.webhook_id, T0 + 5)
    again = await store.due_callback(T0 + 5, T0 + 65)
    assert again is not None and again.webhook_id == owed.webhook_id and again.attempts == 2
    await store.callback_done(owed.webhook_id)
    assert await store.due_callback(T0 + 999, T0 + 999) is None


async def test_retry_requeues_a_failed_job_with_its_request(store: Store) -> None:
    await accepted(store, "a")
    await accepted(store, "b")
    assert not await store.retry("a")  # queued, not failed
    await store.claim("up", "w1", T0, T0 + 15)
    await store.fail("a", "w1", Failure("refused", "no", False), T0, T0 + 9)
    assert await store.retry("a")
    job = await store.get("a", T0 + 100)  # no longer expires
    assert job is not None and (job.status, job.attempts, job.failure) == (Status.QUEUED, 0, None)
    claimed = await store.claim("up", "w1", T0 + 1, T0 + 16)
    assert claimed is not None and claimed.id == "a"  # it keeps its place in arrival order
    assert await body(store, "a", Part.REQUEST) == b"payload"


async def test_list_and_purge_finished(store: Store) -> None:
    for name in ("a", "b", "c"):
        await accepted(store, name)
    await store.claim("up", "w1", T0, T0 + 15)
    await store.complete("a", "w1", Answer(200, "OK", ()), pieces(b""), T0 + 5, T0 + 99)
    assert [j.id for j in await store.list_jobs(None, None, 10)] == ["c", "b", "a"]
    assert [j.id for j in await store.list_jobs("completed", "/r", 10)] == ["a"]
    assert await store.list_jobs(None, "/other", 10) == []
    assert await store.purge_finished(T0 + 5) == 0
    assert await store.purge_finished(T0 + 6) == 1
    assert [j.id for j in await store.list_jobs(None, None, 10)] == ["c", "b"]


async def test_claim_many_takes_the_oldest_in_order(store: Store) -> None:
    for name in ("a", "b", "c", "d"):
        await accepted(store, name)
    taken = await store.claim_many("up", "w1", T0, T0 + 15, 3)
    assert [j.id for j in taken] == ["a", "b", "c"]
    assert all(j.status == Status.RUNNING and j.attempts == 1 for j in taken)
    assert [j.id for j in await store.claim_many("up", "w2", T0, T0 + 15, 3)] == ["d"]
    assert await store.claim_many("up", "w2", T0, T0 + 15, 3) == []
