"""Random and mutated HTTP/1.1 requests, as bytes on raw sockets, for the fuzz test and the
longer run in benchmarks/fuzz.py. Hypothesis makes them and shrinks a failing one."""

from __future__ import annotations

import re
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# What the fake upstream marks its answers with: a 500 without it is the gateway's own.
UPSTREAM_MARK = b"X-Fuzz-Upstream"
UPSTREAM_ANSWER = b"HTTP/1.1 200 OK\r\n" + UPSTREAM_MARK + b": 1\r\nContent-Length: 2\r\n\r\nok"

METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT"]
TARGETS = [
    b"/async/x",
    b"/async/x?q=1&q=2",
    b"/plain",
    b"/_gateway/jobs/0VcrSbmQVPs1RKDb1PrMx35M3sb_bQ",
    b"/_gateway/jobs/x/status",
    b"/_gateway/readyz",
    b"/_gateway/metrics",
    b"/_gateway/nothing",
    b"*",
    b"http://127.0.0.1:1/async/x",
    b"//",
    b"/%00%ff",
    b"/\xff",
]
NAMES = [
    b"Host",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Prefer",
    b"Idempotency-Key",
    b"X-Callback-Url",
    b"Expect",
    b"Authorization",
    b"Connection",
    b"Upgrade",
    b"X-Forwarded-For",
    b"X-Forwarded-Host",
    b"X-Forwarded-Proto",
    b"Content-Encoding",
    b"Cookie",
    b"Via",
]
VALUES = [
    b"127.0.0.1",
    b"wait=1",
    b"respond-async",
    b"key-1",
    b"Bearer t",
    b"http://127.0.0.1:1/hook",
    b"",
    b"0",
    b"\xc2\xb2",
    b"\xd9\xa3",
    b"+1",
    b"1_0",
    b"-1",
    b"wait=\xc2\xb2",
    b"wait=99999999999999999999999",
    b"respond-async, wait=5",
    b"chunked",
    b"gzip, chunked",
    b"chunked, gzip",
    b"100-continue",
    b"close",
    b"keep-alive, Authorization",
    b"websocket",
    b"http://h:99999/",
    b"http://h:abc/",
    b"http://[::1",
    b"evil.example:80 junk",
    b"user@host",
    b"host#frag",
    b"caf\xe9",
    b"\x00",
    b"a\rb",
    b"\x80\xff",
    b"9" * 5000,
    b"a" * 9000,
]


def _one(draw: st.DrawFn, choices: list[bytes], wild: bool, size: int) -> bytes:
    """Mostly one of `choices`; in a wild request, as often any bytes at all."""
    if wild and draw(st.booleans()):
        return draw(st.binary(min_size=1, max_size=size))
    return draw(st.sampled_from(choices))


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """A request built from the parts the gateway reads, a body, then a few flipped bytes."""
    wild = draw(st.integers(0, 4)) == 0
    method = _one(draw, METHODS, wild, 8)
    target = _one(draw, TARGETS, wild, 30)
    version = draw(st.sampled_from([b"HTTP/1.1"] * 6 + [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x"]))
    count = draw(st.integers(0, 6))
    headers = [(_one(draw, NAMES, wild, 12), _one(draw, VALUES, wild, 40)) for _ in range(count)]
    if draw(st.integers(0, 4)):
        headers.insert(0, (b"Host", b"127.0.0.1"))
    body = draw(st.binary(max_size=300))
    if draw(st.booleans()):
        headers.append((b"Content-Length", str(len(body)).encode()))
    head = b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    data = bytearray(method + b" " + target + b" " + version + b"\r\n" + head + b"\r\n" + body)
    if wild or not draw(st.integers(0, 3)):
        flips = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3)
        for at, byte in draw(flips):
            data[at % len(data)] = byte  # a flipped byte anywhere, the CRLFs included
    return bytes(data)


STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})")


def send(port: int, data: bytes, patience: float = 0.3) -> tuple[int | None, bytes]:
    """Send `data` and read the first answer; a request that gets none within `patience` (it
    is incomplete, say) has its sending side closed, and what comes before the close is read.
    Returns the first answer's status (None if none came) and the bytes received."""
    with socket.create_connection(("127.0.0.1", port), timeout=patience) as sock:
        received = b""
        try:
            sock.sendall(data)
            while not _complete(received) and (chunk := sock.recv(65536)):
                received += chunk
        except TimeoutError:
            received += _rest(sock)
        except OSError:
            pass  # reset: what it said before, if anything, is kept
    match = STATUS.match(received)
    return (int(match.group(1)) if match else None), received


def _rest(sock: socket.socket) -> bytes:
    received = b""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(10.0)
        while chunk := sock.recv(65536):
            received += chunk
    except OSError:
        pass
    return received


def _complete(received: bytes) -> bool:
    head, found, body = received.partition(b"\r\n\r\n")
    if not found:
        return False
    length = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
    return length is not None and len(body) >= int(length.group(1))


@dataclass
class Report:
    sent: int = 0
    statuses: Counter[int | None] = field(default_factory=Counter)
    failures: list[tuple[bytes, bytes]] = field(default_factory=list)


def run(port: int, examples: int, seconds: float, derandomize: bool = True) -> Report:
    """Fuzz the gateway on `port` with up to `examples` requests for at most `seconds`; raise
    AssertionError (hypothesis shrinks it first) on a 500 of the gateway's own. Derandomized,
    the same requests each run (as CI wants); else new ones each time."""
    report = Report()
    deadline = time.monotonic() + seconds

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=derandomize,
        suppress_health_check=list(HealthCheck),
    )
    @given(requests())
    def one(data: bytes) -> None:
        if time.monotonic() > deadline:
            return
        status, received = send(port, data)
        report.sent += 1
        report.statuses[status] += 1
        if status == 500 and UPSTREAM_MARK not in received.split(b"\r\n\r\n", 1)[0]:
            report.failures.append((data, received))
            raise AssertionError(f"a 500 of the gateway's own for {data!r}: {received[:300]!r}")

    one()
    return report
