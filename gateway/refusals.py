"""What the gateway answers for HTTP it cannot parse, and for a handler that failed: pure.

aiohttp's parser errors become a status, a title and a fixed detail; the client's bytes, which
aiohttp's messages quote, never pass into an answer or a log line.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

from aiohttp import http_exceptions as bad
from aiohttp import web


@dataclass(frozen=True)
class Refusal:
    status: int
    title: str
    detail: str


_HEAD_TOO_LARGE = Refusal(
    431, "Request Header Fields Too Large", "the request head is larger than the gateway reads"
)
_MALFORMED = Refusal(400, "Bad Request", "the request is not well-formed HTTP/1.1")
BAD_FRAMING = "the request body's framing is bad"
_FRAMING = Refusal(400, "Bad Request", BAD_FRAMING)
# Most specific first: aiohttp's parser errors subclass one another.
_BY_TYPE: tuple[tuple[type[BaseException], Refusal], ...] = (
    (bad.LineTooLong, _HEAD_TOO_LARGE),
    (bad.BadHttpMethod, Refusal(400, "Bad Request", "the request method is malformed")),
    (bad.BadStatusLine, Refusal(400, "Bad Request", "the request line is malformed")),
    (bad.InvalidURLError, Refusal(400, "Bad Request", "the request target is malformed")),
    (bad.InvalidHeader, Refusal(400, "Bad Request", "a request header is malformed")),
    (bad.PayloadEncodingError, _FRAMING),
    (web.RequestPayloadError, _FRAMING),
)
_SMUGGLING = Refusal(
    400, "Bad Request", "Content-Length with Transfer-Encoding is refused (RFC 9112 §6.1)"
)
# aiohttp's parser (llhttp) names some shapes in its own words, before it quotes the bytes.
_BY_WORDS = (
    ("Too many headers", _HEAD_TOO_LARGE),
    ("Content-Length can't be present with Transfer-Encoding", _SMUGGLING),
    ("Transfer-Encoding can't be present with Content-Length", _SMUGGLING),
    ("Duplicate", Refusal(400, "Bad Request", "a header that is allowed once came twice")),
    ("Missing 'Host'", Refusal(400, "Bad Request", "an HTTP/1.1 request needs a Host header")),
    ("Invalid header", Refusal(400, "Bad Request", "a request header is malformed")),
    ("chunk", _FRAMING),
    ("Content-Length", _FRAMING),
    ("Transfer-Encoding", _FRAMING),
)
_FAILED = Refusal(500, "Internal Server Error", "the gateway failed to answer this request")
_TIMEOUT = Refusal(504, "Gateway Timeout", "the gateway did not answer in time")


def refusal_of(status: int, error: BaseException | None) -> Refusal:
    """What the gateway answers for an error aiohttp hands its connection. Pure."""
    for kind, refusal in _BY_TYPE:
        if isinstance(error, kind):
            return refusal
    if isinstance(error, bad.HttpProcessingError):
        said = (error.message or "").split(":\n", 1)[0]
        return next((r for words, r in _BY_WORDS if words in said), _MALFORMED)
    if status == 504:
        return _TIMEOUT
    return _FAILED if status >= 500 else _MALFORMED


def where(error: BaseException) -> str:
    """FILE:LINE of the frame that raised, so a log line can point at a bug without a
    traceback (which the contract keeps out of the log)."""
    frames = traceback.extract_tb(error.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
