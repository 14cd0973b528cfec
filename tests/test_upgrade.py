"""The server's fast path for plain upgrade requests (``_wire.upgrade``): it
takes only what the general path (h11 + wsproto) takes, answers it byte for
byte as wsproto does, and leaves everything else to the general path."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import trio
import trio.testing
from conftest import start_server
from hypothesis import HealthCheck, given, settings
from server_helpers import http_exchange, upgrade_then_close
from test_server_handshake import requests
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection
from wsproto.events import Request as WSRequest
from wsproto.utilities import RemoteProtocolError

import trio_ws
from trio_ws._endpoints.server_handshake import HandshakePolicy, accept_handshake
from trio_ws._options import Options
from trio_ws._wire.deflate import Deflate
from trio_ws._wire.upgrade import accept_response, agree_extensions, parse_upgrade

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def request(*fields: bytes, first: bytes = b"GET /chat?room=1 HTTP/1.1") -> bytes:
    return b"\r\n".join([first, *fields]) + b"\r\n\r\n"


BASIC = (
    b"Host: example.com:8000",
    b"Upgrade: websocket",
    b"Connection: Upgrade",
    b"Sec-WebSocket-Key: " + KEY,
    b"Sec-WebSocket-Version: 13",
)
#: What Firefox sends, near enough.
BROWSER = (
    b"Host: localhost:8000",
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    b"Accept: */*",
    b"Accept-Language: en-US,en;q=0.5",
    b"Accept-Encoding: gzip, deflate, br, zstd",
    b"Sec-WebSocket-Version: 13",
    b"Origin: http://localhost:8000",
    b"Sec-WebSocket-Protocol: chat, superchat",
    b"Sec-WebSocket-Extensions: permessage-deflate",
    b"Sec-WebSocket-Key: " + KEY,
    b"Connection: keep-alive, Upgrade",
    b"Cookie: session=abc; theme=dark",
    b"Pragma: no-cache",
    b"Cache-Control: no-cache",
    b"Upgrade: websocket",
)


def test_plain_upgrades_are_read() -> None:
    head = parse_upgrade(request(*BROWSER))
    assert head is not None
    assert head.target == b"/chat?room=1"
    assert head.key == KEY
    assert head.extensions == ["permessage-deflate"]
    assert (b"Cookie", b"session=abc; theme=dark") in head.headers
    assert len(head.headers) == len(BROWSER)
    # Case and spacing as h11 allows them.
    odd = request(
        b"HOST:example.com",
        b"upgrade:   WebSocket  ",
        b"connection: upgrade",
        b"sec-websocket-key:\t" + KEY,
        b"SEC-WEBSOCKET-VERSION: 13",
        b"Sec-WebSocket-Extensions: a, b; x=1",
        b"sec-websocket-extensions: c",
        b"X-Empty:",
    )
    head = parse_upgrade(odd)
    assert head is not None
    assert head.extensions == ["a", "b; x=1", "c"]
    assert (b"upgrade", b"WebSocket") in head.headers
    assert (b"X-Empty", b"") in head.headers


@pytest.mark.parametrize(
    "data",
    [
        request(*BASIC, first=b"POST /chat HTTP/1.1"),
        request(*BASIC, first=b"HEAD /chat HTTP/1.1"),
        request(*BASIC, first=b"GET /chat HTTP/1.0"),
        request(*BASIC, first=b"GET  /chat HTTP/1.1"),
        request(*BASIC[1:]),  # no Host
        request(*BASIC, b"Host: other"),  # two
        request(*BASIC, b"Sec-WebSocket-Key: " + KEY),
        request(*BASIC[:3], b"Sec-WebSocket-Key: c2hvcnQ=", BASIC[4]),
        request(*BASIC[:4], b"Sec-WebSocket-Version: 8"),
        request(BASIC[0], b"Upgrade: h2c", *BASIC[2:]),
        request(BASIC[0], BASIC[1], b"Connection: keep-alive", *BASIC[3:]),
        request(*BASIC, b"X-Folded: a", b" b"),  # obs-fold
        request(*BASIC, b"X-Latin: caf\xe9"),  # obs-text
        request(*BASIC, b"Content-Length: 0"),
        request(*BASIC, b"Transfer-Encoding: chunked"),
        request(*BASIC, b"No colon"),
        request(*BASIC, b"Bad name: x"),
        request(b"Host: \xff", *BASIC[1:]),
        request(*BASIC).replace(b"\r\n", b"\n"),  # bare line feeds
        request(*BASIC)[:-2],  # not the end of a head
    ],
)
def test_anything_else_takes_the_general_path(data: bytes) -> None:
    assert parse_upgrade(data) is None


def _wsproto_answer(data: bytes, subprotocol: str | None, offer_deflate: bool) -> bytes | None:
    """What the general path answers: the 101 wsproto writes, or None when
    it refuses the request."""
    wsconn = WSConnection(ConnectionType.SERVER)
    try:
        wsconn.receive_data(data)
        event = next(wsconn.events())
    except RemoteProtocolError:
        return None
    if not isinstance(event, WSRequest):
        return None
    if subprotocol not in event.subprotocols:
        subprotocol = None
    extensions = (
        [Deflate().extension(client=False, max_message_size=None)] if offer_deflate else []
    )
    return wsconn.send(AcceptConnection(subprotocol=subprotocol, extensions=extensions))


def _fast_answer(data: bytes, subprotocol: str | None, offer_deflate: bool) -> bytes | None:
    head = parse_upgrade(data)
    if head is None:
        return None
    offered = [
        token.strip()
        for name, value in head.headers
        if name.lower() == b"sec-websocket-protocol"
        for token in value.decode().split(",")
    ]
    if subprotocol not in offered:
        subprotocol = None
    agreed = None
    if offer_deflate:
        agreed = agree_extensions(
            head.extensions, [Deflate().extension(client=False, max_message_size=None)]
        )
    return accept_response(head.key, subprotocol, agreed)


@pytest.mark.parametrize("subprotocol", [None, "chat", "superchat", "other"])
@pytest.mark.parametrize(
    "extensions",
    [
        b"",
        b"permessage-deflate",
        b"permessage-deflate; client_max_window_bits",
        b"permessage-deflate; server_max_window_bits=10, permessage-deflate",
        b"x-webkit-deflate-frame, permessage-deflate; client_no_context_takeover",
        b"permessage-deflate; server_max_window_bits=8",  # declined
    ],
)
def test_the_answer_is_wsprotos(subprotocol: str | None, extensions: bytes) -> None:
    fields = [*BROWSER[:8], *BROWSER[9:]]
    if extensions:
        fields.append(b"Sec-WebSocket-Extensions: " + extensions)
    data = request(*fields)
    for deflate in (False, True):
        expected = _wsproto_answer(data, subprotocol, deflate)
        assert expected is not None
        assert _fast_answer(data, subprotocol, deflate) == expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), st.sampled_from([None, "chat"]), st.booleans())
def test_fast_path_takes_only_what_the_general_path_takes(
    data: bytes, subprotocol: str | None, deflate: bool
) -> None:
    """Differential: whatever parse_upgrade takes, h11 and wsproto take too,
    and the answers are the same bytes."""
    fast = _fast_answer(data, subprotocol, deflate)
    if fast is not None:
        assert _wsproto_answer(data, subprotocol, deflate) == fast


async def _answer(data: bytes, policy: HandshakePolicy, *, split: int | None = None) -> bytes:
    client, server = trio.testing.memory_stream_pair()
    if split is None:
        await client.send_all(data)
    else:
        await client.send_all(data[:split])
    async with trio.open_nursery() as nursery:
        result: list[trio_ws.WebSocket | str] = []

        async def accept() -> None:
            result.append(await accept_handshake(server, policy))

        nursery.start_soon(accept)
        if split is not None:
            await trio.testing.wait_all_tasks_blocked()
            await client.send_all(data[split:])
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += await client.receive_some()
    return answer


def _policy(**kwargs: object) -> HandshakePolicy:
    settings: dict[str, object] = {
        "process_request": None,
        "subprotocols": ("chat",),
        "origins": None,
        "reserve_slot": lambda: True,
        "options": Options(compression=Deflate()),
    }
    settings.update(kwargs)
    return HandshakePolicy(**settings)  # type: ignore[arg-type]


async def test_a_head_in_pieces_is_answered_the_same() -> None:
    """A head split across reads takes the general path: the same 101."""
    data = request(*BROWSER)
    whole = await _answer(data, _policy())
    assert whole.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Protocol: chat\r\n" in whole
    assert b"Sec-WebSocket-Extensions: permessage-deflate" in whole
    assert await _answer(data, _policy(), split=40) == whole


async def test_refusals_on_the_fast_path() -> None:
    """Refusals of requests the fast parser read are answered through h11."""
    data = request(*BROWSER)
    forbidden = await _answer(data, _policy(origins=["https://example.com"]))
    assert forbidden.startswith(b"HTTP/1.1 403 ")
    full = await _answer(data, _policy(reserve_slot=lambda: False))
    assert full.startswith(b"HTTP/1.1 503 ")
    assert b"Retry-After: 5" in full
    rejected = await _answer(
        data, _policy(process_request=lambda r: trio_ws.Response(401, [("X-Why", "token")], "no"))
    )
    assert rejected.startswith(b"HTTP/1.1 401 ")
    assert b"X-Why: token" in rejected


async def test_an_accept_with_headers_takes_the_general_path() -> None:
    data = request(*BROWSER)
    answer = await _answer(
        data,
        _policy(
            process_request=lambda r: trio_ws.Accept(
                subprotocol="superchat", headers=[("Set-Cookie", "a=1")]
            )
        ),
    )
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Protocol: superchat\r\n" in answer
    assert b"Set-Cookie: a=1\r\n" in answer


async def test_both_paths_over_a_socket(nursery: trio.Nursery) -> None:
    """A plain upgrade (fast path) and one with a latin-1 header value
    (general path) both open, exchange a message and close cleanly."""
    seen: list[str | None] = []

    async def handler(ws: trio_ws.WebSocket) -> None:
        seen.append(ws.request.headers.get("X-Name"))
        async for message in ws:
            await ws.send(message)

    server = await start_server(nursery, handler)
    for extra in ([], [b"X-Name: caf\xe9"]):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(request(*BASIC, *extra))
        answer = await upgrade_then_close(stream.receive_some, stream.send_all)
        assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer
        await stream.aclose()
    await trio.testing.wait_all_tasks_blocked()  # the server's side is over too
    assert server.stats().open_connections == 0
    assert seen == [None, "café"]
    assert server.stats().close_codes[1000] == 2
    # A request the fast path does not take and h11 refuses still gets its 400.
    answer = await http_exchange(server.port, request(*BASIC, b"Bad name: x"))
    assert answer.startswith(b"HTTP/1.1 400 ")
