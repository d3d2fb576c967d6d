"""What aiohttp's parser errors become, as a table: no sockets."""

from __future__ import annotations

import pytest
from aiohttp import http_exceptions as bad
from aiohttp import web

from gateway.refusals import refusal_of


@pytest.mark.parametrize(
    ("error", "status", "detail"),
    [
        (bad.LineTooLong(b"x" * 100, 8190), 431, "head is larger"),
        (bad.BadHttpMessage("Too many headers received"), 431, "head is larger"),
        (bad.BadHttpMethod(b"\x16\x03".decode("latin-1")), 400, "method"),
        (bad.BadStatusLine("GET / HTTP/9"), 400, "request line"),
        (bad.InvalidURLError("/\xff"), 400, "target"),
        (bad.InvalidHeader(b"X\x01"), 400, "header is malformed"),
        (bad.BadHttpMessage("Invalid header value char:\n\n  b'X: \\x01'"), 400, "header"),
        (
            bad.BadHttpMessage("Transfer-Encoding can't be present with Content-Length:\n\n x"),
            400,
            "Content-Length with Transfer-Encoding",
        ),
        (bad.BadHttpMessage("Duplicate 'Content-Length' header found."), 400, "came twice"),
        (bad.BadHttpMessage("Missing 'Host' header in request."), 400, "Host"),
        (bad.BadHttpMessage("Invalid character in chunk size:\n\n  b'zz'"), 400, "framing"),
        (bad.TransferEncodingError("Not enough data"), 400, "framing"),
        (web.RequestPayloadError("bad"), 400, "framing"),
        (bad.BadHttpMessage("something new"), 400, "not well-formed"),
        (RuntimeError("a bug"), 500, "failed"),
    ],
)
def test_parser_errors_become_fixed_refusals(
    error: BaseException, status: int, detail: str
) -> None:
    refusal = refusal_of(500 if isinstance(error, RuntimeError) else 400, error)
    assert (refusal.status, detail in refusal.detail) == (status, True)


def test_a_handler_timeout_is_a_504() -> None:
    assert refusal_of(504, None).status == 504


def test_no_refusal_quotes_the_parser_message() -> None:
    refusal = refusal_of(400, bad.BadHttpMessage("Invalid header value char:\n\n  b'SECRET'"))
    assert "SECRET" not in refusal.detail and "SECRET" not in refusal.title
