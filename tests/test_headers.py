"""Header rules as tables: pure functions, no sockets."""

from __future__ import annotations

import pytest

from gateway import headers as h

PEER = h.Peer(address="10.0.0.7", scheme="http", host="gw.example:8080")


def names(headers: h.Headers) -> list[str]:
    return [n for n, _ in headers]


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ([("Connection", "close"), ("X-A", "1")], ["X-A"]),
        ([("Connection", "X-Secret, keep-alive"), ("X-Secret", "s"), ("Keep-Alive", "5")], []),
        ([("TE", "trailers"), ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c")], []),
        ([("Proxy-Connection", "keep-alive"), ("Trailer", "X"), ("X-B", "2")], ["X-B"]),
        ([("X-A", "1"), ("x-a", "2")], ["X-A", "x-a"]),
    ],
)
def test_end_to_end_drops_hop_by_hop(sent: list[h.Header], kept: list[str]) -> None:
    assert names(h.end_to_end(sent)) == kept


def test_for_upstream_appends_and_adds_forwarding_headers() -> None:
    sent = [
        ("Host", "gw.example:8080"),
        ("X-Forwarded-For", "1.2.3.4"),
        ("Via", "1.0 edge"),
        ("X-Gateway-Job-Id", "forged"),
        ("Content-Length", "4"),
        ("Accept", "*/*"),
    ]
    out = dict(h.for_upstream(sent, PEER, trust_forwarded=False))
    assert out == {
        "Accept": "*/*",
        "X-Forwarded-For": "1.2.3.4, 10.0.0.7",
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Host": "gw.example:8080",
        "Via": "1.0 edge, 1.1 async-gateway",
    }


def test_trusted_forwarded_scheme_and_host_are_kept() -> None:
    sent = [("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "api.example.com")]
    out = dict(h.for_upstream(sent, PEER, trust_forwarded=True))
    assert (out["X-Forwarded-Proto"], out["X-Forwarded-Host"]) == ("https", "api.example.com")
    untrusted = dict(h.for_upstream(sent, PEER, trust_forwarded=False))
    assert (untrusted["X-Forwarded-Proto"], untrusted["X-Forwarded-Host"]) == (
        "http",
        "gw.example:8080",
    )


@pytest.mark.parametrize(
    ("public", "trust", "sent", "base"),
    [
        (
            "https://api.example.com",
            True,
            [("X-Forwarded-Host", "evil")],
            "https://api.example.com",
        ),
        (None, False, [("X-Forwarded-Host", "evil")], "http://gw.example:8080"),
        (
            None,
            True,
            [("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "lb.example")],
            "https://lb.example",
        ),
    ],
)
def test_base_url(public: str | None, trust: bool, sent: list[h.Header], base: str) -> None:
    assert h.base_url(PEER, sent, public, trust) == base


def test_for_client_keeps_order_and_repeats_but_not_own_headers() -> None:
    answer = [
        ("Set-Cookie", "a"),
        ("X-Gateway-Job-Status", "fake"),
        ("Set-Cookie", "b"),
        ("Connection", "close"),
        ("Content-Length", "3"),
    ]
    assert h.for_client(answer) == (
        ("Set-Cookie", "a"),
        ("Set-Cookie", "b"),
        ("Content-Length", "3"),
    )


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("soon", None),
        (None, None),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
    ],
)
def test_retry_after(value: str | None, seconds: float | None) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert h.retry_after(value, now) == seconds


def test_header_bytes_round_trip_exactly_whatever_they_are() -> None:
    every_byte = bytes(range(256))
    for raw in (every_byte, "café".encode(), b"caf\xe9", b"\xff\xfe", b""):
        [(name, value)] = h.decode([(b"X-Raw", raw)])
        assert len(value) == len(raw)  # one code point a byte
        assert h.encode(name) == b"X-Raw" and h.encode(value) == raw


def test_text_from_before_latin1_encodes_as_utf8() -> None:
    assert h.encode("caf\u00e9") == b"caf\xe9"
    assert h.encode("\u20ac") == "\u20ac".encode()  # only a UTF-8 decoder made this


@pytest.mark.parametrize(
    ("name", "value", "ok"),
    [
        ("X-A", "caf\xe9", True),
        ("X-A", "", True),
        ("X-A", "a\r\nX-Evil: 1", False),
        ("X-A", "a\nb", False),
        ("X-A", "a\0b", False),
        ("X A", "v", False),
        ("X:A", "v", False),
        ("", "v", False),
    ],
)
def test_writable_headers(name: str, value: str, ok: bool) -> None:
    assert h.writable(name, value) is ok


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("0", 0),
        ("42", 42),
        (" 7\t", 7),
        ("²", None),
        ("٣", None),
        ("+1", None),
        ("1_0", None),
        ("-1", None),
        ("", None),
        ("1.5", None),
        ("9" * 5000, h.SATURATED),
        (None, None),
    ],
)
def test_numbers_are_ascii_digits(value: str | None, number: int | None) -> None:
    assert h.number(value) == number


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("gw.example", True),
        ("gw.example:8080", True),
        ("[::1]:80", True),
        ("10.0.0.1", True),
        ("h:", True),
        ("evil.example:80 junk", False),
        ("user@host", False),
        ("host#frag", False),
        ("host/x?y", False),
        ("", False),
        ("h:99999", False),
        ("h\xe9", False),
        ("[::1", False),
        ("a,b", True),
    ],
)
def test_valid_host(host: str, ok: bool) -> None:
    assert h.valid_host(host) is ok


@pytest.mark.parametrize(
    ("forwarded", "base"),
    [
        (
            [("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "api.example.com")],
            "https://api.example.com",
        ),
        ([("X-Forwarded-Host", "evil.example junk")], "http://gw.example:8080"),
        ([("X-Forwarded-Host", "user@evil.example")], "http://gw.example:8080"),
        ([("X-Forwarded-Proto", "javascript")], "http://gw.example:8080"),
    ],
)
def test_a_forwarded_host_or_scheme_that_is_not_one_is_passed_over(
    forwarded: list[h.Header], base: str
) -> None:
    assert h.base_url(PEER, forwarded, None, trust=True) == base


@pytest.mark.parametrize(
    ("cookie", "sent"),
    [
        ("gateway_console=s3cret", None),
        ("a=1; gateway_console=s3cret; b=2", "a=1; b=2"),
        ("gateway_console=s3cret; b=\xe92", "b=\xe92"),
        ("a=1;b=2", "a=1;b=2"),  # untouched, byte for byte
        ("gateway_console_x=1", "gateway_console_x=1"),
        ("", ""),  # an empty Cookie header is carried as it came
    ],
)
def test_the_consoles_session_cookie_never_goes_upstream(cookie: str, sent: str | None) -> None:
    out = h.for_upstream([("Cookie", cookie)], PEER, trust_forwarded=False)
    assert [v for n, v in out if n == "Cookie"] == ([] if sent is None else [sent])
