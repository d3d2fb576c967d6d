"""One HTTP/1.1 client connection to an upstream: an asyncio protocol parsing answers with llhttp.

Header text is latin-1 both ways (one code point a byte). Every failure is a `Broken` naming its
kind and whether the request may have reached the upstream; `pool.py` owns connecting and reuse.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence

import httptools

from gateway.headers import encode
from gateway.jobs import Failure, FailureKind

READ_SIZE = 256 * 1024  # the largest piece handed on at once
HIGH_WATER = 1024 * 1024  # answer bytes buffered before reading from the upstream pauses
HEAD_LIMIT = 64 * 1024  # bytes of an answer's head (interim 1xx heads included)
MAX_FIELDS = 128  # header fields in one head
_POST_METHODS = frozenset({"POST", "PUT", "PATCH"})
_UNSAFE = ("\r", "\n", "\0")


class Broken(Exception):
    """What went wrong with one exchange: a failure kind of `jobs.Failure`, and `sent`."""

    def __init__(self, kind: FailureKind, detail: str, sent: bool) -> None:
        super().__init__(f"{kind}: {detail}")
        self.failure = Failure(kind, detail, sent)


def _bad(detail: str) -> Broken:
    return Broken("bad_answer", f"the upstream's answer was not valid HTTP: {detail}", True)


def request_head(
    method: str, target: str, host: str, headers: Sequence[tuple[str, str]], has_body: bool
) -> tuple[bytes, bool]:
    """The request's head as bytes, and whether its body goes chunked."""
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
    framed = False
    for name, value in headers:
        lines.append(f"{name}: {value}\r\n")
        if not framed and len(name) == 14 and name.lower() == "content-length":
            framed = True
    chunked = has_body and not framed
    if chunked:
        lines.append("Transfer-Encoding: chunked\r\n")
    elif not has_body and not framed and method in _POST_METHODS:
        lines.append("Content-Length: 0\r\n")
    lines.append("\r\n")
    text = "".join(lines)
    # Each line ends in the one CR LF put there above; any other CR, LF or NUL came in a value.
    breaks = len(lines) + 1
    if text.count("\n") != breaks or text.count("\r") != breaks or "\0" in text:
        raise Broken("internal", "a request header holds CR, LF or NUL", sent=False)
    return encode(text), chunked


class Connection(asyncio.Protocol):
    """A transport and the state of the exchange it carries; reused when that one ended clean."""

    transport: asyncio.Transport

    def __init__(self, on_lost: Callable[[Connection], None] | None = None) -> None:
        self.lost = False
        self.reused = False
        self.idle_since = 0.0
        self._on_lost = on_lost
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.begin("GET")

    # -- one exchange ----------------------------------------------------------------

    def begin(self, method: str) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._head_only = method == "HEAD"
        self.sent = False
        self.sent_whole = False  # the request's last byte was written
        self.error: Broken | None = None
        self.status = 0
        self._reason = b""
        self.headers: list[tuple[str, str]] = []
        self.head_done = False  # the final (not 1xx) head has been read
        self.done = False  # the whole answer has been read
        self.keep_alive = False
        self.extra = False  # bytes came that belong to no answer asked for
        self._fed = 0  # bytes of header fields read
        self._unparsed = 0  # bytes fed while no head was complete
        self.pieces: deque[bytes] = deque()
        self._buffered = 0
        self._reading = True
        if self.lost:  # closed since it was put back: fail at once, nothing sent
            self.error = Broken("reset", "the upstream closed the idle connection", False)

    @property
    def reason(self) -> str:
        return self._reason.decode("latin-1")

    def reusable(self) -> bool:
        return (
            self.done and self.keep_alive and self.sent_whole and not self.extra and not self.lost
        )

    def fail(self, error: Broken) -> None:
        """Record the exchange's failure (the first one counts), wake its reader, drop the line;
        once the answer is whole there is nothing left to fail (release decides on reuse)."""
        if self.done:
            return
        if self.error is None:
            self.error = error
        self._wake()
        if not self.lost:
            self.transport.abort()

    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.transport.write(data)
        self.sent = True

    async def drain(self) -> None:
        """Until the upstream takes more, or its answer has come (sending stops there)."""
        while self._paused and not self.head_done and self.error is None and not self.lost:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        if self.error is not None:
            raise self.error

    async def wait(self) -> None:
        """Until something more came: answer bytes, its end, or a failure."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def take(self) -> bytes:
        """The next piece of the body, at most READ_SIZE bytes, joining small ones."""
        pieces = self.pieces
        piece = pieces.popleft()
        if len(piece) > READ_SIZE:
            pieces.appendleft(piece[READ_SIZE:])
            piece = piece[:READ_SIZE]
        elif pieces and len(piece) + len(pieces[0]) <= READ_SIZE:
            joined = [piece]
            size = len(piece)
            while pieces and size + len(pieces[0]) <= READ_SIZE:
                size += len(pieces[0])
                joined.append(pieces.popleft())
            piece = b"".join(joined)
        self._buffered -= len(piece)
        if not self._reading and self._buffered < HIGH_WATER // 2 and not self.lost:
            self._reading = True
            self.transport.resume_reading()
        return piece

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.done or not self.sent:  # nothing was asked: an idle line must stay silent
            self.extra = True
            self.transport.abort()
            return
        try:
            self._parser.feed_data(data)
        except Broken as e:
            self.fail(e)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as e:
            if isinstance(e.__context__, Broken):
                self.fail(e.__context__)
            elif not self.done:
                self.fail(_bad(str(e)))
            else:
                self.extra = True
        if not self.head_done:
            self._unparsed += len(data)  # a head still open: a line may be growing unseen
            if self._unparsed > HEAD_LIMIT:
                self.fail(_bad(f"the answer's head is over {HEAD_LIMIT} bytes"))
        self._wake()

    def eof_received(self) -> bool | None:
        self._ended()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._ended()
        if self._on_lost is not None:
            self._on_lost(self)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    def _ended(self) -> None:
        """The upstream closed its side: an answer read to its close ends here, others fail."""
        if self.head_done and not self.done and self._to_close():
            self.done = True
            self.keep_alive = False
        elif not self.done and self.error is None:
            self.error = self._cut()
        self._wake()

    def _to_close(self) -> bool:
        """An answer framed by neither Content-Length nor chunked runs to the connection's end."""
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == "content-length" or (
                lowered == "transfer-encoding" and "chunked" in value.lower()
            ):
                return False
        return True

    def _cut(self) -> Broken:
        if self.head_done:
            return _bad("the upstream closed the connection mid-answer")
        if self.reused and not self.status:
            detail = "the upstream closed a reused keep-alive connection before answering"
        else:
            detail = "the upstream closed the connection"
        return Broken("reset", detail, self.sent)

    # -- llhttp callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.head_done:
            self.extra = True
            raise _bad("more than one answer")
        self._reason = b""
        self.headers = []

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= MAX_FIELDS:
            raise _bad(f"the answer has over {MAX_FIELDS} header fields")
        self._fed += len(name) + len(value)
        if self._fed > HEAD_LIMIT:
            raise _bad(f"the answer's head is over {HEAD_LIMIT} bytes")
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status == 101 or not 100 <= status <= 599:  # RFC 9110 §15: three digits, 1xx-5xx
            raise _bad(f"an answer with status {status}")
        self.status = status
        if status < 200:  # 100 Continue, 103 Early Hints: the answer is still to come
            return
        self.head_done = True
        self.keep_alive = self._parser.should_keep_alive()
        if self._head_only:
            self.done = True

    def on_body(self, body: bytes) -> None:
        if self.done:  # a body after a HEAD's answer
            self.extra = True
            return
        self.pieces.append(body)
        self._buffered += len(body)
        if self._reading and self._buffered > HIGH_WATER:
            self._reading = False
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.head_done:
            self.done = True
