"""Headers, requests and responses of the opening handshake."""

from __future__ import annotations

import enum

import pytest

from trio_ws import Headers, Request, Response


def test_headers_from_pairs_mappings_bytes_and_headers() -> None:
    pairs = Headers([("Host", "example.com"), ("Cookie", "a=1"), ("cookie", "b=2")])
    assert len(pairs) == 3
    assert list(pairs) == [("Host", "example.com"), ("Cookie", "a=1"), ("cookie", "b=2")]
    assert Headers({"Host": "example.com"}) == Headers([("Host", "example.com")])
    assert Headers([(b"Host", b"caf\xe9")]) == Headers([("Host", "café")])  # latin-1
    assert Headers.from_raw([(b"Origin", b"https://a")]).get("origin") == "https://a"
    assert Headers(pairs) == pairs
    assert Headers() == Headers([])
    assert len(Headers()) == 0


def test_headers_lookups_ignore_case_and_keep_order() -> None:
    headers = Headers([("Cookie", "a=1"), ("X-Tag", "t"), ("COOKIE", "b=2")])
    assert headers.get("cookie") == "a=1"
    assert headers.get("missing") is None
    assert headers.get("missing", "default") == "default"
    assert headers.get_all("Cookie") == ["a=1", "b=2"]
    assert headers["x-tag"] == "t"
    with pytest.raises(KeyError):
        headers["missing"]
    assert "x-TAG" in headers
    assert ("X-Tag", "t") in headers
    assert "missing" not in headers


def test_headers_index_slice_add_hash_repr_raw() -> None:
    headers = Headers([("A", "1"), ("B", "2"), ("C", "3")])
    assert headers[0] == ("A", "1")
    assert headers[-1] == ("C", "3")
    assert headers[1:] == (("B", "2"), ("C", "3"))
    combined = headers + {"D": "4"}
    assert list(combined) == [("A", "1"), ("B", "2"), ("C", "3"), ("D", "4")]
    assert list(headers) == [("A", "1"), ("B", "2"), ("C", "3")]  # unchanged
    assert hash(headers) == hash(Headers(list(headers)))
    assert headers != Headers([("A", "1")])
    assert repr(Headers([("A", "1")])) == "Headers([('A', '1')])"
    assert headers.raw() == [(b"A", b"1"), (b"B", b"2"), (b"C", b"3")]


def test_headers_tokens() -> None:
    headers = Headers(
        [("Sec-WebSocket-Protocol", "chat, json"), ("sec-websocket-protocol", " v2 ,")]
    )
    assert headers.tokens("Sec-WebSocket-Protocol") == ["chat", "json", "v2"]


def test_header_names_are_shared_between_requests() -> None:
    # Every connection keeps its request's headers: the names, repeated on
    # every request, are stored once.
    first = Headers.from_raw([(b"Sec-WebSocket-Version", b"13")])
    second = Headers.from_raw([(b"Sec-WebSocket-Version", b"13")])
    assert first[0][0] is second[0][0]


def test_request_properties() -> None:
    request = Request.from_target(
        "GET",
        "/chat?room=1",
        [
            ("Host", "example.com"),
            ("Origin", "https://example.com"),
            ("Upgrade", "websocket"),
            ("Connection", "keep-alive, Upgrade"),
            ("Sec-WebSocket-Protocol", "a, b"),
        ],
    )
    assert (request.path, request.query, request.target) == ("/chat", "room=1", "/chat?room=1")
    assert request.host == "example.com"
    assert request.origin == "https://example.com"
    assert request.subprotocols == ["a", "b"]
    assert request.is_upgrade
    assert not Request.from_target("GET", "/", [("Host", "x")]).is_upgrade


def test_response_text() -> None:
    response = Response.text(404, "nope")
    assert response.status_code == 404
    assert response.body == b"nope"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_header_names_may_be_str_subclasses() -> None:
    class Field(str, enum.Enum):
        AUTH = "Authorization"

    headers = Headers({Field.AUTH: "Bearer x"})
    assert headers.get("authorization") == "Bearer x"
    assert list(headers) == [("Authorization", "Bearer x")]
    assert type(headers[0][0]) is str
