"""The message layer: assembly, size limits in bytes, protocol failures.

The first tests drive :class:`trio_ws._wire.protocol.Protocol` directly (sans
I/O); the rest send broken frames over a real socket and check the close
code the server answers with.
"""

from __future__ import annotations

import pytest
import trio
from conftest import Recorder, start_server
from rawpeer import BINARY, CLOSE, CONTINUATION, PING, TEXT, RawClient, close_payload, frame
from wsproto.connection import Connection, ConnectionType

import trio_ws
from trio_ws._wire.events import CloseReceived, Failure, PingReceived, PongReceived
from trio_ws._wire.protocol import Protocol


def server_protocol(max_size: int | None = 100) -> Protocol:
    return Protocol(Connection(ConnectionType.SERVER), max_size)


def test_whole_message_is_returned_as_is() -> None:
    proto = server_protocol()
    assert proto.receive_data(frame(TEXT, "été".encode())) == ["été"]
    assert proto.receive_data(frame(BINARY, b"\x00\x01")) == [b"\x00\x01"]


def test_fragments_are_assembled() -> None:
    proto = server_protocol()
    data = (
        frame(TEXT, b"he", fin=False)
        + frame(PING, b"p")
        + frame(CONTINUATION, b"ll", fin=False)
        + frame(CONTINUATION, b"o")
    )
    # The ping interleaved with the fragments comes out first.
    assert proto.receive_data(data) == [PingReceived(b"p"), "hello"]
    assert proto.receive_data(frame(BINARY, b"a", fin=False)) == []
    assert proto.receive_data(frame(CONTINUATION, b"b")) == [b"ab"]


def test_fragments_split_across_reads() -> None:
    proto = server_protocol()
    data = frame(TEXT, b"abc", fin=False) + frame(CONTINUATION, b"def")
    out = []
    for i in range(len(data)):
        out += proto.receive_data(data[i : i + 1])
    assert out == ["abcdef"]


def test_size_limit_counts_utf8_bytes_not_characters() -> None:
    # 40 characters, 120 bytes: over a 100-byte limit.
    proto = server_protocol(100)
    [failure] = proto.receive_data(frame(TEXT, ("€" * 40).encode()))
    assert failure == Failure(1009, "message larger than 100 bytes", parser_usable=True)
    proto = server_protocol(100)
    assert proto.receive_data(frame(TEXT, ("€" * 33).encode())) == ["€" * 33]


def test_size_limit_counts_all_fragments() -> None:
    proto = server_protocol(100)
    data = frame(BINARY, b"a" * 60, fin=False) + frame(CONTINUATION, b"b" * 60)
    [failure] = proto.receive_data(data)
    assert isinstance(failure, Failure)
    assert failure.code == 1009
    # The rest of the refused message is skipped; the next one is fine.
    proto2 = server_protocol(100)
    data = frame(BINARY, b"a" * 60, fin=False) + frame(CONTINUATION, b"b" * 50, fin=False)
    assert proto2.receive_data(data)[0].code == 1009  # type: ignore[union-attr]
    assert proto2.receive_data(frame(CONTINUATION, b"c" * 50)) == []
    assert proto2.receive_data(frame(PING)) == [PingReceived(b"")]


def test_no_limit() -> None:
    proto = server_protocol(None)
    assert proto.receive_data(frame(BINARY, b"x" * 70000)) == [b"x" * 70000]


def test_close_frame_versus_parse_failure() -> None:
    proto = server_protocol()
    assert proto.receive_data(frame(CLOSE, close_payload(1001, "away"))) == [
        CloseReceived(1001, "away")
    ]
    proto = server_protocol()
    [failure] = proto.receive_data(frame(0x3, b""))  # reserved opcode
    assert isinstance(failure, Failure)
    assert failure.code == 1002
    assert not failure.parser_usable
    assert proto.dead
    assert proto.receive_data(frame(TEXT, b"ignored")) == []


def test_invalid_utf8_is_1007() -> None:
    proto = server_protocol()
    [failure] = proto.receive_data(frame(TEXT, b"\xff\xfe"))
    assert isinstance(failure, Failure)
    assert failure.code == 1007


def test_pong_and_encoding() -> None:
    proto = server_protocol()
    assert proto.receive_data(frame(0xA, b"x")) == [PongReceived(b"x")]
    assert proto.encode_message("hi") == b"\x81\x02hi"
    assert proto.encode_message(memoryview(b"hi")) == b"\x82\x02hi"
    with pytest.raises(TypeError):
        proto.encode_message(1.5)  # type: ignore[arg-type]
    assert proto.encode_close(1005, "") == b"\x88\x00"


# -- over the wire -----------------------------------------------------------


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([frame(TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80")], 1007),
        ([frame(TEXT, b"ok", fin=False), frame(CONTINUATION, b"\xc0\xaf")], 1007),
        ([frame(TEXT, b"unmasked", mask=False)], 1002),
        ([frame(TEXT, b"rsv", rsv=0b100)], 1002),
        ([frame(0xB, b"")], 1002),
        ([frame(CONTINUATION, b"orphan")], 1002),
        ([frame(TEXT, b"a", fin=False), frame(TEXT, b"b")], 1002),
        ([frame(PING, b"x", fin=False)], 1002),
        ([frame(PING, b"x" * 126)], 1002),
        ([frame(CLOSE, b"\x03")], 1002),
        ([frame(CLOSE, close_payload(1004))], 1002),
        ([frame(CLOSE, close_payload(1000) + b"\xff")], 1007),
        ([frame(BINARY, b"x" * 2000)], 1009),
        ([frame(TEXT, "€".encode() * 400)], 1009),
        ([frame(BINARY, b"x" * 800, fin=False), frame(CONTINUATION, b"x" * 800)], 1009),
    ],
    ids=[
        "bad-utf8",
        "bad-utf8-fragment",
        "unmasked",
        "reserved-bit",
        "reserved-opcode",
        "orphan-continuation",
        "missing-continuation",
        "fragmented-ping",
        "big-ping",
        "one-byte-close",
        "reserved-close-code",
        "bad-utf8-close-reason",
        "too-big",
        "too-big-in-utf8-bytes",
        "too-big-fragmented",
    ],
)
async def test_bad_input_gets_the_right_close_code(
    nursery: trio.Nursery, frames: list[bytes], code: int
) -> None:
    async def drain(ws: trio_ws.WebSocket) -> None:
        async for _ in ws:
            pass

    recorder = Recorder(drain)
    server = await start_server(nursery, recorder, max_message_size=1000)
    raw = await RawClient.connect(server.port)
    for data in frames:
        await raw.send(data)
    got = await raw.until_close()
    assert got is not None
    assert got[0] == code
    # Answer like a well-behaved peer (the server may not wait for it).
    try:
        await raw.send(frame(CLOSE, close_payload(code)))
    except trio.BrokenResourceError:
        pass
    # The server then ends the TCP connection.
    assert await raw.next_event() is None
    await raw.aclose()
    info = await recorder.closed()
    assert info.code == code
    assert info.initiator == "local"
    assert info.cause


async def test_message_too_big_is_a_clean_close(nursery: trio.Nursery) -> None:
    async def receive_once(ws: trio_ws.WebSocket) -> None:
        with pytest.raises(trio_ws.ConnectionClosed):
            await ws.receive()

    recorder = Recorder(receive_once)
    server = await start_server(nursery, recorder, max_message_size=10)
    async with trio_ws.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        await ws.send("x" * 11)
        with pytest.raises(trio_ws.ConnectionClosed) as info:
            await ws.receive()
        assert info.value.code == 1009
        assert info.value.by_peer
    reason = "message larger than 10 bytes"
    assert await recorder.closed() == trio_ws.CloseInfo(1009, reason, "local", reason)


async def test_peer_close_without_code_is_1005(nursery: trio.Nursery) -> None:
    recorder = Recorder()
    server = await start_server(nursery, recorder)
    raw = await RawClient.connect(server.port)
    await raw.send(frame(CLOSE))
    # The reply to an empty close frame is an empty close frame.
    assert await raw.until_close() == (1005, "")
    await raw.aclose()
    info = await recorder.closed()
    assert info.code == 1005
    assert info.by_peer
