"""The console's aiohttp application and its own listener, never the public port, on the
gateway's HTTP/1.1 protocol shell.

`Listener.close` says `event: bye` to every live stream before the listener goes, so a
watching browser never holds up a drain.
"""

from __future__ import annotations

import logging
from importlib import resources

import jinja2
from aiohttp import web

from gateway import protocol
from gateway.console import access, actions, live, pages, present
from gateway.console.pages import CONSOLE, Console
from gateway.errors import GatewayError
from gateway.handlers import Runtime

log = logging.getLogger("gateway.console")
STATIC = {
    "console.js": "text/javascript",
    "console.css": "text/css",
    "favicon.svg": "image/svg+xml",
}


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gateway.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["count"] = present.count
    return env


def static_files() -> dict[str, bytes]:
    folder = resources.files("gateway.console") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC}


def create_console(runtime: Runtime, tick: float = live.TICK) -> web.Application:
    app = web.Application(middlewares=[pages.guard], client_max_size=64 * 1024)
    console = Console(
        runtime=runtime,
        hub=live.Hub(lambda job_ids: pages.snapshot(console, job_ids), tick),
        templates=templates(),
    )
    app[CONSOLE] = console
    files = static_files()

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in files:
            raise web.HTTPNotFound()
        return web.Response(body=files[name], content_type=STATIC[name])

    r = app.router
    r.add_get("/", pages.overview)
    r.add_get("/jobs", pages.jobs)
    r.add_get("/jobs/retry", actions.bulk_confirm)
    r.add_post("/jobs/retry", actions.bulk_retry)
    r.add_get("/jobs/{id}", pages.job)
    r.add_post("/jobs/{id}/{action:retry|cancel|forget}", actions.act)
    r.add_get("/events", pages.events)
    r.add_get("/login", pages.login_form)
    r.add_post("/login", pages.login)
    r.add_post("/logout", pages.logout)
    r.add_get("/static/{name}", static)
    app.on_response_prepare.append(access.protect)

    async def bye(app: web.Application) -> None:
        await console.hub.bye()

    app.on_shutdown.append(bye)
    return app


class _Connection(protocol.Connection):
    """The gateway's connection: malformed HTTP refused without the client's bytes, in one log
    line without a traceback (so never a cookie or token), here with the console's headers too,
    since such a refusal is made before routing, where `protect` does not run."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        response = super().handle_error(request, status, exc, message)
        response.headers.update(access.SECURITY_HEADERS)
        return response


class _Server(protocol.Server):
    connection_class = _Connection


class Runner(protocol.Runner):
    """The gateway's protocol shell for the console's app, making `_Connection`s."""

    server_class = _Server


def runner(app: web.Application, idle_timeout: float) -> Runner:
    return Runner(app, idle_timeout=idle_timeout, handle_signals=False, access_log=None)


class Listener:
    """The console on `admin.host`:`admin.port`, opened after the gateway's own app."""

    def __init__(self, runtime: Runtime) -> None:
        self.app = create_console(runtime)
        self._runner = runner(self.app, runtime.config.server.idle_timeout)
        self._open = False

    async def start(self, shared_port: bool = False) -> None:
        admin = self.app[CONSOLE].runtime.config.admin
        await self._runner.setup()
        self._open = True
        site = web.TCPSite(self._runner, admin.host, admin.port, reuse_port=shared_port)
        try:
            await site.start()
        except OSError as e:
            await self.close()
            raise GatewayError(
                f"cannot listen on {admin.host}:{admin.port}: {e.strerror or e}"
            ) from e
        log.info(
            "console_listening",
            extra={"event": "console_listening", "host": admin.host, "port": admin.port},
        )

    async def close(self) -> None:
        """Every live stream told `bye` (on_shutdown), then the listener closed; once."""
        if self._open:
            self._open = False
            await self._runner.cleanup()
