"""create_app(config, store=None): the aiohttp application and its one lifecycle.

The store, the client session and the dispatcher open in one cleanup context and close in
reverse order; nothing else starts background work.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from gateway import handlers, operations, protocol, status
from gateway.accesslog import AccessLines, logger_class
from gateway.callbacks import Deliverer
from gateway.config import Config
from gateway.console.server import Listener
from gateway.dispatcher import Dispatcher
from gateway.errors import GatewayError, StorageError
from gateway.handlers import RUNTIME, Runtime
from gateway.metrics import Metrics
from gateway.store import Store, open_store
from gateway.upstream import new_pool, new_session
from gateway.workers import release_signals, until_orphaned

log = logging.getLogger("gateway")
KEY_RETRY = 1.0  # how soon a store that could not give its key at start is asked again
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(config: Config, store: Store | None = None) -> web.Application:
    guard = protocol.guard(config.server.max_body)
    app = web.Application(client_max_size=config.server.max_body, middlewares=[guard])
    prefix = config.jobs.prefix
    own: dict[str, dict[str, Handler]] = {
        "/_gateway/healthz": {"GET": operations.healthz},
        "/_gateway/readyz": {"GET": operations.readyz},
        "/_gateway/metrics": {"GET": operations.metrics},
        "/_gateway/openapi.json": {"GET": operations.openapi_document},
        prefix + "/{id}": {"GET": status.status, "DELETE": status.delete},
        prefix + "/{id}/status": {"GET": status.status_view},
    }
    for path, methods in own.items():
        resource = app.router.add_resource(path)
        for method, handler in methods.items():
            resource.add_route(method, handler)
            if method == "GET":
                resource.add_route("HEAD", handler)
        resource.add_route("*", operations.not_allowed)
    # The gateway's own namespace is never forwarded, whatever the routes say.
    for reserved in {"/_gateway", prefix}:
        app.router.add_route("*", reserved + "/{tail:.*}", operations.not_ours)
    app.router.add_route("*", "/{tail:.*}", handlers.route)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        metrics = Metrics()
        if store is None:
            opened = await open_store(config.storage, metrics.commit)
        else:
            opened = store
            await opened.open()
        session, pool = new_session(), new_pool()
        dispatcher = Dispatcher(config, opened, pool, metrics)
        deliverer = Deliverer(config, opened, session, dispatcher.endings, metrics)
        opened.on_end(dispatcher.endings.ended, dispatcher.endings.watched)
        try:
            key = await opened.key()
        except StorageError:  # a database not up yet: served as in an outage until it is
            key = b""
        runtime = Runtime(config, opened, pool, dispatcher, key, metrics)
        app[RUNTIME] = runtime
        keyed = asyncio.ensure_future(_bind_key(runtime))
        dispatcher.start()
        deliverer.start()
        try:
            yield
        finally:
            keyed.cancel()
            await asyncio.gather(keyed, return_exceptions=True)
            await deliverer.stop()
            await dispatcher.stop()
            await session.close()
            await pool.close()
            await opened.close()

    app.cleanup_ctx.append(lifecycle)
    return app


async def _bind_key(runtime: Runtime) -> None:
    """The binding key, from storage; a database still down at start is waited for, the
    gateway serving meanwhile as in any outage (the store takes no job until the key is here)."""
    while not runtime.key:
        try:
            runtime.key = await runtime.store.key()
        except StorageError:
            await asyncio.sleep(KEY_RETRY)


async def serve(config: Config, host: str, port: int, shared_port: bool = False) -> None:
    """Serve until SIGTERM or SIGINT, then drain as the contract says and return."""
    app = create_app(config)
    lines = AccessLines(sys.stderr)
    runner = protocol.Runner(
        app,
        idle_timeout=config.server.idle_timeout,
        handle_signals=False,
        access_log_class=logger_class(lines),
        shutdown_timeout=5.0,
    )
    await runner.setup()
    console = Listener(app[RUNTIME]) if config.admin.port is not None else None
    try:
        site = web.TCPSite(runner, host, port, reuse_port=shared_port)
        try:
            await site.start()
        except OSError as e:
            raise GatewayError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
        if console is not None:
            await console.start(shared_port)
        log.info(
            "listening",
            extra={
                "event": "listening",
                "host": host,
                "port": port,
                "storage": config.storage.where,
            },
        )
        settle_gc()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        release_signals()
        orphaned = asyncio.ensure_future(until_orphaned())
        orphaned.add_done_callback(lambda _: stop.set())
        await stop.wait()
        orphaned.cancel()
        log.info("draining", extra={"event": "draining", "grace_s": config.server.shutdown_grace})
        runtime = app[RUNTIME]
        runtime.draining = True
        if console is not None:
            await console.close()  # live streams told `bye` first: no browser holds this up
        await runtime.dispatcher.drain(config.server.shutdown_grace)
    finally:
        if console is not None:
            await console.close()
        await runner.cleanup()
        lines.flush()
    log.info("stopped", extra={"event": "stopped"})


GC_YOUNG = 10_000  # objects allocated between collections of the youngest generation (700)


def settle_gc() -> None:
    """What start-up made lives as long as the process: the collector stops scanning it, and
    collects the young generation less often (most request objects die by reference count)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, older, oldest)
