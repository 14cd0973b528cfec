"""Parsing ws:// and wss:// URLs."""

from __future__ import annotations

import pytest

from trio_ws import InvalidURL
from trio_ws._endpoints.url import WebSocketURL, parse_url


@pytest.mark.parametrize(
    ("url", "expected", "host_header"),
    [
        ("ws://example.com", WebSocketURL(False, "example.com", 80, "/"), "example.com"),
        ("wss://example.com", WebSocketURL(True, "example.com", 443, "/"), "example.com"),
        (
            "ws://example.com:8080/a/b?x=1&y=2",
            WebSocketURL(False, "example.com", 8080, "/a/b?x=1&y=2"),
            "example.com:8080",
        ),
        ("WS://Example.COM:80/", WebSocketURL(False, "example.com", 80, "/"), "example.com"),
        ("wss://h:443/p", WebSocketURL(True, "h", 443, "/p"), "h"),
        ("ws://[::1]:9000/", WebSocketURL(False, "::1", 9000, "/"), "[::1]:9000"),
        ("ws://[::1]/", WebSocketURL(False, "::1", 80, "/"), "[::1]"),
        ("ws://h?q", WebSocketURL(False, "h", 80, "/?q"), "h"),
    ],
)
def test_valid_urls(url: str, expected: WebSocketURL, host_header: str) -> None:
    parsed = parse_url(url)
    assert parsed == expected
    assert parsed.host_header == host_header
    assert parsed.authorization is None


def test_userinfo_becomes_basic_auth() -> None:
    parsed = parse_url("ws://ann:s%40cret@example.com/")
    assert (parsed.username, parsed.password) == ("ann", "s@cret")
    assert parsed.authorization == "Basic YW5uOnNAY3JldA=="
    assert parse_url("ws://ann@h/").authorization == "Basic YW5uOg=="


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.com/", "scheme"),
        ("example.com", "scheme"),
        ("ws:///path", "no host"),
        ("ws://h:99999/", "valid URL"),
        ("ws://h:port/", "valid URL"),
        ("ws://h/#frag", "fragment"),
        ("ws://[::1/", "valid URL"),
    ],
)
def test_invalid_urls(url: str, message: str) -> None:
    with pytest.raises(InvalidURL, match=message):
        parse_url(url)
    with pytest.raises(ValueError, match=message):  # InvalidURL is a ValueError too
        parse_url(url)
