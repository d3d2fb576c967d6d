"""The status URL: poll and long-poll (GET, HEAD), the /status view, cancel and forget (DELETE).

Every answer here carries Cache-Control: no-store and X-Gateway-Job-Status; a job bound to other
credentials is as unknown as one that never was.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from gateway import headers as h
from gateway import jobs, responses
from gateway.endings import until
from gateway.errors import StorageError
from gateway.handlers import RUNTIME, Runtime, answer, binding

DEFAULT_MAX_WAIT = 60.0


async def _bound(request: web.Request, rt: Runtime, raw: h.Headers) -> jobs.Job | None:
    job = await rt.store.get(request.match_info["id"], rt.now())
    if job is None:
        return None
    return job if hmac.compare_digest(job.binding, binding(rt, raw)) else None


def _max_wait(rt: Runtime, job: jobs.Job) -> float:
    route = next((r for r in rt.config.routes if r.path == job.route and r.mode == "async"), None)
    return route.max_wait if route is not None else DEFAULT_MAX_WAIT


async def status(request: web.Request) -> web.StreamResponse:
    """GET and HEAD; `Prefer: wait=N` answers as soon as the job ends, or after N seconds."""
    rt = request.app[RUNTIME]
    raw = h.decode(request.raw_headers)
    prefs = h.preferences(raw)
    extra: dict[str, str] = {}
    try:
        if prefs.wait:
            job = await _long_poll(request, rt, raw, prefs.wait, extra)
        else:
            job = await _bound(request, rt, raw)
    except StorageError:
        return responses.storage_down(rt.config.jobs.retry_after)
    if job is None:
        return responses.not_found()
    return await answer(request, rt, job, extra)


async def _long_poll(
    request: web.Request, rt: Runtime, raw: h.Headers, wait: float, extra: dict[str, str]
) -> jobs.Job | None:
    """The job once it ends or `wait` runs out; the watch starts before the first read, so an
    end that lands in between is not missed."""
    async with rt.dispatcher.endings.watch(request.match_info["id"]) as ended:
        job = await _bound(request, rt, raw)
        if job is None or job.status not in jobs.PENDING:
            return job
        seconds = min(wait, _max_wait(rt, job))
        extra["Preference-Applied"] = f"wait={seconds:g}"
        if await until(ended, seconds):
            return await _bound(request, rt, raw) or job
        return job


async def status_view(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    try:
        job = await _bound(request, rt, h.decode(request.raw_headers))
    except StorageError:
        return responses.storage_down(rt.config.jobs.retry_after)
    if job is None:
        return responses.not_found()
    return responses.view(job)


async def delete(request: web.Request) -> web.StreamResponse:
    """Cancel a pending job (its call in flight is aborted) or forget a finished one."""
    rt = request.app[RUNTIME]
    try:
        job = await _bound(request, rt, h.decode(request.raw_headers))
        if job is None:
            return responses.not_found()
        if job.status in jobs.PENDING:
            now = rt.now()
            done = await rt.store.cancel(job.id, now, now + rt.config.jobs.retention)
            if done:
                rt.dispatcher.abort(job.id)
                rt.metrics.ended.labels(job.route, "canceled").inc()
        else:
            done = await rt.store.forget(job.id)
    except StorageError:
        return responses.storage_down(rt.config.jobs.retry_after)
    if not done:  # it ended or vanished meanwhile: say what it is now
        return responses.problem(
            409,
            "Conflict",
            "the job changed state; look again",
            headers={"Cache-Control": responses.NO_STORE},
        )
    return web.Response(status=204, headers={"Cache-Control": responses.NO_STORE})
