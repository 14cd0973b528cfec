"""permessage-deflate on the whole-message fast paths (issue 11): messages
sent uncompressed go out as on a connection without the extension (RSV1
clear), whole compressed messages are deflated and inflated outside wsproto,
and either kind read between compressed ones leaves the context right."""

from __future__ import annotations

import functools
import random
from typing import Any

import pytest
import trio
from conftest import Recorder, needs_websockets_trio, start_server, url_of
from wsproto import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage

import trio_ws
from trio_ws._wire.events import Failure, PingReceived
from trio_ws._wire.protocol import Protocol

LONG = "compress me, compress me, compress me please " * 40
RANDOM = random.Random(11).randbytes(5000)


def _bytes(frames: Any) -> bytes:
    return b"".join(map(bytes, frames)) if isinstance(frames, list) else bytes(frames)


def _pair(
    server: trio_ws.Deflate | None = None,
    client: trio_ws.Deflate | None = None,
    max_size: int | None = None,
) -> tuple[Protocol, Protocol]:
    """A client and a server protocol that negotiated permessage-deflate."""
    server_ext = (server or trio_ws.Deflate()).extension(client=False, max_message_size=max_size)
    response = server_ext.accept("permessage-deflate; client_max_window_bits")
    assert isinstance(response, str)
    client_ext = (client or trio_ws.Deflate()).extension(client=True, max_message_size=max_size)
    client_ext.finalize(f"permessage-deflate; {response}")
    return (
        Protocol(Connection(ConnectionType.CLIENT, [client_ext]), max_size, client_ext),
        Protocol(Connection(ConnectionType.SERVER, [server_ext]), max_size, server_ext),
    )


def test_uncompressed_messages_go_out_with_rsv1_clear() -> None:
    client, server = _pair()
    for protocol in (client, server):
        assert _bytes(protocol.encode_message("tiny"))[0] == 0x81  # below min_size
        assert _bytes(protocol.encode_message(b"")[0:1]) == b"\x82"
        assert _bytes(protocol.encode_message(LONG, compress=False))[0] == 0x81
        assert _bytes(protocol.encode_message(RANDOM, compress=False))[0] == 0x82
        assert _bytes(protocol.encode_message(LONG))[0] == 0xC1  # compressed: RSV1 set
        assert _bytes(protocol.encode_message(bytearray(LONG.encode())))[0] == 0xC2
        # Random data looks incompressible: sent as it is (skip_incompressible).
        assert _bytes(protocol.encode_message(bytearray(RANDOM)))[0] == 0x82


@pytest.mark.parametrize("context", [True, False])
def test_compressed_frames_match_wsproto_byte_for_byte(context: bool) -> None:
    settings = trio_ws.Deflate(
        server_no_context_takeover=not context, min_size=0, skip_incompressible=False
    )
    ext = settings.extension(client=False, max_message_size=None)
    twin = settings.extension(client=False, max_message_size=None)
    for extension in (ext, twin):
        extension.accept("permessage-deflate")
    ours = Protocol(Connection(ConnectionType.SERVER, [ext]), None, ext)
    theirs = Connection(ConnectionType.SERVER, [twin])
    for message in (LONG, RANDOM, LONG, "", b"", "é" * 3000, LONG * 10, memoryview(RANDOM)):
        event = (
            TextMessage(data=message)
            if isinstance(message, str)
            else BytesMessage(data=bytes(message))
        )
        assert _bytes(ours.encode_message(message)) == theirs.send(event)


def _read(protocol: Protocol, wire: bytes, cuts: list[int]) -> list[Any]:
    out = []
    start = 0
    for end in [*cuts, len(wire)]:
        if end > start:
            out.extend(protocol.receive_data(wire[start:end]))
            start = end
    return out


@pytest.mark.parametrize("seed", range(6))
def test_uncompressed_between_compressed_keeps_the_context(seed: int) -> None:
    # The client keeps its compression context (the default): an uncompressed
    # message between two compressed ones must not touch either side's context.
    client, server = _pair(trio_ws.Deflate(server_no_context_takeover=False))
    messages: list[Any] = [LONG, "tiny", LONG, (LONG, False), RANDOM, LONG, b"", LONG + "!"]
    wire = b""
    sizes = []
    for message in messages:
        if isinstance(message, tuple):
            frame = _bytes(client.encode_message(message[0], compress=message[1]))
        else:
            frame = _bytes(client.encode_message(message))
        sizes.append(len(frame))
        wire += frame
    assert sizes[2] < 40  # the second LONG refers back to the first: context kept
    expected = [m[0] if isinstance(m, tuple) else m for m in messages]
    rng = random.Random(seed)
    if seed == 0:
        cuts: list[int] = []  # one read: the fast path throughout
    elif seed == 1:
        cuts = list(range(1, len(wire)))  # a byte at a time: wsproto throughout
    else:
        cuts = sorted(rng.sample(range(1, len(wire)), 5))  # some of each
    assert _read(server, wire, cuts) == expected
    # ...and back, with the server keeping its context too.
    wire = b"".join(_bytes(server.encode_message(m)) for m in expected)
    assert _read(client, wire, cuts) == expected


def test_fragmented_compressed_message_with_a_ping_then_whole_ones() -> None:
    client, server = _pair()
    first = (
        client.encode_fragment(LONG, False)
        + client.encode_ping(b"p")
        + client.encode_fragment(LONG, True)
    )
    then = _bytes(client.encode_message(LONG)) + _bytes(client.encode_message("tiny"))
    assert server.receive_data(first) == [PingReceived(b"p"), LONG * 2]
    assert server.receive_data(then) == [LONG, "tiny"]


def test_corrupt_or_oversized_compressed_frame_on_the_fast_path() -> None:
    _, server = _pair()
    # A masked frame with RSV1 set whose payload is not deflate data.
    bad = bytes([0xC1, 0x80 | 8]) + bytes(4) + b"\xff\xff\xff\xff\xff\xff\xff\xff"
    (failure,) = server.receive_data(bad)
    assert isinstance(failure, Failure)
    assert (failure.code, failure.reason) == (1007, "invalid compressed data")
    assert server.dead
    client, server = _pair(max_size=10_000)
    bomb = _bytes(client.encode_message(bytes(100_000)))
    assert len(bomb) < 10_000  # small on the wire
    (failure,) = server.receive_data(bomb)
    assert isinstance(failure, Failure)
    assert failure.code == 1009
    assert server.dead


def test_inflating_stops_where_the_callers_room_ends() -> None:
    client, server = _pair()
    messages = [bytes([i]) * 60_000 for i in range(5)]
    wire = b"".join(_bytes(client.encode_message(m)) for m in messages)
    assert len(wire) < 5_000
    got = server.receive_data(wire, room=100_000)
    assert got == messages[:2]  # the room, plus one message: not all five at once
    assert server.backlog
    assert server.resume(slots=1) == messages[2:3]
    assert server.resume() == messages[3:]
    assert not server.backlog


@needs_websockets_trio
async def test_websockets_reads_uncompressed_messages_between_compressed(
    nursery: trio.Nursery,
) -> None:
    from websockets.trio.client import connect

    sent = ["tiny", LONG, (LONG, False), LONG, b"", (RANDOM, False), LONG, "é"]

    async def handler(ws: trio_ws.WebSocket) -> None:
        for message in sent:
            if isinstance(message, tuple):
                await ws.send(message[0], compress=message[1])
            else:
                await ws.send(message)
        async for message in ws:
            await ws.send(message)

    recorder = Recorder(handler)
    # The server keeps its context: the client's decompressor carries it over
    # the uncompressed messages.
    server = await start_server(
        nursery, recorder, compression=trio_ws.Deflate(server_no_context_takeover=False)
    )
    async with connect(url_of(server), compression="deflate") as ws:
        for message in sent:
            assert await ws.recv() == (message[0] if isinstance(message, tuple) else message)
        for message in (LONG, "x", LONG, b"y", RANDOM, LONG):
            await ws.send(message)
            assert await ws.recv() == message


@needs_websockets_trio
async def test_websockets_server_reads_our_small_and_compressed_messages(
    nursery: trio.Nursery,
) -> None:
    from websockets.trio.server import serve

    async def echo_handler(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    server = await nursery.start(
        functools.partial(serve, echo_handler, 0, host="127.0.0.1", compression="deflate")
    )
    port = server.listeners[0].socket.getsockname()[1]
    async with trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:  # keeps its context
        for message in (LONG, "tiny", LONG, b"", LONG, RANDOM, LONG + "!", "x" * 32):
            await ws.send(message)
            assert await ws.receive() == message
        await ws.send(LONG, compress=False)
        assert await ws.receive() == LONG
        await ws.send(LONG)
        assert await ws.receive() == LONG


async def test_incompressible_message_at_the_size_limit_is_accepted(
    nursery: trio.Nursery,
) -> None:
    # Deflate stores random data in blocks of about 2 KiB at memory level 5,
    # 5 bytes each: the frame is larger than the message, and larger than
    # max_message_size, which the message itself is not. (With the default
    # skip_incompressible, random data goes out uncompressed instead.)
    limit = 2**20  # more than one read: the header is checked before the payload is in
    always = trio_ws.Deflate(skip_incompressible=False)
    server = await start_server(
        nursery, Recorder(echo_back), max_message_size=limit, compression=always
    )
    data = random.Random(3).randbytes(limit)
    async with trio_ws.connect(url_of(server), max_message_size=limit, compression=always) as ws:
        await ws.send(data)
        assert await ws.receive() == data
        assert ws.stats().traffic.bytes_out > limit + 100


async def echo_back(ws: trio_ws.WebSocket) -> None:
    async for message in ws:
        await ws.send(message)
