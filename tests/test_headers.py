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


def test_decode_keeps_utf8_and_falls_back_to_latin1() -> None:
    assert h.decode([(b"X-Name", "café".encode()), (b"X-Raw", b"\xe9")]) == (
        ("X-Name", "café"),
        ("X-Raw", "é"),
    )
