"""The contract under concurrency: two store instances on one database (two processes, two
replicas) racing the same verbs, over every backend. Each verb that is a compare-and-set is
one here: the race has one winner, whatever runs the two calls side by side."""

from __future__ import annotations

import asyncio
import dataclasses

from gateway.errors import StorageError
from gateway.jobs import Answer, Failure, Status
from gateway.store import CHUNK, Part, Store
from tests.test_store import T0, accepted, keyed, new, pieces

Pair = tuple[Store, Store]


async def test_a_cap_holds_for_claims_from_both_instances_at_once(store_pair: Pair) -> None:
    one, two = store_pair
    for i in range(40):
        await accepted(one if i % 2 else two, f"j{i:02}")
    cap = 5
    for _round in range(4):
        claims = [
            (one, two)[i % 2].claim_many("up", f"w{i}", T0, T0 + 15, 3, cap=cap) for i in range(8)
        ]
        taken = [job for batch in await asyncio.gather(*claims) for job in batch]
        assert len(taken) == cap == len({job.id for job in taken})
        running = await two.running()
        assert len(running) == cap
        for job in running:  # end them all: the next round races for the freed cap again
            assert await one.fail(
                job.id, job.owner or "", Failure("refused", "x", False), T0, T0 + 99
            )


async def test_one_claim_wins_a_job(store_pair: Pair) -> None:
    one, two = store_pair
    for i in range(10):
        await accepted(one, f"j{i}")
    claims = [(one, two)[i % 2].claim("up", f"w{i}", T0, T0 + 15) for i in range(20)]
    won = [job.id for job in await asyncio.gather(*claims) if job is not None]
    assert sorted(won) == [f"j{i}" for i in range(10)]


async def test_accepts_under_one_key_on_both_instances_make_one_job(store_pair: Pair) -> None:
    one, two = store_pair
    accepts = [
        (one, two)[i % 2].accept(keyed(f"j{i}", f"k{i // 4}"), pieces(b"same")) for i in range(20)
    ]
    kept = await asyncio.gather(*accepts)
    for key in range(5):  # four accepts under each key: one job, the same for all four
        assert len({job.id for job in kept[key * 4 : key * 4 + 4]}) == 1
    assert await one.queued(100) == 5 and await two.queued(100) == 5


async def test_accepts_in_pieces_under_one_key_make_one_job(store_pair: Pair) -> None:
    one, two = store_pair
    big = [b"x" * CHUNK, b"tail"]
    kept = await asyncio.gather(
        one.accept(keyed("a", "k"), pieces(*big)), two.accept(keyed("b", "k"), pieces(*big))
    )
    assert kept[0].id == kept[1].id
    assert await one.queued(100) == 1
    assert await one.list_jobs(None, None, 10) == await two.list_jobs(None, None, 10)


async def test_forget_racing_retry_has_one_winner(store_pair: Pair) -> None:
    one, two = store_pair
    for i in range(10):
        await accepted(one, f"j{i}")
    for job in await one.claim_many("up", "w1", T0, T0 + 15, 10):
        assert await one.fail(job.id, "w1", Failure("refused", "no", False), T0, T0 + 99)
    results = await asyncio.gather(
        *[call for i in range(10) for call in (one.forget(f"j{i}"), two.retry(f"j{i}"))]
    )
    for i in range(10):
        forgot, retried = results[2 * i], results[2 * i + 1]
        assert forgot != retried, (i, forgot, retried)
        found = await one.get(f"j{i}", T0)
        if forgot:
            assert found is None
        else:
            assert found is not None and found.status == Status.QUEUED


async def test_a_callback_is_taken_by_one_instance_at_a_time(store_pair: Pair) -> None:
    one, two = store_pair
    for i in range(6):
        await one.accept(dataclasses.replace(new(f"j{i}"), callback="https://x/"), pieces(b"p"))
    for job in await one.claim_many("up", "w1", T0, T0 + 15, 6):
        await one.complete(job.id, "w1", Answer(200, "OK", ()), pieces(b""), T0, T0 + 99)
    takes = [(one, two)[i % 2].due_callback(T0 + 1, T0 + 61) for i in range(12)]
    owed = [c.webhook_id for c in await asyncio.gather(*takes) if c is not None]
    assert len(owed) == len(set(owed)) == 6


async def test_a_body_removed_while_it_is_read_is_never_short(store_pair: Pair) -> None:
    one, two = store_pair
    whole = b"".join(bytes([i]) * CHUNK for i in range(4))
    await one.accept(
        new("big"), pieces(*[whole[i : i + CHUNK] for i in range(0, len(whole), CHUNK)])
    )
    await one.claim("up", "w1", T0, T0 + 15)
    assert await one.fail("big", "w1", Failure("refused", "no", False), T0, T0 + 99)
    reading = one.body("big", Part.REQUEST)
    read = [await anext(reading)]
    assert await two.forget("big")
    try:
        read += [chunk async for chunk in reading]
    except StorageError as e:
        assert "removed while it was read" in str(e)
    else:  # a store that read it whole before it went (memory)
        assert b"".join(read) == whole
