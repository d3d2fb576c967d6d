"""The gateway's own answers: problem+json (RFC 9457), job views and the byte-exact replay.

Builds responses only; it never reads storage except through the body iterator it is handed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from aiohttp import web
from aiohttp.http_writer import HttpVersion, StreamWriter

from gateway import encoding
from gateway import headers as h
from gateway.errors import StorageError
from gateway.jobs import Job, rfc3339, summary

log = logging.getLogger("gateway")
PROBLEM = "application/problem+json"
JSON = "application/json; charset=utf-8"
NO_STORE = "no-store"


def problem(
    status: int, title: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return web.Response(
        status=status,
        body=encoding.dumps(body),
        content_type=PROBLEM,
        headers=headers,
    )


def too_large(limit: int) -> web.Response:
    return problem(
        413,
        "Content Too Large",
        f"the request body is larger than {limit} bytes",
        headers={"Connection": "close"},
    )


def bad_framing() -> web.Response:
    return problem(
        400, "Bad Request", "the request body's framing is bad", headers={"Connection": "close"}
    )


def unavailable(
    title: str, detail: str, retry_after: float, extra: dict[str, str] | None = None
) -> web.Response:
    """503 problem+json with Retry-After: the gateway or its storage cannot take this now."""
    headers = {"Retry-After": seconds(retry_after), **(extra or {})}
    return problem(503, title, detail, headers=headers)


def seconds(value: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(value)))


def job_headers(job: Job, retry_after: float | None = None) -> dict[str, str]:
    out = {"Cache-Control": NO_STORE, h.JOB_STATUS: str(job.status)}
    if retry_after is not None:
        out["Retry-After"] = seconds(retry_after)
    return out


def accepted(job: Job, status_url: str, retry_after: float, extra: dict[str, str]) -> web.Response:
    view = {
        "id": job.id,
        "status": str(job.status),
        "status_url": status_url,
        "created_at": rfc3339(job.created_at),
    }
    return _json(202, view, {**job_headers(job, retry_after), "Location": status_url, **extra})


def pending(job: Job, retry_after: float, extra: dict[str, str]) -> web.Response:
    view = {
        "id": job.id,
        "status": str(job.status),
        "created_at": rfc3339(job.created_at),
        "started_at": rfc3339(job.started_at),
        "attempts": job.attempts,
    }
    return _json(202, view, {**job_headers(job, retry_after), **extra})


def view(job: Job) -> web.Response:
    """The job described (its /status), whatever its state."""
    return _json(200, summary(job), job_headers(job))


def _json(status: int, view: Mapping[str, object], headers: dict[str, str]) -> web.Response:
    headers["Content-Type"] = JSON
    return web.Response(status=status, body=encoding.dumps(view), headers=headers)


def failed(job: Job, extra: dict[str, str]) -> web.Response:
    assert job.failure is not None
    failure = job.failure
    title = "Upstream timed out" if failure.kind == "timeout" else "Upstream failed"
    if failure.kind == "interrupted":
        title = "Outcome unknown"
    return problem(
        failure.http_status,
        title,
        failure.detail,
        headers={**job_headers(job), **extra},
        job_id=job.id,
        cause=failure.kind,
        attempts=job.attempts,
    )


class Verbatim(web.StreamResponse):
    """An answer whose head is written as the bytes it is given (header text of one code point
    a byte, as `headers.decode` makes it), with only the connection's framing added.

    aiohttp's writer encodes header text as UTF-8, refuses what it cannot, and adds
    Content-Type, Date and Server; here its framing decisions (Content-Length,
    Transfer-Encoding, Connection) are kept and its head is not written. The head leaves with
    the first piece of the body, in one write, unless `immediately`.
    """

    _send_headers_immediately = False

    def __init__(
        self, status: int, reason: str, head: Sequence[h.Header], *, immediately: bool = False
    ) -> None:
        super().__init__(status=status)
        self._head = [(n, v) for n, v in head if h.writable(n, v)]
        self._reason_bytes = h.encode(reason) if h.writable("x", reason) else b""
        self._send_headers_immediately = immediately
        self.headers.clear()
        declared = h.content_length(self._head)
        if declared is not None:  # framed as declared unless the caller says otherwise
            self.content_length = declared

    async def _write_headers(self) -> None:
        # aiohttp 3.14's writer keeps the head in _headers_buf until it goes out; the head
        # is put there as bytes instead of being serialised from self.headers.
        writer = self._payload_writer
        assert self._req is not None and isinstance(writer, StreamWriter)
        writer._headers_buf = self._head_bytes(self._req.version)
        writer._headers_written = False
        if self._send_headers_immediately:
            writer.send_headers()

    def _head_bytes(self, version: HttpVersion) -> bytes:
        framing = {n.lower(): (n, v) for n, v in self.headers.items() if n.lower() in _FRAMING}
        line = b"HTTP/%d.%d %d %s" % (version.major, version.minor, self.status, self._reason_bytes)
        lines = [line]
        for name, value in self._head:
            if name.lower() in _FRAMING:  # the framing aiohttp settled on, in the sender's place
                if name.lower() in framing:
                    lines.append(_line(name, framing.pop(name.lower())[1]))
                continue
            lines.append(_line(name, value))
        lines.extend(_line(n, v) for n, v in framing.values())
        return b"\r\n".join(lines) + b"\r\n\r\n"


_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})


def _line(name: str, value: str) -> bytes:
    return h.encode(name) + b": " + h.encode(value)


def storage_down(retry_after: float) -> web.Response:
    return unavailable(
        "Storage Unavailable",
        "storage cannot be read right now",
        retry_after,
        {"Cache-Control": NO_STORE},
    )


def not_found(detail: str = "no such job, or it has expired") -> web.Response:
    return problem(404, "Not Found", detail, headers={"Cache-Control": NO_STORE})


async def replay(
    request: web.Request, job: Job, body: AsyncIterator[bytes], extra: dict[str, str]
) -> web.StreamResponse:
    """The stored upstream answer: status, headers in order with repeats, body byte for byte."""
    answer = job.answer
    assert answer is not None
    head = [*h.for_client(answer.headers), (h.JOB_ID, job.id), (h.JOB_STATUS, str(job.status))]
    cache = ",".join(v for n, v in head if n.lower() == "cache-control")
    if NO_STORE not in cache:
        head.append(("Cache-Control", NO_STORE))
    head.extend(extra.items())
    response = Verbatim(answer.status, answer.reason, head)
    # An answer to HEAD keeps the upstream's Content-Length when it is replayed to a HEAD: it
    # describes a body never sent. Replayed to a GET, it is framed as what is stored (nothing),
    # or the next answer on the connection would be read as its body.
    has_body = _has_body(answer.status)
    heads = request.method == "HEAD"
    if has_body and not (heads and job.method == "HEAD"):
        response.content_length = answer.size
    sends = has_body and not heads and job.method != "HEAD"
    # The first piece is read before the head leaves: if storage fails then, the caller can
    # still answer 503; once bytes are out, only a cut connection tells the client.
    first = await anext(body, b"") if sends else b""
    await response.prepare(request)
    if first:
        await response.write(first)
    if sends:
        try:
            sent = len(first)
            async for chunk in body:
                await response.write(chunk)
                sent += len(chunk)
            if sent != answer.size:  # pieces removed while read (the job forgotten, say)
                raise StorageError(f"job {job.id}: {sent} of {answer.size} bytes were found")
        except StorageError as e:
            return cut(request, response, "replay_cut", e)
    await response.write_eof()
    return response


def cut(
    request: web.Request, response: web.StreamResponse, event: str, error: Exception
) -> web.StreamResponse:
    """A body that fails once bytes are out: only a cut connection tells the client it is
    short. Say why in one line, abort the connection, and hand aiohttp the response, whose end
    then finds the connection closed (aiohttp's own path for this logs a traceback and a 500).
    """
    log.warning(
        "body cut short",
        extra={"event": event, "method": request.method, "path": request.path, "error": str(error)},
    )
    if request.transport is not None:
        request.transport.abort()
    return response


def _has_body(status: int) -> bool:
    return status >= 200 and status not in (204, 304)
