"""Which proxy, from the arguments and the environment: proxy URLs, the
environment variables' precedence and the ``NO_PROXY`` rules
(``trio_ws/_endpoints/proxy_config.py``, no I/O). Connecting through
proxies is tests/test_proxy.py's."""

from __future__ import annotations

import pytest

import trio_ws
from trio_ws._endpoints.proxy_config import (
    ProxyURL,
    bypasses,
    parse_proxy_url,
    proxy_from_environment,
)
from trio_ws._endpoints.url import parse_url


def test_proxy_from_environment_table() -> None:
    ws, wss = parse_url("ws://h.example/"), parse_url("wss://h.example/")
    env = {"http_proxy": "p1:3128", "HTTPS_PROXY": "socks5h://p2", "all_proxy": "socks5://p3"}
    assert proxy_from_environment(ws, env) == ProxyURL("http", "p1", 3128)
    assert proxy_from_environment(wss, env) == ProxyURL("socks5h", "p2", 1080)
    assert proxy_from_environment(wss, {"ALL_PROXY": "socks5://p3"}) == ProxyURL(
        "socks5", "p3", 1080
    )
    assert proxy_from_environment(ws, {"HTTPS_PROXY": "http://p2"}) is None
    assert proxy_from_environment(ws, {}) is None
    assert proxy_from_environment(ws, {**env, "NO_PROXY": "xample"}) is not None
    assert proxy_from_environment(ws, {**env, "NO_PROXY": "h.example:80"}) is None
    assert proxy_from_environment(wss, {**env, "NO_PROXY": "h.example:80"}) is not None


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "expected"),
    [
        ("*", "anything.example", 80, True),
        ("example.com", "example.com", 80, True),
        ("example.com", "ws.example.com", 80, True),
        (".example.com", "example.com", 80, True),
        (".example.com", "a.b.example.com", 80, True),
        ("*.example.com", "ws.example.com", 80, True),
        ("example.com", "badexample.com", 80, False),
        ("EXAMPLE.com.", "ws.Example.COM", 80, True),
        ("a.example, b.example", "b.example", 80, True),
        ("a.example b.example", "b.example", 80, True),
        ("", "example.com", 80, False),
        (",,", "example.com", 80, False),
        ("10.1.2.3", "10.1.2.3", 80, True),
        ("10.1.2.3", "10.1.2.4", 80, False),
        ("10.0.0.0/8", "10.200.0.1", 80, True),
        ("10.0.0.0/8", "11.0.0.1", 80, False),
        ("10.0.0.0/8", "ten.example", 80, False),
        ("127.0.0.1/8", "127.9.9.9", 80, True),
        ("fd00::/8", "fd12::1", 80, True),
        ("::1", "::1", 80, True),
        ("[::1]", "::1", 80, True),
        ("[::1]:9000", "::1", 9000, True),
        ("[::1]:9000", "::1", 9001, False),
        ("example.com:8443", "ws.example.com", 8443, True),
        ("example.com:8443", "example.com", 443, False),
        ("10.1.2.3:80", "10.1.2.3", 80, True),
        ("localhost", "127.0.0.1", 80, False),  # names are not resolved
        ("not/a-network", "10.0.0.1", 80, False),
        ("*", "", 80, True),
    ],
)
def test_no_proxy_rules(no_proxy: str, host: str, port: int, expected: bool) -> None:
    assert bypasses(no_proxy, host, port) is expected


# -- proxy URLs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "redacted"),
    [
        ("http://proxy:3128", ProxyURL("http", "proxy", 3128), "http://proxy:3128"),
        ("HTTP://Proxy/", ProxyURL("http", "proxy", 80), "http://proxy:80"),
        ("proxy.corp:8080", ProxyURL("http", "proxy.corp", 8080), "http://proxy.corp:8080"),
        ("https://proxy", ProxyURL("https", "proxy", 443), "https://proxy:443"),
        ("socks5://[::1]", ProxyURL("socks5", "::1", 1080), "socks5://[::1]:1080"),
        ("socks5h://h:9050", ProxyURL("socks5h", "h", 9050), "socks5h://h:9050"),
        ("socks4://h", ProxyURL("socks4", "h", 1080), "socks4://h:1080"),
        ("socks4a://h", ProxyURL("socks4a", "h", 1080), "socks4a://h:1080"),
        (
            "http://us%40er:p%3Ass%2F@h:1",
            ProxyURL("http", "h", 1, "us@er", "p:ss/"),
            "http://us%40er@h:1",
        ),
        ("http://ann@h:1", ProxyURL("http", "h", 1, "ann"), "http://ann@h:1"),
    ],
)
def test_parse_proxy_url(text: str, expected: ProxyURL, redacted: str) -> None:
    parsed = parse_proxy_url(text)
    assert parsed == expected
    assert parsed.redacted == redacted
    assert "p:ss" not in repr(parsed)


def test_proxy_authorization() -> None:
    assert parse_proxy_url("http://h").authorization is None
    assert parse_proxy_url("http://al%40ce:p%3As@h").authorization == "Basic YWxAY2U6cDpz"
    assert parse_proxy_url("http://ann@h").authorization == "Basic YW5uOg=="


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ftp://user:secret@proxy", "'ftp://user@proxy' is not a proxy URL: the scheme must be"),
        (
            "socks6://proxy",
            "the scheme must be one of http, https, socks5, socks5h, socks4, socks4a",
        ),
        ("http://", "has no host"),
        ("http://proxy:99999", "is not a valid proxy URL"),
        ("http://proxy/path", "a proxy URL has no path, query or fragment"),
        ("http://proxy/?q", "a proxy URL has no path, query or fragment"),
    ],
)
def test_bad_proxy_urls_raise_invalid_url_naming_the_proxy(text: str, message: str) -> None:
    with pytest.raises(trio_ws.InvalidURL, match=r"^proxy: ") as caught:
        parse_proxy_url(text)
    assert message in str(caught.value)
    assert "secret" not in str(caught.value)
    assert isinstance(caught.value, ValueError)
