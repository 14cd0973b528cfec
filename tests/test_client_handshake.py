"""The client handshake's steps on their own, over memory streams: building
the request, reading the response (an accept, a rejection and its body, or
a broken answer), and what each becomes."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, RejectData, TextMessage
from wsproto.events import Request as WSRequest

import trio_ws
from trio_ws._endpoints.client_handshake import (
    MAX_REJECT_BODY,
    USER_AGENT,
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
    chunks: list[bytes], *, eof: bool = True, subprotocols: Sequence[str] = ()
) -> tuple[_Opening, AcceptConnection | _Rejection]:
    """Run _read_response against a peer that sends ``chunks`` one by one
    (``b"101"`` stands for a valid 101), then ends the stream."""
    opening = build(subprotocols)
    client, server = trio.testing.memory_stream_pair()
    chunks = [accept_for(opening.data) if c == b"101" else c for c in chunks]

    async def peer() -> None:
        for chunk in chunks:
            await server.send_all(chunk)
            await trio.testing.wait_all_tasks_blocked()
        if eof:
            await server.send_eof()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer)
            result = await _outcome(_read_response(client, opening.wsconn, WHERE))
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


async def test_frames_after_the_101_stay_in_wsproto() -> None:
    opening = build()
    client, server = trio.testing.memory_stream_pair()
    await server.send_all(accept_for(opening.data) + b"\x81\x02hi")
    with trio.fail_after(5):
        result = await _read_response(client, opening.wsconn, WHERE)
    assert isinstance(result, AcceptConnection)
    assert [type(e) for e in opening.wsconn.events()] == [TextMessage]


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
            result = await _read_response(client, opening.wsconn, WHERE)
    assert isinstance(result, AcceptConnection)
    assert result.subprotocol == "chat"


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
    assert result.event.status_code == 403
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
        await _read_response(_Broken(), build().wsconn, WHERE)
    assert isinstance(info.value.__cause__, trio.BrokenResourceError)


@pytest.mark.parametrize(
    ("kept", "data", "finished", "done", "body"),
    [
        (b"", b"abc", False, False, b"abc"),
        (b"", b"abc", True, True, b"abc"),
        (b"x" * (MAX_REJECT_BODY - 1), b"abc", False, True, b"x" * (MAX_REJECT_BODY - 1) + b"a"),
        (b"x" * MAX_REJECT_BODY, b"abc", False, True, b"x" * MAX_REJECT_BODY),
    ],
)
def test_rejection_keeps_at_most_max_reject_body(
    kept: bytes, data: bytes, finished: bool, done: bool, body: bytes
) -> None:
    rejection = _Rejection(RejectConnection(status_code=500, has_body=True), bytearray(kept))
    assert rejection.add(RejectData(data=data, body_finished=finished)) is done
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
