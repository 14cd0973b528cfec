"""The client handshake's steps on their own, over memory streams: building
the request, reading the response (an accept, a rejection and its body, or
a broken answer), and what each becomes."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import h11
import hypothesis.strategies as st
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection
from wsproto.events import Request as WSRequest

import trio_ws
from trio_ws._endpoints.client_handshake import (
    _PLAIN_101,
    MAX_REJECT_BODY,
    USER_AGENT,
    _Accept,
    _accepted,
    _build_request,
    _handshake,
    _Opening,
    _read_response,
    _Rejection,
    _request_headers,
)
from trio_ws._endpoints.url import parse_url
from trio_ws._http import Headers
from trio_ws._options import Options
from trio_ws._wire.deflate import Deflate
from trio_ws._wire.upgrade import split_head

T = TypeVar("T")

URL = parse_url("ws://example.com:8080/chat?room=1")
WHERE = "example.com:8080"


def build(subprotocols: Sequence[str] = (), compression: Deflate | None = None) -> _Opening:
    headers = _request_headers(URL, {"X-Token": "t"})
    return _build_request(URL, list(subprotocols), headers, Options(compression=compression))


def accept_for(data: bytes, **accept: Any) -> bytes:
    """The 101 a wsproto server answers to this request."""
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(data)
    request = next(server.events())
    assert isinstance(request, WSRequest)
    return server.send(AcceptConnection(**accept))


async def _outcome(awaitable: Awaitable[T]) -> T | Exception:
    """What ``awaitable`` returns or raises: raised inside a nursery, an
    error would come out wrapped in a group."""
    try:
        return await awaitable
    except Exception as exc:
        return exc


async def read(
    chunks: Sequence[bytes | Callable[[bytes], bytes]],
    *,
    eof: bool = True,
    subprotocols: Sequence[str] = (),
) -> tuple[_Opening, _Accept | _Rejection]:
    """Run _read_response against a peer that sends ``chunks`` one by one
    (``b"101"`` stands for a valid 101; a function is called with the
    request), then ends the stream."""
    opening = build(subprotocols)
    client, server = trio.testing.memory_stream_pair()
    chunks = [
        accept_for(opening.data) if c == b"101" else c(opening.data) if callable(c) else c
        for c in chunks
    ]

    async def peer() -> None:
        for chunk in chunks:
            await server.send_all(chunk)
            await trio.testing.wait_all_tasks_blocked()
        if eof:
            await server.send_eof()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer)
            result = await _outcome(_read_response(client, opening, WHERE))
    if isinstance(result, Exception):
        raise result
    return opening, result


# -- building the request --------------------------------------------------------------


def test_build_request_writes_the_upgrade_and_records_it() -> None:
    opening = build(["chat", "json"])
    head = opening.data.decode()
    assert head.startswith("GET /chat?room=1 HTTP/1.1\r\n")
    for line in (
        "Host: example.com:8080",
        f"User-Agent: {USER_AGENT}",
        "X-Token: t",
        "Sec-WebSocket-Protocol: chat, json",
    ):
        assert f"\r\n{line}\r\n".lower() in head.lower(), line
    assert head.lower().count("\r\nhost:") == 1
    request = opening.request
    assert (request.method, request.path, request.query) == ("GET", "/chat", "room=1")
    assert request.subprotocols == ["chat", "json"]
    assert request.headers.get("X-Token") == "t"


@pytest.mark.parametrize("compression", [None, Deflate()])
def test_build_request_offers_deflate_when_compressing(compression: Deflate | None) -> None:
    opening = build(compression=compression)
    assert (b"permessage-deflate" in opening.data) == (compression is not None)
    assert (opening.deflate is not None) == (compression is not None)
    assert b"Sec-WebSocket-Protocol" not in opening.data
    assert opening.request.subprotocols == []


# -- reading the response --------------------------------------------------------------


async def test_frames_after_the_101_are_the_connections_first_input() -> None:
    opening = build()
    client, server = trio.testing.memory_stream_pair()
    await server.send_all(accept_for(opening.data) + b"\x81\x02hi")
    with trio.fail_after(5):
        result = await _read_response(client, opening, WHERE)
        assert isinstance(result, _Accept)
        assert result.trailing == b"\x81\x02hi"
        ws = _accepted(client, opening, result, Options(compression=None))
        assert await ws.receive() == "hi"


async def test_accept_byte_by_byte() -> None:
    opening = build(["chat"])
    answer = accept_for(opening.data, subprotocol="chat")
    client, server = trio.testing.memory_stream_pair()

    async def peer() -> None:
        for i in range(len(answer)):
            await server.send_all(answer[i : i + 1])
            await trio.testing.wait_all_tasks_blocked()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer)
            result = await _read_response(client, opening, WHERE)
    assert isinstance(result, _Accept)
    assert result.agreed.subprotocol == "chat"


REJECT = b"HTTP/1.1 403 Forbidden\r\nX-Why: no\r\n"

REJECTION_CASES = [
    # (chunks, end the stream) -> body kept
    ([REJECT + b"Content-Length: 0\r\n\r\n"], False, b""),
    ([REJECT + b"Content-Length: 5\r\n\r\nno", b"pe!"], False, b"nope!"),
    ([REJECT + b"Content-Length: 4\r\n\r\nnope" + b"trailing junk"], False, b"nope"),
    ([REJECT + b"Connection: close\r\n\r\nuntil", b" the end"], True, b"until the end"),
    ([REJECT + b"\r\n"], True, b""),
    (
        [REJECT + b"Content-Length: %d\r\n\r\n" % (MAX_REJECT_BODY + 10), b"x" * MAX_REJECT_BODY],
        False,
        b"x" * MAX_REJECT_BODY,
    ),
]


@pytest.mark.parametrize(("chunks", "eof", "body"), REJECTION_CASES)
async def test_rejections(chunks: list[bytes], eof: bool, body: bytes) -> None:
    _, result = await read(chunks, eof=eof)
    assert isinstance(result, _Rejection)
    assert result.status_code == 403
    assert bytes(result.body) == body
    error = result.error()
    assert isinstance(error, trio_ws.ConnectionRejected)
    assert error.status_code == 403
    assert error.headers.get("X-Why") == "no"
    assert error.body == body


@pytest.mark.parametrize(
    ("chunks", "error", "message"),
    [
        ([], trio_ws.ConnectFailed, f"{WHERE} closed the connection during the handshake"),
        ([b"HTTP/1.1 101 Switching"], trio_ws.ConnectFailed, "closed the connection"),
        (
            [b"garbage\r\n\r\n"],
            trio_ws.InvalidHandshake,
            f"invalid handshake response from {WHERE}",
        ),
        (
            [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"],
            trio_ws.InvalidHandshake,
            "invalid handshake response",
        ),
    ],
)
async def test_broken_answers(chunks: list[bytes], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        await read(chunks)


class _Broken(trio.abc.Stream):
    """A stream whose every operation finds the connection lost."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        raise trio.BrokenResourceError

    async def wait_send_all_might_not_block(self) -> None:  # pragma: no cover
        pass

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        raise trio.BrokenResourceError

    async def aclose(self) -> None:  # pragma: no cover
        pass


async def test_lost_connection_while_reading_is_connect_failed() -> None:
    with pytest.raises(trio_ws.ConnectFailed, match=f"connection to {WHERE} lost") as info:
        await _read_response(_Broken(), build(), WHERE)
    assert isinstance(info.value.__cause__, trio.BrokenResourceError)


@pytest.mark.parametrize(
    ("kept", "data", "done", "body"),
    [
        (b"", b"abc", False, b"abc"),
        (b"x" * (MAX_REJECT_BODY - 1), b"abc", True, b"x" * (MAX_REJECT_BODY - 1) + b"a"),
        (b"x" * MAX_REJECT_BODY, b"abc", True, b"x" * MAX_REJECT_BODY),
    ],
)
def test_rejection_keeps_at_most_max_reject_body(
    kept: bytes, data: bytes, done: bool, body: bytes
) -> None:
    rejection = _Rejection(500, Headers(), bytearray(kept))
    assert rejection.add(data) is done
    assert bytes(rejection.body) == body


# -- the whole handshake ---------------------------------------------------------------


async def handshake(answer: Any, stream: trio.abc.Stream | None = None) -> trio_ws.WebSocket:
    """_handshake against a peer that answers ``answer(request bytes)``."""
    client, server = trio.testing.memory_stream_pair()

    async def peer() -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await server.receive_some()
        await server.send_all(answer(data))
        await server.send_eof()

    headers = _request_headers(URL, Headers())
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer)
            result = await _outcome(
                _handshake(stream or client, URL, ["chat"], headers, Options(compression=None))
            )
    if isinstance(result, Exception):
        raise result
    return result


async def test_handshake_opens_a_websocket() -> None:
    ws = await handshake(
        lambda data: accept_for(data, subprotocol="chat", extra_headers=[(b"X-Srv", b"1")])
    )
    assert ws.subprotocol == "chat"
    assert ws.request.subprotocols == ["chat"]
    assert ws.response is not None
    assert ws.response.status_code == 101
    assert ws.response.headers.get("X-Srv") == "1"


async def test_handshake_raises_the_rejection() -> None:
    with pytest.raises(trio_ws.ConnectionRejected) as info:
        await handshake(lambda data: b"HTTP/1.1 418 Teapot\r\nContent-Length: 3\r\n\r\ntea")
    assert (info.value.status_code, info.value.body) == (418, b"tea")


@pytest.mark.parametrize("error", [trio.BrokenResourceError, trio.ClosedResourceError])
async def test_lost_connection_while_sending_is_connect_failed(error: type[Exception]) -> None:
    class Lost(_Broken):
        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            raise error

    headers = _request_headers(URL, Headers())
    with pytest.raises(trio_ws.ConnectFailed, match=f"connection to {WHERE} lost") as info:
        await _handshake(Lost(), URL, [], headers, Options())
    assert isinstance(info.value.__cause__, error)


# -- the fast path and the general path ------------------------------------------------


def _with_key(data: bytes, key: bytes) -> bytes:
    return re.sub(rb"Sec-WebSocket-Key: [^\r]*", b"Sec-WebSocket-Key: " + key, data)


@pytest.mark.parametrize("subprotocols", [[], ["chat", "json"]])
@pytest.mark.parametrize(
    "compression", [None, Deflate(), Deflate(client_no_context_takeover=True)]
)
@pytest.mark.parametrize("extra", [{}, {"X-Token": "t", "Cookie": "a=1; b=2", "X-Empty": ""}])
def test_request_is_what_wsproto_writes(
    subprotocols: list[str], compression: Deflate | None, extra: dict[str, str]
) -> None:
    headers = _request_headers(URL, extra)
    opening = _build_request(URL, subprotocols, headers, Options(compression=compression))
    assert opening.h11conn is None  # plain fields: written without h11
    wsconn = WSConnection(ConnectionType.CLIENT)
    expected = wsconn.send(
        WSRequest(
            host=URL.host_header,
            target=URL.resource,
            subprotocols=subprotocols,
            extra_headers=[p for p in headers.raw() if p[0].lower() != b"host"],
            extensions=[opening.deflate] if opening.deflate is not None else [],
        )
    )
    assert opening.data == _with_key(expected, opening.key)


def test_a_request_header_that_is_not_plain_is_written_by_h11() -> None:
    opening = _build_request(URL, [], _request_headers(URL, {"X-Name": "caf\xe9"}), Options())
    assert opening.h11conn is not None
    assert b"\r\nX-Name: caf\xe9\r\n" in opening.data
    with pytest.raises(h11.LocalProtocolError):
        _build_request(URL, [], _request_headers(URL, {"X-Bad": "a\r\nInjected: 1"}), Options())


@pytest.mark.parametrize(
    "rewrite",
    [
        lambda answer: answer,  # fast path
        lambda answer: answer.replace(b"\r\n", b"\n"),  # bare line feeds: h11
        lambda answer: answer.replace(b"\r\n\r\n", b"\r\nX-Latin: caf\xe9\r\n\r\n"),  # h11
        lambda answer: answer.replace(b"HTTP/1.1 101 Switching Protocols", b"HTTP/1.1 101 "),
    ],
)
async def test_both_paths_read_a_101(rewrite: Any) -> None:
    chunk = lambda request: rewrite(accept_for(request, subprotocol="chat"))  # noqa: E731
    _, result = await read([chunk], subprotocols=["chat"])
    assert isinstance(result, _Accept)
    assert result.agreed.subprotocol == "chat"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda a: a.replace(b"Sec-WebSocket-Accept: ", b"Sec-WebSocket-Accept: x"), "Bad accept"),
        (lambda a: a.replace(b"Upgrade: websocket", b"Upgrade: h2c"), "'Upgrade: websocket'"),
        (lambda a: a.replace(b"Connection: Upgrade", b"Connection: close"), "'Connection"),
        (
            lambda a: a.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Protocol: other\r\n\r\n"),
            "unrecognized subprotocol other",
        ),
        (
            lambda a: a.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: x-foo\r\n\r\n"),
            "unrecognized extension x-foo",
        ),
    ],
)
@pytest.mark.parametrize("general", [False, True])
async def test_a_101_that_does_not_accept_is_invalid(
    answer: Any, message: str, general: bool
) -> None:
    def chunk(request: bytes) -> bytes:
        data: bytes = answer(accept_for(request))
        return data.replace(b"\r\n", b"\n") if general else data

    with pytest.raises(trio_ws.InvalidHandshake, match=message):
        await read([chunk])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"Upgrade", b"connection", b"Sec-WebSocket-Accept", b"X-A", b"B c"]),
            st.sampled_from([b"websocket", b"Upgrade", b"", b" x ", b"caf\xe9", b"a,b", b"\t"]),
        ),
        max_size=4,
    ),
    st.sampled_from([b"HTTP/1.1 101 Switching Protocols", b"HTTP/1.1 101", b"HTTP/1.0 101 x"]),
)
def test_fast_reading_agrees_with_h11(
    extra: list[tuple[bytes, bytes]], status_line: bytes
) -> None:
    """Differential: whatever head the fast path reads, h11 reads the same
    status and fields."""
    head = status_line + b"\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in extra) + b"\r\n"
    split = split_head(head)
    if split is None or not _PLAIN_101.fullmatch(split[0]):
        return
    conn = h11.Connection(h11.CLIENT)
    fields = [("Host", "x"), ("Upgrade", "websocket"), ("Connection", "Upgrade")]
    conn.send(h11.Request(method="GET", target="/", headers=fields))
    conn.receive_data(head)
    event = conn.next_event()
    assert isinstance(event, h11.InformationalResponse)
    assert event.status_code == 101
    assert list(event.headers.raw_items()) == split[1]
