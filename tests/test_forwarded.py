"""trusted_proxies: reading X-Forwarded-For and Forwarded (RFC 7239), as a
pure function, then through a real server on loopback."""

from __future__ import annotations

import functools
import ipaddress
import logging

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import trio_ws
from trio_ws import Headers
from trio_ws._endpoints.forwarded import (
    TrustedProxies,
    forwarded_elements,
    parse_node,
    trusted_proxies_from,
)

PROXY = ("127.0.0.1", 40000)
TRUST = TrustedProxies.parse(["127.0.0.1", "10.0.0.0/8", "::1"])
TRUST_FORWARDED = TrustedProxies.parse(["127.0.0.1", "10.0.0.0/8", "::1"], "Forwarded")


def xff(*values: str, peer: object = PROXY, trust: TrustedProxies = TRUST) -> object:
    return trust.client(peer, Headers([("X-Forwarded-For", v) for v in values]))


def fwd(*values: str, peer: object = PROXY) -> object:
    return TRUST_FORWARDED.client(peer, Headers([("Forwarded", v) for v in values]))


# -- parsing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "node"),
    [
        ("192.0.2.43", ("192.0.2.43", 0)),
        ("192.0.2.43:4711", ("192.0.2.43", 4711)),
        ("[2001:db8:cafe::17]", ("2001:db8:cafe::17", 0)),
        ("[2001:db8:cafe::17]:4711", ("2001:db8:cafe::17", 4711)),
        ("[2001:DB8::0001]", ("2001:db8::1", 0)),
        ("unknown", ("unknown", 0)),
        ("UNKNOWN", ("unknown", 0)),
        ("_hidden", ("_hidden", 0)),
        ("_SEVKISEK", ("_SEVKISEK", 0)),
        ("192.0.2.43:_port", ("192.0.2.43", 0)),
        ("unknown:80", ("unknown", 80)),
    ],
)
def test_nodes(text: str, node: tuple[str, int]) -> None:
    assert parse_node(text) == node


@pytest.mark.parametrize(
    "text",
    ["", "2001:db8::1", "[2001:db8::1", "[2001:db8::1]x", "[1.2.3.4]", "1.2.3", "host.example",
     "1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:", "1.2.3.4:12a", "_", "[_hidden]", "[unknown]"],
)  # fmt: skip
def test_bad_nodes(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_node(text)


def test_bare_ipv6_in_x_forwarded_for() -> None:
    assert parse_node("2001:db8::1", bare_ipv6=True) == ("2001:db8::1", 0)


def test_forwarded_grammar() -> None:
    assert forwarded_elements('for="_gazonk"') == [{"for": "_gazonk"}]
    assert forwarded_elements('For="[2001:db8:cafe::17]:4711"') == [
        {"for": "[2001:db8:cafe::17]:4711"}
    ]
    assert forwarded_elements("for=192.0.2.60;proto=http;by=203.0.113.43") == [
        {"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"}
    ]
    assert forwarded_elements("for=192.0.2.43, for=198.51.100.17") == [
        {"for": "192.0.2.43"},
        {"for": "198.51.100.17"},
    ]
    assert forwarded_elements('for="a\\"b", ,for=x;') == [{"for": 'a"b'}, {"for": "x"}]
    assert forwarded_elements("for=1.2.3.4 ; proto=https") == [
        {"for": "1.2.3.4", "proto": "https"}
    ]
    assert forwarded_elements("") == []


@pytest.mark.parametrize(
    "text",
    ["for", "for=", 'for="unterminated', "for=1.2.3.4 x", "for=a;for=b", "for=[::1]", "=x",
     'for="1.2.3.4"x'],
)  # fmt: skip
def test_forwarded_grammar_errors(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        forwarded_elements(text)


# -- the setting --------------------------------------------------------------


def test_setting_is_checked() -> None:
    assert trusted_proxies_from(None, "X-Forwarded-For") is None
    with pytest.raises(ValueError, match="forwarded_header"):
        trusted_proxies_from(None, "X-Real-IP")
    with pytest.raises(ValueError, match="forwarded_header"):
        TrustedProxies.parse(["127.0.0.1"], "X-Real-IP")
    with pytest.raises(TypeError, match="list"):
        TrustedProxies.parse("127.0.0.1")
    with pytest.raises(ValueError, match=r"'10\.0\.0\.1/8'"):
        TrustedProxies.parse(["10.0.0.1/8"])  # host bits set: a typo
    with pytest.raises(ValueError, match="'localhost'"):
        TrustedProxies.parse(["localhost"])
    trust = TrustedProxies.parse(["unix", "fd00::/8"], "forwarded")
    assert trust.unix
    assert trust.header == "forwarded"
    assert trust.trusts("")
    assert trust.trusts(b"\0abstract")
    assert trust.trusts(("fd00::5", 1, 0, 0))
    assert not trust.trusts(("fe00::5", 1, 0, 0))
    assert not trust.trusts(None)
    assert not TRUST.trusts("/run/app.sock")


# -- the chain ---------------------------------------------------------------


def test_untrusted_peer_is_the_client() -> None:
    stranger = ("203.0.113.9", 5000)
    assert xff("198.51.100.1", peer=stranger) == stranger


def test_no_header_keeps_the_peer() -> None:
    assert xff() == PROXY


def test_one_proxy() -> None:
    assert xff("198.51.100.1") == ("198.51.100.1", 0)


def test_the_client_cannot_choose_its_address() -> None:
    # The client sent "1.1.1.1, 10.0.0.7" itself; nginx appended the real one.
    assert xff("1.1.1.1, 10.0.0.7, 198.51.100.1") == ("198.51.100.1", 0)


def test_trusted_hops_are_skipped() -> None:
    assert xff("1.1.1.1, 198.51.100.1, 10.1.2.3, 10.0.0.2") == ("198.51.100.1", 0)
    # Several header lines (HAProxy adds one of its own) are one list.
    assert xff("1.1.1.1, 198.51.100.1", "10.1.2.3") == ("198.51.100.1", 0)


def test_every_hop_trusted_gives_the_leftmost() -> None:
    assert xff("10.0.0.9, 10.0.0.2") == ("10.0.0.9", 0)


def test_malformed_entry_gives_the_last_vouched_address() -> None:
    assert xff("garbage") == PROXY
    assert xff("1.1.1.1, not-an-ip") == PROXY
    assert xff("garbage, 10.0.0.5") == ("10.0.0.5", 0)
    # Garbage left of the client is never reached.
    assert xff("garbage, 198.51.100.1") == ("198.51.100.1", 0)


def test_malformed_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="trio_ws"):
        xff("garbage")
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert "unreadable x-forwarded-for header" in caplog.text


def test_ipv6_and_mapped_addresses() -> None:
    assert xff("2001:db8::1", peer=("::1", 1, 0, 0)) == ("2001:db8::1", 0)
    assert xff("[2001:db8::1]:8080") == ("2001:db8::1", 8080)
    assert xff("198.51.100.1, ::ffff:10.0.0.1") == ("198.51.100.1", 0)
    assert xff("198.51.100.1", peer=("::ffff:127.0.0.1", 1, 0, 0)) == ("198.51.100.1", 0)


def test_unix_peers() -> None:
    trust = TrustedProxies.parse(["unix"])
    assert xff("198.51.100.1", peer="", trust=trust) == ("198.51.100.1", 0)
    assert xff("198.51.100.1", peer=PROXY, trust=trust) == PROXY
    assert xff("198.51.100.1", peer="", trust=TRUST) == ""


def test_forwarded_header() -> None:
    assert fwd("for=198.51.100.1") == ("198.51.100.1", 0)
    assert fwd('for="[2001:db8::1]:4711";proto=https') == ("2001:db8::1", 4711)
    assert fwd("for=1.1.1.1, for=198.51.100.1;by=10.0.0.1, for=10.0.0.3") == (
        "198.51.100.1",
        0,
    )
    assert fwd("for=_hidden") == ("_hidden", 0)
    assert fwd("for=unknown") == ("unknown", 0)
    assert fwd("proto=https") == ("unknown", 0)  # no for=: a hop that did not say
    assert fwd('for="unterminated') == PROXY
    assert fwd('for="unterminated', "for=198.51.100.1") == ("198.51.100.1", 0)
    assert fwd("for=2001:db8::1") == PROXY  # IPv6 must be quoted in brackets


def test_only_the_configured_header_is_read() -> None:
    # A proxy that sets X-Forwarded-For passes the client's Forwarded through.
    headers = Headers([("Forwarded", "for=6.6.6.6"), ("X-Forwarded-For", "198.51.100.1")])
    assert TRUST.client(PROXY, headers) == ("198.51.100.1", 0)
    assert TRUST_FORWARDED.client(PROXY, headers) == ("6.6.6.6", 0)


# -- properties --------------------------------------------------------------

ipv4 = st.ip_addresses(v=4)
#: Addresses the test's TrustedProxies trusts, and some it does not.
trusted_ips = st.one_of(
    st.just(ipaddress.ip_address("127.0.0.1")),
    st.integers(0, 2**24 - 1).map(lambda n: ipaddress.IPv4Address((10 << 24) + n)),
)
untrusted_ips = ipv4.filter(lambda a: a not in ipaddress.ip_network("10.0.0.0/8")).filter(
    lambda a: a != ipaddress.ip_address("127.0.0.1")
)


@given(
    st.lists(st.text(alphabet="0123456789abcdef.:[]_, x", max_size=20), max_size=4),
    untrusted_ips,
    st.lists(trusted_ips, max_size=4),
)
def test_whatever_the_client_sends_the_proxy_appended_address_wins(
    spoofed: list[str], client: ipaddress.IPv4Address, hops: list[ipaddress.IPv4Address]
) -> None:
    """The client writes anything on the left; each trusted proxy appends
    the address it saw. The answer is the address the first proxy saw."""
    chain = [*spoofed, str(client), *map(str, hops)]
    assert xff(", ".join(chain)) == (str(client), 0)


@given(st.text(max_size=60))
def test_any_header_value_gives_an_address_and_never_raises(value: str) -> None:
    for trust in (TRUST, TRUST_FORWARDED):
        found = trust.client(PROXY, Headers([(trust.header, value)]))
        assert found == PROXY or (isinstance(found, tuple) and len(found) == 2)


@given(st.ip_addresses(), st.integers(1, 65535))
def test_forwarded_round_trip(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> None:
    """What a proxy writes for any address and port reads back as it."""
    shown = f"[{address}]" if address.version == 6 else str(address)
    value = f'for="{shown}:{port}";proto=https'
    assert TrustedProxies.parse([]).header == "x-forwarded-for"
    assert forwarded_elements(value)[0]["for"] == f"{shown}:{port}"
    assert parse_node(f"{shown}:{port}") == (str(address), port)


# -- through a server -----------------------------------------------------------


async def report(ws: trio_ws.WebSocket) -> None:
    await ws.send_json([list(ws.remote_address[:2]), list(ws.peer_address[:2])])


async def test_server_reports_the_forwarded_client() -> None:
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio_ws.serve, report, "127.0.0.1", 0)
        trusting = await nursery.start(functools.partial(serve, trusted_proxies=["127.0.0.0/8"]))
        default = await nursery.start(serve)
        headers = {"X-Forwarded-For": "6.6.6.6, 198.51.100.7"}
        async with trio_ws.connect(f"ws://127.0.0.1:{trusting.port}/", headers=headers) as ws:
            remote, peer = await ws.receive_json()
        assert remote == ["198.51.100.7", 0]
        assert peer[0] == "127.0.0.1"
        # Never trusted by default.
        async with trio_ws.connect(f"ws://127.0.0.1:{default.port}/", headers=headers) as ws:
            remote, peer = await ws.receive_json()
        assert remote == peer
        assert remote[0] == "127.0.0.1"
        nursery.cancel_scope.cancel()


async def test_serve_checks_trusted_proxies_before_binding() -> None:
    with pytest.raises(ValueError, match="trusted_proxies"):
        await trio_ws.serve(report, "127.0.0.1", 0, trusted_proxies=["not an address"])
    with pytest.raises(TypeError):
        await trio_ws.serve(report, "127.0.0.1", 0, trusted_proxies="127.0.0.1")  # type: ignore[arg-type]
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    with pytest.raises(ValueError, match="forwarded_header"):
        await trio_ws.serve_listeners(report, [listener], forwarded_header="Via")
    assert listener.socket.fileno() == -1  # closed: the server owned it
