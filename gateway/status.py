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


async def _bound(request: web.Request, rt: Runtime) -> jobs.Job | None:
    job = await rt.store.get(request.match_info["id"], rt.now())
    offered = binding(rt, h.decode(request.raw_headers))
    if job is None or not hmac.compare_digest(job.binding, offered):
        return None
    return job


def _max_wait(rt: Runtime, job: jobs.Job) -> float:
    route = next((r for r in rt.config.routes if r.path == job.route and r.mode == "async"), None)
    return route.max_wait if route is not None else DEFAULT_MAX_WAIT


async def status(request: web.Request) -> web.StreamResponse:
    """GET and HEAD; `Prefer: wait=N` answers as soon as the job ends, or after N seconds."""
    rt = request.app[RUNTIME]
    prefs = h.preferences(h.decode(request.raw_headers))
    try:
        async with rt.dispatcher.endings.watch(request.match_info["id"]) as ended:
            job = await _bound(request, rt)
            if job is None:
                return responses.not_found()
            extra: dict[str, str] = {}
            if job.status in jobs.PENDING and prefs.wait:
                seconds = min(prefs.wait, _max_wait(rt, job))
                extra["Preference-Applied"] = f"wait={seconds:g}"
                if await until(ended, seconds):
                    job = await _bound(request, rt) or job
    except StorageError:
        return _storage_down(rt)
    return await answer(request, rt, job, extra)


async def status_view(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    try:
        job = await _bound(request, rt)
    except StorageError:
        return _storage_down(rt)
    if job is None:
        return responses.not_found()
    return web.json_response(jobs.summary(job), headers=responses.job_headers(job))


async def delete(request: web.Request) -> web.StreamResponse:
    """Cancel a pending job (its call in flight is aborted) or forget a finished one."""
    rt = request.app[RUNTIME]
    try:
        job = await _bound(request, rt)
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
        return _storage_down(rt)
    if not done:  # it ended or vanished meanwhile: say what it is now
        return responses.problem(
            409,
            "Conflict",
            "the job changed state; look again",
            headers={"Cache-Control": responses.NO_STORE},
        )
    return web.Response(status=204, headers={"Cache-Control": responses.NO_STORE})


def _storage_down(rt: Runtime) -> web.Response:
    return responses.unavailable(
        "Storage Unavailable",
        "storage cannot be read right now",
        rt.config.jobs.retry_after,
        {"Cache-Control": responses.NO_STORE},
    )
