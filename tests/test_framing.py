"""The copy-free framing paths equal wsproto's own, byte for byte or event
for event, and are the ones our connections use."""

from __future__ import annotations

import random
import struct
from collections import deque
from typing import Any

import pytest
import trio
from conftest import Pair, Recorder, start_server
from rawpeer import RawClient, frame
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.frame_protocol import Buffer

import trio_ws
from trio_ws._test_hooks import copy_free_reading
from trio_ws._wire.events import CloseReceived, PingReceived
from trio_ws._wire.framing import (
    SMALL,
    FrameBuffer,
    frame_data,
    install_buffer,
    slim_event_queue,
    whole_messages,
)
from trio_ws._wire.protocol import Protocol

SIZES = [0, 1, 125, 126, 127, SMALL - 1, SMALL, 65535, 65536, 65537, 200_003]


def _joined(frames: bytes | list[Any]) -> bytes:
    return b"".join(bytes(piece) for piece in frames) if isinstance(frames, list) else frames


def _messages(size: int) -> list[str | bytes | bytearray | memoryview]:
    data = random.Random(size).randbytes(size)
    text = ("héllo wörld ✓ " * (size // 16 + 1))[:size]
    return [data, bytearray(data), memoryview(data), text]


@pytest.mark.parametrize("size", SIZES)
def test_server_frames_equal_wsproto(size: int) -> None:
    for message in _messages(size):
        event = TextMessage(message) if isinstance(message, str) else BytesMessage(bytes(message))
        expected = Connection(ConnectionType.SERVER).send(event)
        assert _joined(frame_data(message, client=False, frame_size=None)) == expected


def _frames(wire: bytes) -> list[tuple[int, bool, bool, bytes]]:
    """(opcode, fin, masked, payload unmasked) of each frame on ``wire``."""
    out = []
    while wire:
        first, second = wire[0], wire[1]
        length, at = second & 0x7F, 2
        if length == 126:
            (length,), at = struct.unpack("!H", wire[2:4]), 4
        elif length == 127:
            (length,), at = struct.unpack("!Q", wire[2:10]), 10
        masked = bool(second & 0x80)
        payload = wire[at : at + length]
        if masked:
            key, payload = wire[at : at + 4], wire[at + 4 : at + 4 + length]
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            at += 4
        out.append((first & 0x0F, bool(first & 0x80), masked, payload))
        wire = wire[at + length :]
    return out


@pytest.mark.parametrize("size", [0, 5, 126, SMALL, 70_000])
@pytest.mark.parametrize("frame_size", [None, 1000, 4096])
def test_client_frames_are_masked_and_decode(size: int, frame_size: int | None) -> None:
    for message in _messages(size):
        wire = _joined(frame_data(message, client=True, frame_size=frame_size))
        frames = _frames(wire)
        assert all(masked for _, _, masked, _ in frames)
        expected = message.encode() if isinstance(message, str) else bytes(message)
        assert b"".join(payload for *_, payload in frames) == expected
        # wsproto, as a server, reads them back as the same message.
        server = Connection(ConnectionType.SERVER)
        server.receive_data(wire)
        pieces = [event.data for event in server.events()]
        assert (pieces and type(pieces[0])(pieces[0][:0]).join(pieces)) == (
            message if isinstance(message, str) else expected
        ) or size == 0


def test_split_frames_opcodes_and_lengths() -> None:
    text = "ünïcødé" * 500  # 3500 characters, 5500 bytes: splits fall inside characters
    frames = _frames(_joined(frame_data(text, client=False, frame_size=1000)))
    assert [(opcode, fin, len(payload)) for opcode, fin, _, payload in frames] == [
        (0x1, False, 1000),
        *[(0x0, False, 1000)] * 4,
        (0x0, True, 500),
    ]
    assert b"".join(payload for *_, payload in frames).decode() == text
    # Each client frame has a mask key of its own.
    wire = _joined(frame_data(b"x" * 3000, client=True, frame_size=1000))
    assert len({wire[i + 4 : i + 8] for i in range(0, len(wire), 1008)}) == 3


def test_frame_data_refuses_other_types() -> None:
    with pytest.raises(TypeError, match="not int"):
        frame_data(12, client=False, frame_size=None)  # type: ignore[arg-type]


def _random_wire(rng: random.Random) -> tuple[bytes, list[object]]:
    """Client frames (fragmented messages, pings, a close at the end) and
    what a server should make of them."""
    client = Connection(ConnectionType.CLIENT)
    wire, expected = b"", []
    for _ in range(rng.randrange(1, 30)):
        kind = rng.random()
        if kind < 0.15:
            payload = rng.randbytes(rng.randrange(0, 126))
            wire += client.send(Ping(payload))
            expected.append(PingReceived(payload))
            continue
        size = rng.choice([0, 3, 125, 126, 4000, 70_000, 300_000])
        message: str | bytes = (
            rng.randbytes(size) if kind < 0.6 else "".join(rng.choice("aé✓") for _ in range(size))
        )
        cuts = sorted(rng.sample(range(1, size), min(3, size - 1))) if size > 1 else []
        pieces = [message[a:b] for a, b in zip([0, *cuts], [*cuts, size], strict=True)]
        for i, piece in enumerate(pieces or [message]):
            event = TextMessage if isinstance(message, str) else BytesMessage
            last = i == len(pieces or [message]) - 1
            wire += client.send(event(piece, message_finished=last))  # type: ignore[arg-type]
            if rng.random() < 0.2 and not last:
                wire += client.send(Ping(b"between"))
                expected.append(PingReceived(b"between"))
        expected.append(message)
    wire += client.send(CloseConnection(1000, "bye"))
    expected.append(CloseReceived(1000, "bye"))
    return wire, expected


@pytest.mark.parametrize("seed", range(12))
def test_frame_buffer_parses_like_wsproto_buffer(seed: int) -> None:
    rng = random.Random(seed)
    wire, expected = _random_wire(rng)
    results = []
    for buffered in (True, False):
        connection = Connection(ConnectionType.SERVER)
        protocol = Protocol(connection, max_message_size=None)
        decoder_buffer = connection._proto._frame_decoder.buffer  # type: ignore[attr-defined]
        assert isinstance(decoder_buffer, FrameBuffer)
        if not buffered:
            connection._proto._frame_decoder.buffer = Buffer()  # type: ignore[attr-defined]
        got: list[object] = []
        at = 0
        while at < len(wire):
            step = rng.choice([1, 2, 7, 14, 1000, 65536, 126_976, 400_000])
            got.extend(protocol.receive_data(wire[at : at + step]))
            at += step
        results.append(got)
    assert results[0] == results[1] == expected


def _mostly_whole_wire(rng: random.Random, to_server: bool) -> bytes:
    """Frames as a peer sends them to a server (masked) or to a client: mostly
    whole messages, some fragmented, pings between, sometimes one frame that
    breaks a rule, a close at the end."""
    wire = b""
    broken = rng.random() < 0.7
    count = rng.randrange(1, 25)
    bad_at = rng.randrange(count) if broken else -1
    for i in range(count):
        if i == bad_at:
            wire += rng.choice(
                [
                    # a length that is not minimally encoded (126 for 5 bytes)
                    bytes([0x82, (0x80 if to_server else 0) | 126, 0, 5])
                    + (b"\0\0\0\0" if to_server else b"")
                    + b"12345",
                    frame(0x1, b"\xff\xfe not UTF-8", mask=to_server),
                    frame(0x1, b"ok\xe2\x82", mask=to_server),  # cut character
                    frame(0x2, b"masked the wrong way", mask=not to_server),
                    frame(0x2, b"rsv bit", rsv=0b010, mask=to_server),
                    frame(0x3, b"reserved opcode", mask=to_server),
                    frame(0x0, b"continuation of nothing", mask=to_server),
                    frame(0x2, bytes(5000), mask=to_server),  # over the 4096-byte limit
                ]
            )
            continue
        kind = rng.random()
        if kind < 0.15:
            wire += frame(0x9, rng.randbytes(rng.randrange(0, 126)), mask=to_server)
            continue
        size = rng.choice([0, 1, 3, 125, 126, 127, 4000, 4096])
        payload = (
            rng.randbytes(size)
            if kind < 0.55
            else "".join(rng.choice("aé✓") for _ in range(size)).encode()[:size]
        )
        opcode = 0x2 if kind < 0.55 else 0x1
        if opcode == 0x1:
            payload = payload.decode("utf-8", "ignore").encode()
        if kind > 0.9 and len(payload) > 1:
            cut = rng.randrange(1, len(payload))
            wire += frame(opcode, payload[:cut], fin=False, mask=to_server)
            wire += frame(0x0, payload[cut:], mask=to_server)
        else:
            wire += frame(opcode, payload, mask=to_server)
    return wire + frame(0x8, struct.pack("!H", 1000) + b"bye", mask=to_server)


@pytest.mark.parametrize("seed", range(40))
def test_whole_message_fast_path_agrees_with_wsproto(seed: int) -> None:
    """What the connection makes of any stream is the same with the fast path
    for whole messages, without it, and with wsproto's own buffer."""
    rng = random.Random(seed)
    side = ConnectionType.SERVER if seed % 2 else ConnectionType.CLIENT
    wire = _mostly_whole_wire(rng, to_server=side is ConnectionType.SERVER)
    steps = [rng.choice([1, 3, 10, 200, 5000, 126_976]) for _ in range(len(wire))]
    if seed < 4:  # one read of whole messages first
        wire = frame(0x2, b"first", mask=side is ConnectionType.SERVER) + wire
        steps[0] = rng.randrange(len(wire) // 2, len(wire) + 1)
    results = []
    fast_reads = 0
    for variant in ("fast", "wsproto parses", "wsproto buffer"):
        connection = Connection(side)
        protocol = Protocol(connection, max_message_size=4096)
        if variant != "fast":
            protocol._between_messages = None  # type: ignore[attr-defined]
        if variant == "wsproto buffer":
            connection._proto._frame_decoder.buffer = Buffer()  # type: ignore[attr-defined]
        got: list[object] = []
        at = 0
        for step in steps:
            if at >= len(wire):
                break
            chunk = wire[at : at + step]
            if variant == "fast" and protocol._between_messages():  # type: ignore[attr-defined]
                fast_reads += bool(whole_messages(chunk, side is ConnectionType.SERVER, 4096)[0])
            got.extend(protocol.receive_data(chunk))
            at += step
        results.append(got)
    assert results[0] == results[1] == results[2]
    assert results[0], "every stream ends in something"
    if seed < 4:
        assert fast_reads, "the fast path was used"


def test_fast_path_leaves_doubtful_frames_to_wsproto() -> None:
    masked = frame(0x2, b"fine")
    assert whole_messages(masked * 3, True, None) == ([b"fine"] * 3, len(masked) * 3)
    for stop in (
        frame(0x9, b"ping"),  # control frame
        frame(0x2, b"part", fin=False),  # fragment
        frame(0x1, b"\xc3", mask=True),  # invalid UTF-8
        frame(0x2, b"compressed?", rsv=0b100),  # RSV1
        frame(0x2, b"unmasked", mask=False),  # a client must mask
        frame(0x2, bytes(10)),  # over max_size below
        bytes([0x82, 0xFE, 0, 5]) + b"\0\0\0\0" + b"12345",  # non-minimal length
        bytes([0x82, 0xFF]) + bytes(6) + b"\xff\xff" + bytes(4),  # 64-bit length < 65536
    ):
        assert whole_messages(masked + stop + masked, True, 9) == ([b"fine"], len(masked))
    for cut in range(1, len(masked)):  # an incomplete frame
        assert whole_messages(masked + masked[:cut], True, 9) == ([b"fine"], len(masked))
    unmasked = frame(0x1, "✓".encode(), mask=False)
    assert whole_messages(unmasked + masked, False, None) == (["✓"], len(unmasked))


def test_install_buffer_keeps_bytes_already_fed() -> None:
    client = Connection(ConnectionType.CLIENT)
    server = Connection(ConnectionType.SERVER)
    server.receive_data(client.send(BytesMessage(b"early")))  # as trailing handshake data
    assert install_buffer(server) is not None
    assert [event.data for event in server.events()] == [b"early"]
    assert install_buffer(object()) is None  # type: ignore[arg-type]  # not wsproto: left alone


async def test_connections_use_the_copy_free_paths(pair_factory: Any) -> None:
    pair: Pair = await pair_factory(compression=None)
    for ws in (pair.client, pair.server):
        # wsproto decodes from our FrameBuffer; whole messages bypass wsproto.
        assert copy_free_reading(ws) is True
    compressed: Pair = await pair_factory()  # whole compressed messages bypass wsproto too
    assert copy_free_reading(compressed.client) is True
    data = random.Random(1).randbytes(300_000)
    await pair.client.send(data)
    assert await pair.server.receive() == data
    await pair.server.send(data)
    assert await pair.client.receive() == data


async def test_frame_size_splits_on_the_wire(nursery: trio.Nursery) -> None:
    recorder = Recorder()
    server = await start_server(nursery, recorder, frame_size=1000, compression=None)
    raw = await RawClient.connect(server.port)
    ws = await recorder.connection()
    await ws.send(b"y" * 2500)
    await ws.send("small")
    wire = b""
    while len(wire) < 2 * 1002 + 502 + 7:
        wire += await raw.stream.receive_some()
    assert [(op, fin, len(p)) for op, fin, _, p in _frames(wire)] == [
        (0x2, False, 1000),
        (0x0, False, 1000),
        (0x0, True, 500),
        (0x1, True, 5),
    ]
    await raw.aclose()


async def test_frame_size_none_sends_one_frame(nursery: trio.Nursery) -> None:
    recorder = Recorder()
    server = await start_server(nursery, recorder, frame_size=None, compression=None)
    raw = await RawClient.connect(server.port)
    ws = await recorder.connection()
    size = 3 << 20
    async with trio.open_nursery() as inner:
        inner.start_soon(ws.send, b"z" * size)
        wire = b""
        while len(wire) < size + 10:
            wire += await raw.stream.receive_some()
    assert [(op, fin, len(p)) for op, fin, _, p in _frames(wire)] == [(0x2, True, size)]
    await raw.aclose()
    with pytest.raises(ValueError, match="frame_size"):
        trio_ws.Options(frame_size=0)


def test_slim_event_queue_still_reports_a_lost_stream() -> None:
    """The list that replaces wsproto's event deque does what wsproto asks of
    it, should anything ever call receive_data(None)."""
    connection = Connection(ConnectionType.SERVER)
    slim_event_queue(connection)
    assert type(connection._events) is not deque  # type: ignore[attr-defined]
    connection.receive_data(None)
    events = list(connection.events())
    assert len(events) == 1
    assert isinstance(events[0], CloseConnection)
    assert events[0].code == 1006
    # Left alone when it is not the empty deque expected.
    other = Connection(ConnectionType.SERVER)
    other._events = ["something"]  # type: ignore[attr-defined]
    slim_event_queue(other)
    assert other._events == ["something"]  # type: ignore[attr-defined]
