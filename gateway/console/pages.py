"""The console's pages: HTML by default, JSON to `Accept: application/json`; the guard every
request passes, and signing in. Handlers read only the Store's console verbs (`actions.py` acts).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from gateway import protocol, responses
from gateway.console import access, live, present
from gateway.console.access import Access
from gateway.errors import StorageError
from gateway.handlers import Runtime
from gateway.jobs import Status
from gateway.store.views import Filter, JobRow

log = logging.getLogger("gateway.console")
PAGE = 50
MAX_FIELD = 256


class BadRequest(Exception):
    """A query or form the console cannot take: a 400."""


@dataclass
class Console:
    runtime: Runtime
    hub: live.Hub
    templates: jinja2.Environment

    @property
    def access(self) -> Access:
        return Access.of(self.runtime.config.admin.token, self.runtime.key)


CONSOLE = web.AppKey("console", Console)
SIGNED = web.RequestKey("signed", str)  # how the caller signed in: open, bearer or session


# -- answering ---------------------------------------------------------------------


def wants_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def render(request: web.Request, name: str, status: int = 200, **context: Any) -> web.Response:
    c = request.app[CONSOLE]
    context.setdefault("stream", "")
    context.setdefault("job_status", "")
    html = c.templates.get_template(name).render(
        csrf=c.access.csrf(access.session_of(request)),
        signed_in=request.get(SIGNED) == "session",
        assets=SIGNED in request,  # static files, like everything, answer 401 until then
        **context,
    )
    return web.Response(text=html, status=status, content_type="text/html")


def refuse(
    request: web.Request, status: int, title: str, detail: str, allow: str | None = None
) -> web.Response:
    extra = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if allow is not None:
        extra["Allow"] = allow
    if wants_json(request):
        return responses.problem(status, title, detail, headers=extra)
    if status == 401:
        page = render(request, "login.html", status=401, title="Sign in", error="")
    else:
        page = render(request, "message.html", status=status, title=title, detail=detail, links=[])
    page.headers.update(extra)
    return page


@web.middleware
async def guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every request passes here: `admitted` first; the console's own errors, and aiohttp's,
    answered as the caller reads them (a page, or problem+json)."""
    try:
        return await admitted(request) or await handler(request)
    except StorageError as e:
        return refuse(request, 503, "Storage unavailable", str(e))
    except BadRequest as e:
        return refuse(request, 400, "Bad Request", str(e))
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return refuse(request, e.status, e.reason, e.reason, allow=e.headers.get("Allow"))


async def admitted(request: web.Request) -> web.Response | None:
    """A refusal, or None: a well-formed target and Host; same-origin POSTs only; a signed-in
    caller except for the sign-in page; a form's CSRF token wherever a browser's cookie (or
    nothing) signs the caller in."""
    c = request.app[CONSOLE]
    if (malformed := protocol.refused(request)) is not None:
        return malformed
    if request.method == "POST" and not access.same_origin(request):
        return refuse(request, 403, "Forbidden", "actions come only from the console's own pages")
    if not c.access.token and not access.loopback_host(request):
        return refuse(
            request, 403, "Forbidden", "without a token the console answers loopback only"
        )
    signed = access.who(request, c.access, c.runtime.now())
    if signed is not None:
        request[SIGNED] = signed
    elif request.path != "/login":
        return refuse(request, 401, "Unauthorized", "sign in, or send a Bearer token")
    browser = signed == "session" or (signed == "open" and access.from_browser(request))
    if request.method == "POST" and browser and request.path != "/login":  # it takes the token
        offered = (await form(request)).get("csrf")
        if not isinstance(offered, str) or not access.csrf_ok(request, c.access, offered):
            return refuse(request, 403, "Forbidden", "the form is stale; load the page again")
    return None


async def form(request: web.Request) -> Mapping[str, Any]:
    """The POSTed form; BadRequest for a body that is not one (aiohttp's 413 stands)."""
    try:
        return await request.post()
    except (ValueError, LookupError) as e:  # a broken multipart body, an unknown charset
        raise BadRequest("the form cannot be read") from e


# -- reading -----------------------------------------------------------------------


def filter_of(fields: Mapping[str, Any], failed_only: bool = False) -> Filter:
    """A filter from a query string or a form; BadRequest for anything it cannot be."""
    try:
        return _filter_of(fields, failed_only)
    except ValueError as e:
        raise BadRequest(str(e)) from e


def _filter_of(fields: Mapping[str, Any], failed_only: bool) -> Filter:
    values: dict[str, str | None] = {}
    for name in ("status", "upstream", "route", "prefix"):
        value = fields.get(name) or None
        if value is not None and (not isinstance(value, str) or len(value) > MAX_FIELD):
            raise ValueError(f"{name}: at most {MAX_FIELD} characters")
        values[name] = value
    status = values.pop("status")
    states = [s.value for s in Status if s != Status.RECEIVING]
    if status is not None and status not in states:  # named without the client's text
        raise ValueError(f"status: not one of {', '.join(states)}")
    if failed_only:
        if status not in (None, "failed"):
            raise ValueError("only failed jobs are retried")
        status = "failed"
    return Filter(status=Status(status) if status else None, **values)


async def overview_view(c: Console) -> dict[str, Any]:
    rt = c.runtime
    now = rt.now()
    lanes = await rt.store.lanes(list(rt.config.upstreams), now - present.WINDOW, present.CAP + 1)
    try:
        await rt.store.ping()
        ready = not rt.draining
    except StorageError:
        ready = False
    return present.overview(rt.config, lanes, now, ready, rt.draining)


async def snapshot(
    c: Console, job_ids: set[str]
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The figures of one tick of the live stream, shared by every viewer."""
    figures = present.live_overview(await overview_view(c))
    jobs = {}
    for job_id in job_ids:
        found = await c.runtime.store.find_job(job_id, c.runtime.now())
        if found is not None:
            jobs[job_id] = present.live_job(present.job(found))
    return figures, jobs


async def overview(request: web.Request) -> web.Response:
    view = await overview_view(request.app[CONSOLE])
    if wants_json(request):
        return web.json_response(view)
    return render(request, "overview.html", title="Overview", view=view, stream="/events")


async def jobs(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    where = filter_of(request.query)
    after = request.query.get("after") or None
    if after is not None and not (after.isascii() and after.isdigit() and len(after) <= 18):
        raise BadRequest("after: no such page")
    try:
        rows = await c.runtime.store.find_jobs(where, after, PAGE + 1)
    except ValueError as e:  # a key this store never gave out
        raise BadRequest("after: no such page") from e
    more = len(rows) > PAGE
    shown = [present.job(r) for r in rows[:PAGE]]
    view = {"jobs": shown, "next": rows[PAGE - 1].key if more else None, "filter": where.as_dict()}
    if wants_json(request):
        return web.json_response(view)
    config = c.runtime.config
    return render(
        request,
        "jobs.html",
        title="Jobs",
        view=view,
        states=[s.value for s in Status if s != Status.RECEIVING],
        upstreams=list(config.upstreams),
        routes=sorted({r.path for r in config.routes if r.mode == "async"}),
        next_url="/jobs?" + urlencode({**where.as_dict(), "after": view["next"]}) if more else None,
        bulk_url="/jobs/retry?" + urlencode(where.as_dict()),
    )


async def found_job(request: web.Request) -> JobRow | None:
    c = request.app[CONSOLE]
    job_id = request.match_info["id"]
    return await c.runtime.store.find_job(job_id, c.runtime.now()) if len(job_id) < 128 else None


async def job(request: web.Request) -> web.Response:
    found = await found_job(request)
    if found is None:
        return refuse(request, 404, "Not Found", "no such job, or it has expired")
    view = present.job(found)
    if wants_json(request):
        return web.json_response(view)
    stream = "/events?" + urlencode({"job": found.id})
    return render(
        request,
        "job.html",
        title=f"Job {found.id}",
        job=view,
        stream=stream,
        job_status=view["status"],
    )


async def events(request: web.Request) -> web.StreamResponse:
    job_id = request.query.get("job") or None
    if job_id is not None and len(job_id) > 128:
        raise BadRequest("job: no such job")
    return await live.stream(request, request.app[CONSOLE].hub, job_id)


# -- signing in --------------------------------------------------------------------


async def login_form(request: web.Request) -> web.Response:
    if not request.app[CONSOLE].access.token:
        raise web.HTTPSeeOther("/")
    return render(request, "login.html", title="Sign in", error="")


async def login(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    offered = (await form(request)).get("token")
    if not isinstance(offered, str) or not c.access.token_ok(offered):
        log.info("admin_action", extra={"event": "admin_action", "action": "sign_in", "count": 0})
        return render(request, "login.html", status=401, title="Sign in", error="Wrong token.")
    response = web.HTTPSeeOther("/")
    access.set_session(response, c.access.new_session(c.runtime.now()), request.secure)
    log.info("admin_action", extra={"event": "admin_action", "action": "sign_in", "count": 1})
    raise response


async def logout(request: web.Request) -> web.Response:
    response = web.HTTPSeeOther("/login")
    response.del_cookie(access.COOKIE, path="/")
    raise response
