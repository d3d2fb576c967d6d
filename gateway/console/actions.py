"""The console's actions on jobs: retry, cancel, forget, and the bulk retry after its
confirmation. They use the same Store verbs, and the dispatcher's cancel path, as the public
DELETE and `jobs retry`; each is one `admin_action` log line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.console import present
from gateway.console.pages import CONSOLE, filter_of, form, found_job, refuse, render, wants_json
from gateway.handlers import Runtime
from gateway.store.views import JobRow

log = logging.getLogger("gateway.console")
BULK_CAP = 10_000  # a confirmation counts this far, then says "10000+"
BATCH = 500  # a bulk retry queues this many jobs again per transaction


async def _retry(rt: Runtime, found: JobRow) -> bool:
    done = await rt.store.retry(found.id)
    if done:
        rt.dispatcher.notify(found.upstream)
    return done


async def _cancel(rt: Runtime, found: JobRow) -> bool:
    """As the public DELETE cancels: the call in flight here is aborted."""
    now = rt.now()
    done = await rt.store.cancel(found.id, now, now + rt.config.jobs.retention)
    if done:
        rt.dispatcher.abort(found.id)
        rt.metrics.ended.labels(found.route, "canceled").inc()
    return done


async def _forget(rt: Runtime, found: JobRow) -> bool:
    return await rt.store.forget(found.id)


ACTIONS: dict[str, Callable[[Runtime, JobRow], Awaitable[bool]]] = {
    "retry": _retry,
    "cancel": _cancel,
    "forget": _forget,
}


async def act(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    action = request.match_info["action"]
    found = await found_job(request)
    if found is None:
        return refuse(request, 404, "Not Found", "no such job, or it has expired")
    allowed = action in present.actions(found.status)
    done = allowed and await ACTIONS[action](c.runtime, found)
    extra = {"event": "admin_action", "action": action, "job_id": found.id, "count": int(done)}
    log.info("admin_action", extra=extra)
    if not done:
        return refuse(request, 409, "Conflict", f"a {found.status} job cannot be {action}ed now")
    if wants_json(request):
        return web.json_response({"action": action, "job_id": found.id, "done": True})
    raise web.HTTPSeeOther("/jobs" if action == "forget" else f"/jobs/{found.id}")


async def bulk_confirm(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    where = filter_of(request.query, failed_only=True)
    n = await c.runtime.store.count_jobs(where, BULK_CAP + 1)
    if wants_json(request):
        return web.json_response({"count": n, "filter": where.as_dict()})
    return render(
        request,
        "confirm.html",
        title="Retry failed jobs",
        n=n,
        count=present.count(n, BULK_CAP),
        fields=where.as_dict(),
    )


async def bulk_retry(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    rt = c.runtime
    where = filter_of({**request.query, **await form(request)}, failed_only=True)
    n = await rt.store.retry_failed(where, rt.now(), BATCH)
    for upstream in [where.upstream] if where.upstream else rt.config.upstreams:
        if upstream in rt.config.upstreams:
            rt.dispatcher.notify(upstream)
    extra = {"event": "admin_action", "action": "bulk_retry", "filter": where.as_dict(), "count": n}
    log.info("admin_action", extra=extra)
    if wants_json(request):
        return web.json_response({"action": "bulk_retry", "retried": n})
    links = [("/jobs?status=queued", "Queued jobs"), ("/", "Overview")]
    detail = f"{n} failed job{'' if n == 1 else 's'} queued again."
    return render(request, "message.html", title="Retried", detail=detail, links=links)
