"""HTTP only: the operator's routes, accepted (202) or proxied.

Handlers translate between HTTP and the store, the dispatcher and `upstream.exchange`; header
rules live in `headers.py`, answers in `responses.py`, the status URL in `status.py`, the
gateway's own endpoints in `operations.py`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from gateway import headers as h
from gateway import jobs, responses
from gateway.callbacks import allowed, well_formed
from gateway.config import Config, Route, Upstream
from gateway.dispatcher import Dispatcher
from gateway.endings import until
from gateway.errors import BodyTooLarge, IdempotencyConflict, StorageError
from gateway.jobs import NewJob, Status
from gateway.metrics import Metrics
from gateway.store import CHUNK, Part, Store
from gateway.upstream import Pool, UpstreamFailed, exchange

log = logging.getLogger("gateway.http")


@dataclass
class Runtime:
    """What handlers use, opened and closed by the app's one cleanup context."""

    config: Config
    store: Store
    session: Pool  # the upstreams' keep-alive connections
    dispatcher: Dispatcher
    key: bytes
    metrics: Metrics
    draining: bool = False

    def now(self) -> float:
        return time.time()


RUNTIME = web.AppKey("runtime", Runtime)


# -- routes the operator configured ------------------------------------------------


async def route(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    matched = rt.config.route_for(request.path, request.method)
    if matched is None:
        return responses.problem(404, "Not Found", "no route takes this method and path")
    if rt.draining:
        return responses.unavailable(
            "Draining",
            "the gateway is shutting down; try again shortly",
            rt.config.jobs.retry_after,
        )
    too_large = _declared_too_large(request, rt.config.server.max_body)
    if too_large is not None:
        return too_large
    upstream = rt.config.upstreams[matched.upstream]
    if matched.mode == "proxy":
        return await proxy(request, rt, upstream)
    return await accept(request, rt, matched)


def _declared_too_large(request: web.Request, limit: int) -> web.Response | None:
    if request.content_length is not None and request.content_length > limit:
        return responses.too_large(limit)
    return None


def peer(request: web.Request) -> h.Peer:
    version = f"{request.version.major}.{request.version.minor}"
    return h.Peer(request.remote or "", request.scheme, request.host, version)


def binding(rt: Runtime, raw: h.Headers) -> str:
    """A keyed hash of the bind_headers values; never the values themselves."""
    names = rt.config.jobs.bind_headers
    if not names:
        return ""
    values = "\0".join(h.first(raw, name) or "" for name in names)
    return hmac.new(rt.key, h.encode(values), hashlib.sha256).hexdigest()


async def accept(request: web.Request, rt: Runtime, matched: Route) -> web.StreamResponse:
    config = rt.config
    raw = h.decode(request.raw_headers)
    chosen = _client_choices(rt, raw, matched)
    if isinstance(chosen, web.Response):
        return chosen
    callback, idempotency_key = chosen
    now = rt.now()
    new = NewJob(
        id=jobs.new_id(now),
        route=matched.path,
        upstream=matched.upstream,
        method=request.method,
        target=request.raw_path,
        headers=h.for_upstream(raw, peer(request), config.server.trust_forwarded),
        created_at=now,
        retry_on_interrupt=jobs.retries_on_interrupt(matched.on_interrupt, request.method),
        binding=binding(rt, raw),
        idempotency_key=idempotency_key,
        callback=callback,
    )
    wait, applied = h.hold(matched.wait, matched.max_wait, h.preferences(raw))
    extra = {"Vary": "Prefer", **({"Preference-Applied": applied} if applied else {})}
    async with rt.dispatcher.endings.watch_if(new.id, wait) as ended:
        stored = await _store(request, rt, new)
        if isinstance(stored, web.Response):
            return stored
        job = stored
        if job.id != new.id:  # a repeat under an Idempotency-Key: the first job answers
            if job.status in jobs.FINAL:
                return await answer(request, rt, job, extra)
        else:
            rt.metrics.accepted.labels(matched.path).inc()
            rt.metrics.accept_latency.observe(rt.now() - new.created_at)
            rt.dispatcher.notify(job.upstream)
            if await until(ended, wait):
                ended_job = await _reread(rt, job.id)
                if ended_job is not None and ended_job.status in jobs.FINAL:
                    return await answer(request, rt, ended_job, extra)
    base = h.base_url(peer(request), raw, config.server.public_url, config.server.trust_forwarded)
    status_url = f"{base}{config.jobs.prefix}/{job.id}"
    return responses.accepted(job, status_url, config.jobs.retry_after, extra)


def _client_choices(
    rt: Runtime, raw: h.Headers, matched: Route
) -> tuple[str | None, str] | web.Response:
    """The callback URL and the scoped Idempotency-Key a client asked for, or its 400."""
    urls = h.every(raw, "X-Callback-Url")
    if len(urls) > 1 or (urls and not well_formed(urls[0])):
        return responses.problem(
            400, "Bad X-Callback-Url", "X-Callback-Url must be one absolute http(s) URL"
        )
    if urls and not allowed(urls[0], rt.config.callbacks.allow_hosts):
        return responses.problem(
            400, "Callback Not Allowed", "X-Callback-Url must name a host in callbacks.allow_hosts"
        )
    keys = h.every(raw, "Idempotency-Key")
    key = h.idempotency_key(keys[0]) if len(keys) == 1 else None
    if keys and key is None:
        return responses.problem(
            400,
            "Bad Idempotency-Key",
            f"Idempotency-Key must be one string of 1 to {h.MAX_KEY} visible ASCII characters",
        )
    return (urls[0] if urls else matched.callback), _scoped(rt, raw, key)


def _scoped(rt: Runtime, raw: h.Headers, key: str | None) -> str:
    """The client's Idempotency-Key, scoped to its credentials, as a keyed hash."""
    if key is None:
        return ""
    scoped = f"idempotency\0{binding(rt, raw)}\0{key}"
    return hmac.new(rt.key, h.encode(scoped), hashlib.sha256).hexdigest()


async def _store(request: web.Request, rt: Runtime, new: NewJob) -> jobs.Job | web.Response:
    """The stored job (or the first one under the same Idempotency-Key), or the refusal."""
    config = rt.config
    try:
        if await rt.dispatcher.backlog() >= config.jobs.max_queued:
            return responses.unavailable(
                "Queue Full", "too many jobs are waiting", config.jobs.retry_after
            )
        return await rt.store.accept(new, await _body(request, config.server.max_body))
    except BodyTooLarge:
        return responses.too_large(config.server.max_body)
    except IdempotencyConflict:
        return responses.problem(
            422,
            "Idempotency-Key Reused",
            "this Idempotency-Key was already used for a different method, path or body",
        )
    except StorageError as e:
        log.error("cannot store request", extra={"event": "accept_failed", "error": str(e)})
        return responses.unavailable(
            "Storage Unavailable", "the request could not be stored", config.jobs.retry_after
        )


async def _reread(rt: Runtime, job_id: str) -> jobs.Job | None:
    try:
        return await rt.store.get(job_id, rt.now())
    except StorageError:
        return None  # the 202 is still true: the job is stored


async def answer(
    request: web.Request, rt: Runtime, job: jobs.Job, extra: dict[str, str]
) -> web.StreamResponse:
    """What the gateway says about a job: pending, replayed, failed or canceled."""
    if job.status in jobs.PENDING:
        return responses.pending(job, rt.config.jobs.retry_after, extra)
    if job.status == Status.COMPLETED:
        try:
            return await responses.replay(request, job, rt.store.body(job.id, Part.ANSWER), extra)
        except StorageError:  # raised only before anything was sent
            return responses.storage_down(rt.config.jobs.retry_after)
    if job.status == Status.FAILED:
        return responses.failed(job, extra)
    return responses.problem(
        409,
        "Canceled",
        "the job was canceled",
        headers={**responses.job_headers(job), **extra},
        job_id=job.id,
    )


def _body_for_proxy(
    request: web.Request, limit: int, over: list[BodyTooLarge]
) -> AsyncIterator[bytes] | aiohttp.StreamReader | None:
    """The body as it streams through; one without a Content-Length is counted against
    max_body as it goes (a declared one was checked before)."""
    if not request.body_exists:
        return None
    if request.content_length is not None:
        return request.content

    async def counted() -> AsyncIterator[bytes]:
        try:
            async for piece in _pieces(request, limit):
                yield piece
        except BodyTooLarge as e:
            over.append(e)
            raise

    return counted()


async def _body(request: web.Request, limit: int) -> AsyncIterator[bytes]:
    """A body declared to fit one piece, read at once; any other in pieces as it comes."""
    length = request.content_length
    if length is not None and length <= CHUNK:
        return jobs.Whole(await request.content.read())
    return _pieces(request, limit)


async def _pieces(request: web.Request, limit: int) -> AsyncIterator[bytes]:
    """The request body in pieces of CHUNK bytes (the last may be shorter)."""
    buffer = bytearray()
    total = 0
    async for data in request.content.iter_chunked(CHUNK):
        total += len(data)
        if total > limit:
            raise BodyTooLarge(f"over {limit} bytes")
        buffer += data
        while len(buffer) >= CHUNK:
            yield bytes(buffer[:CHUNK])
            del buffer[:CHUNK]
    if buffer:
        yield bytes(buffer)


async def proxy(request: web.Request, rt: Runtime, upstream: Upstream) -> web.StreamResponse:
    raw = h.decode(request.raw_headers)
    sent = list(h.for_upstream(raw, peer(request), rt.config.server.trust_forwarded))
    if request.content_length is not None:
        sent.append(("Content-Length", str(request.content_length)))
    over: list[BodyTooLarge] = []
    body = _body_for_proxy(request, rt.config.server.max_body, over)
    response: web.StreamResponse | None = None
    try:
        async with exchange(
            rt.session, upstream, request.method, request.raw_path, tuple(sent), body
        ) as reply:
            answer = reply.answer
            length = h.content_length(answer.headers)
            # A body of known length leaves with its head, so its first piece is read before
            # anything is sent (an upstream that fails then still gets its client a 502); a
            # stream's head leaves at once.
            first = b"" if length is None else await anext(reply.body, b"")
            response = responses.Verbatim(
                answer.status,
                answer.reason,
                h.for_client(answer.headers),
                immediately=length is None,
            )
            await response.prepare(request)
            if first:
                await response.write(first)
            async for chunk in reply.body:
                await response.write(chunk)
    except (UpstreamFailed, BodyTooLarge) as e:
        if response is not None and response.prepared:  # too late for a 502 or a 413
            return responses.cut(request, response, "proxy_cut", e)
        if over or isinstance(e, BodyTooLarge):
            return responses.too_large(rt.config.server.max_body)
        if isinstance(request.content.exception(), web.RequestPayloadError):
            return responses.bad_framing()  # the client's body broke, not the upstream
        failure = e.failure
        title = "Gateway Timeout" if failure.http_status == 504 else "Bad Gateway"
        return responses.problem(failure.http_status, title, failure.detail)
    assert response is not None  # the exchange either answered or raised
    await response.write_eof()
    return response
