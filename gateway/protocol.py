"""The server's protocol shell: aiohttp's HTTP/1.1 connection with the gateway's own refusals.

Malformed HTTP gets problem+json without the client's bytes and one warning line; a request in
absolute form is served as its origin form; a connection that stalls mid-request is closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http import HttpVersion11
from aiohttp.typedefs import Middleware
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway import headers as h
from gateway import responses
from gateway.refusals import BAD_FRAMING, refusal_of, where

log = logging.getLogger("gateway.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Connection(web_protocol.RequestHandler):
    """One client connection. aiohttp's keepalive timer, set to `idle_timeout`, closes one that
    sends nothing or stalls in its head (it runs from the connection's start, or the last
    answer's end, and bytes do not push it back); the deadline here closes one that stalls in
    its body, or that takes nothing of an answer for as long (as nginx's send_timeout)."""

    def __init__(self, manager: web.Server, *, idle_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, keepalive_timeout=idle_timeout, **kwargs)
        self._idle = idle_timeout
        self._last_read = 0.0
        self._blocked_since: float | None = None  # when writing paused: the client reads nothing
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._last_read = self._loop.time()
        self._deadline = self._loop.call_at(self._last_read + self._idle, self._check)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._blocked_since = self._loop.time()

    def resume_writing(self) -> None:
        self._blocked_since = None
        super().resume_writing()

    def data_received(self, data: bytes) -> None:
        self._last_read = self._loop.time()
        filling = self._body_being_read()
        count = len(self._messages)
        super().data_received(data)
        # aiohttp queues a parse error as the next message but leaves the body it cut short
        # waiting for bytes that will never parse; its reader is told instead.
        if (
            filling is not None
            and not filling.is_eof()
            and len(self._messages) > count
            and isinstance(self._messages[-1][0], web_protocol._ErrInfo)
        ):
            filling.set_exception(web.RequestPayloadError(BAD_FRAMING))
            filling.feed_eof()  # nothing more will come: aiohttp then reads no further

    def _body_being_read(self) -> Any:
        if self._messages:
            return self._messages[-1][1]
        request = self._current_request
        return request.content if request is not None else None

    def _check(self) -> None:
        self._deadline = None
        if self.transport is None:
            return
        now = self._loop.time()
        stage = self._stalled(now)
        if stage is not None:
            log.warning(
                "stalled connection closed",
                extra={"event": "idle_closed", "stage": stage, "idle_s": self._idle},
            )
            # abort, not close: close would wait to flush an answer the client does not read
            self.transport.abort()
            self.force_close()
            return
        due = max(now, self._last_read) + self._idle
        if self._blocked_since is not None:
            due = min(due, max(now, self._blocked_since + self._idle))
        self._deadline = self._loop.call_at(due, self._check)

    def _stalled(self, now: float) -> str | None:
        """Where the connection is stalled, if it is: taking its answer, or in its body. aiohttp
        3.14's own state: the request being handled, and whether reading is paused because the
        handler has not taken what came (then the wait is ours, not the client's)."""
        if self._blocked_since is not None and now - self._blocked_since >= self._idle:
            return "answer"
        request = self._current_request
        if request is None or self._reading_paused or request.content.is_eof():
            return None
        return "body" if now - self._last_read >= self._idle else None

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer for a request it could not parse or a handler that raised: here
        problem+json without the request's bytes, and one log line without a traceback."""
        if isinstance(exc, ConnectionError) or self.transport is None:
            # The client went away (or was closed as stalled) mid-request: nobody to answer.
            raise ConnectionError("the client connection is gone") from exc
        refusal = refusal_of(status, exc)
        fields: dict[str, Any] = {
            "event": "bad_request" if refusal.status < 500 else "handler_failed",
            "status": refusal.status,
            "error": type(exc).__name__ if exc is not None else None,
        }
        if refusal.status >= 500 and exc is not None:
            fields["where"] = where(exc)
        log.log(
            logging.WARNING if refusal.status < 500 else logging.ERROR, refusal.title, extra=fields
        )
        if request.writer.output_size > 0:  # as aiohttp does: too late for another answer
            raise ConnectionError("an answer was already under way")
        response = responses.problem(refusal.status, refusal.title, refusal.detail)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's other error lines (a handler that returned no response, a head that could
        not be written): one line, the error's kind and place, no traceback."""
        error = kw.get("exc_info")
        fields: dict[str, Any] = {"event": "connection_failed"}
        if isinstance(error, BaseException):
            fields.update(error=type(error).__name__, where=where(error))
        log.error(str(args[0]) if args else "connection failed", extra=fields)


class Server(web.Server):
    """aiohttp's low-level server, making the gateway's connections."""

    def __init__(
        self,
        handler: Any,
        *,
        idle_timeout: float,
        request_factory: Any,
        handler_cancellation: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            handler,
            request_factory=as_origin_form(request_factory),
            handler_cancellation=handler_cancellation,
            **kwargs,
        )
        self._connection_kwargs = kwargs
        self._idle_timeout = idle_timeout
        self._made_on = asyncio.get_running_loop()

    connection_class: type[Connection] = Connection  # the console names its own

    def __call__(self) -> Connection:
        return self.connection_class(
            self, loop=self._made_on, idle_timeout=self._idle_timeout, **self._connection_kwargs
        )


class Runner(web.AppRunner):
    """web.AppRunner whose server is the gateway's (aiohttp has no public switch for the
    connection class, so the one private step, `_make_server`, is taken over here)."""

    server_class: type[Server] = Server

    def __init__(self, app: web.Application, *, idle_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._idle_timeout = idle_timeout
        self._server_kwargs = {
            k: v for k, v in kwargs.items() if k not in ("handle_signals", "shutdown_timeout")
        }

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # the app's startup; its own Server is unused
        return self.server_class(
            made.request_handler,
            idle_timeout=self._idle_timeout,
            request_factory=made.request_factory,
            **self._server_kwargs,
        )


def as_origin_form(factory: Any) -> Any:
    """A request factory that turns a request in absolute form (RFC 9112 §3.2.2) into its
    origin form, the target's authority taking the place of any Host header, before routing;
    and that hides Expect from aiohttp, which would answer it before any middleware runs (for
    an unknown expectation, text/plain quoting the header): `guard` answers it instead, from
    the raw headers."""

    def make(message: Any, *args: Any) -> Any:
        return factory(_without_expect(origin_form(message)), *args)

    return make


def _without_expect(message: Any) -> Any:
    if "Expect" not in message.headers:
        return message
    headers = CIMultiDict(message.headers)
    del headers["Expect"]
    return message._replace(headers=CIMultiDictProxy(headers))


def origin_form(message: Any) -> Any:
    url: URL | None = message.url
    if url is None:  # llhttp let an empty target through; aiohttp would fail on it
        return message._replace(path="", url=URL(""))
    if not url.absolute or message.method == "CONNECT":
        return message
    if url.scheme not in ("http", "https") or url.raw_user is not None or not url.raw_host:
        return message  # left as it is: the guard refuses a target that is not origin-form
    authority = url.raw_authority
    target = url.raw_path_qs or "/"
    headers = CIMultiDict(message.headers)
    headers["Host"] = authority
    raw = tuple((n, v) for n, v in message.raw_headers if n.lower() != b"host")
    return message._replace(
        path=target,
        url=URL(target, encoded=True),
        headers=CIMultiDictProxy(headers),
        raw_headers=((b"Host", authority.encode("ascii")), *raw),
    )


def refused(request: web.BaseRequest) -> web.Response | None:
    """The refusal of a request whose target or Host the gateway does not serve, or None."""
    target = request.raw_path
    if request.method == "CONNECT" or target == "*":
        return _refuse(
            501, "Not Implemented", "the gateway is neither a tunnel nor a forward proxy"
        )
    if not target.startswith("/") or not target.isascii() or not target.isprintable():
        return _refuse(400, "Bad Request", "the request target is malformed")
    hosts = request.headers.getall("Host", [])
    needs_host = request.version >= HttpVersion11
    if len(hosts) > 1 or (hosts and not h.valid_host(hosts[0])) or (needs_host and not hosts):
        return _refuse(400, "Bad Request", "the Host header is not one host[:port] (RFC 9112 §3.2)")
    return None


def _refuse(status: int, title: str, detail: str) -> web.Response:
    log.warning(title, extra={"event": "bad_request", "status": status})
    response = responses.problem(status, title, detail)
    response.force_close()
    return response


def guard(max_body: int) -> Middleware:
    """The middleware before every handler: refuse what `refused` names, answer Expect, and
    turn aiohttp's own HTTP errors (the router's 404 and 405) into problem+json."""

    @web.middleware
    async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = refused(request) or await _expected(request, max_body)
        if refusal is not None:
            return refusal
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            allow = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
            return responses.problem(e.status, e.reason, e.reason, headers=allow)

    return guarded


async def _expected(request: web.Request, max_body: int) -> web.Response | None:
    """Expect (RFC 9110 §10.1.1): `100 Continue` now, or the refusal in its place, a declared
    body over max_body included, so the client does not send a body only to be refused."""
    expects = [v for n, v in request.raw_headers if n.lower() == b"expect"]
    if not expects:
        return None
    if (request.content_length or 0) > max_body:
        return responses.too_large(max_body)
    if len(expects) != 1 or expects[0].strip().lower() != b"100-continue":
        return _refuse(417, "Expectation Failed", "only Expect: 100-continue is served")
    if request.version == HttpVersion11:  # an HTTP/1.0 client is sent no interim answer
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return None
