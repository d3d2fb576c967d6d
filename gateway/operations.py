"""The gateway's own endpoints for operators: health, readiness, metrics, the OpenAPI document,
and the answers for its namespace's wrong methods and unknown paths.

Nothing here touches jobs beyond what the store reports.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE

from gateway import openapi, responses
from gateway.errors import StorageError
from gateway.handlers import RUNTIME


async def metrics(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    try:
        queued = await rt.store.queued_by_upstream()
    except StorageError:
        queued = {}
    queued = {name: queued.get(name, 0) for name in rt.config.upstreams}
    return web.Response(body=rt.metrics.render(queued), headers={"Content-Type": CONTENT_TYPE})


async def not_allowed(request: web.Request) -> web.Response:
    """405 on the gateway's own paths for a method they do not take (RFC 9110 §15.5.6). Like
    every answer of the gateway's own, it quotes nothing of the request: Allow says the rest."""
    resource = request.match_info.route.resource
    allow = sorted({r.method for r in resource or [] if r.method != "*"})
    return responses.problem(
        405,
        "Method Not Allowed",
        f"this path takes {', '.join(allow)}",
        headers={"Allow": ", ".join(allow)},
    )


async def not_ours(request: web.Request) -> web.Response:
    return responses.problem(404, "Not Found", "no gateway endpoint at this path")


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(openapi.document(request.app[RUNTIME].config))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    if rt.draining:
        return web.json_response({"status": "draining"}, status=503)
    try:
        await rt.store.ping()
    except StorageError as e:
        return web.json_response({"status": "storage unavailable", "error": str(e)}, status=503)
    return web.json_response({"status": "ready"})
