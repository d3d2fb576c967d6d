"""Storing an accepted request in PostgreSQL: its body in pieces, one short transaction each,
and its place in the queue, or the live job already stored under its Idempotency-Key."""

from __future__ import annotations

from collections.abc import AsyncIterator

from gateway import encoding
from gateway.errors import IdempotencyConflict
from gateway.jobs import NewJob, Status, fingerprint
from gateway.store import Part
from gateway.store.postgres import statements as sql
from gateway.store.postgres.connection import Database
from gateway.store.postgres.schema import Connection


async def accept(db: Database, job: NewJob, body: AsyncIterator[bytes]) -> tuple[str, int]:
    """The id of the job kept (this one, or an earlier one under the same key), and the
    request's size; returns once that is committed."""
    digest = fingerprint(job)
    first = await anext(body, b"")
    digest.update(first)
    second = await anext(body, None)
    if second is None and not job.idempotency_key:  # the common case: one statement
        async with db.statement() as c:
            await c.execute(
                sql.ENQUEUE, job.id, job.route, job.upstream, job.method, job.target,
                encoding.dumps_text(job.headers), len(first), job.retry_on_interrupt,
                job.binding, job.callback, job.created_at, first,
            )  # fmt: skip
        return job.id, len(first)
    if second is None:  # one transaction, under the key's lock
        async with db.transaction() as c:
            return await _enqueue(c, job, digest.hexdigest(), first), len(first)
    async with db.transaction() as c:
        await _insert(c, job, Status.RECEIVING, first)
    try:
        size, n = len(first), 1
        async for chunk in _chain(second, body):
            digest.update(chunk)
            async with db.transaction() as c:
                await c.execute(sql.PUT_PIECE, job.id, Part.REQUEST, n, chunk)
            size, n = size + len(chunk), n + 1
        async with db.transaction() as c:
            return await _enqueue(c, job, digest.hexdigest(), size), size
    except BaseException:
        async with db.transaction() as c:
            await c.execute(sql.DELETE_JOB, job.id)
        raise


async def _insert(c: Connection, job: NewJob, status: Status, first: bytes) -> None:
    await c.execute(
        sql.INSERT, job.id, job.route, job.upstream, str(status), job.method, job.target,
        encoding.dumps_text(job.headers), len(first), job.retry_on_interrupt, job.binding,
        job.callback, job.created_at,
    )  # fmt: skip
    await c.execute(sql.PUT_PIECE, job.id, Part.REQUEST, 0, first)


async def _enqueue(c: Connection, job: NewJob, digest: str, body: bytes | int) -> str:
    """Queue the job, or keep the live job already stored under its Idempotency-Key (the same
    request; another is a conflict). The key's lock makes two accepts under one key, on any
    replicas, one job: the second reads the key after the first committed."""
    if job.idempotency_key:
        await c.execute(sql.LOCK, "gateway:key:" + job.idempotency_key)
        earlier = await c.fetchrow(sql.KEY_HOLDER, job.idempotency_key, job.created_at)
        if earlier is not None:
            if earlier[1] != digest:
                raise IdempotencyConflict("the key was used for another request")
            if isinstance(body, int):
                await c.execute(sql.DELETE_JOB, job.id)
            return str(earlier[0])
        await c.execute(sql.TAKE_KEY, job.idempotency_key, job.id, digest)
    if isinstance(body, bytes):
        await _insert(c, job, Status.QUEUED, body)
    else:
        await c.execute(sql.QUEUE_RECEIVED, job.id, body)
    return job.id


async def _chain(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield head
    async for chunk in rest:
        yield chunk
