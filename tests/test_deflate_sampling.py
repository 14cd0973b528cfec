"""Binary messages that look incompressible go out uncompressed
(``Deflate.skip_incompressible``): on the whole-message fast path, on
wsproto's path, in broadcasts; text and compressible binary data still go
out compressed, and every kind arrives intact, also at websockets."""

from __future__ import annotations

import array
import asyncio
import base64
import functools
import json
import queue
import random
import struct
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import Recorder, echo, needs_websockets_trio, start_server, url_of
from rawpeer import BINARY, RawClient, frame
from test_deflate_fast_paths import _bytes, _pair
from wsproto.extensions import PerMessageDeflate

import trio_ws
from trio_ws._conn.delivery import Framings
from trio_ws._test_hooks import negotiated_deflate
from trio_ws._wire.deflate import SAMPLE_FROM, worth_deflating
from trio_ws._wire.protocol import deflate_key

_RNG = random.Random(2024)
WORDS = (  # noqa: SIM905 - a sentence's words
    "the quick brown fox jumps over lazy dog server client message frame window "
    "compress deflate socket stream text binary random data packet header length "
    "connection close ping pong room user send receive queue broadcast chat hello"
).split()
CHINESE = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同"
    "工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起"
    "小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平"
)


def _english(size: int) -> bytes:
    sentences: list[str] = []
    while sum(map(len, sentences)) + len(sentences) < size:
        sentence = " ".join(_RNG.choice(WORDS) for _ in range(_RNG.randint(4, 14)))
        sentences.append(sentence.capitalize() + ".")
    return " ".join(sentences).encode()[:size]


def _json(size: int) -> bytes:
    records = [
        {
            "id": _RNG.randrange(10**9),
            "user": _RNG.choice(WORDS),
            "balance": round(_RNG.uniform(-1000, 100000), 2),
            "active": _RNG.random() < 0.7,
            "note": " ".join(_RNG.choice(WORDS) for _ in range(6)),
        }
        for _ in range(size // 60)
    ]
    return json.dumps(records).encode()[:size]


def _chinese(size: int) -> bytes:
    text = "".join(
        _RNG.choice(CHINESE) + ("\uff0c" if _RNG.random() < 0.08 else "") for _ in range(size // 3)
    )
    return text.encode()[:size].decode(errors="ignore").encode()  # whole characters


def _zipped(size: int) -> bytes:
    """Real compressed data: this library's source, deflated."""
    package = Path(trio_ws.__file__).parent
    source = b"".join(path.read_bytes() for path in sorted(package.rglob("*.py")))
    zipped = zlib.compress(source, 6)
    assert len(zipped) >= size
    return zipped[:size]


RANDOM = random.Random(21).randbytes(65536)
ZIPPED = _zipped(65536)
NOISE = array.array("d", (_RNG.gauss(0, 1) for _ in range(8192))).tobytes()
TEXT = _english(65536)
JSON = _json(65536)
BASE64 = base64.b64encode(RANDOM)[:65536]
HANZI = _chinese(65536)
COUNTERS = array.array("i", (_RNG.randrange(1000) for _ in range(16384))).tobytes()
RECORDS = b"".join(
    struct.pack(
        "<Id12s", _RNG.randrange(10**6), _RNG.uniform(0, 1000), _RNG.choice(WORDS).encode()
    )
    for _ in range(65536 // 24 + 1)
)[:65536]

INCOMPRESSIBLE = {"random": RANDOM, "zlib output": ZIPPED}
COMPRESSIBLE = {
    "English text": TEXT,
    "JSON": JSON,
    "base64": BASE64,
    "UTF-8 Chinese": HANZI,
    "int32 counters": COUNTERS,
    "binary records": RECORDS,
}


# -- the sample ------------------------------------------------------------------


@pytest.mark.parametrize("size", [SAMPLE_FROM, 4096, 65536])
@pytest.mark.parametrize("name", [*INCOMPRESSIBLE, *COMPRESSIBLE])
def test_the_sample_tells_incompressible_data_apart(name: str, size: int) -> None:
    worth = name in COMPRESSIBLE
    data = {**INCOMPRESSIBLE, **COMPRESSIBLE}[name]
    size = min(size, len(data))  # the Chinese text ends on a whole character
    for start in {0, min(1000, len(data) - size), len(data) - size}:
        piece = data[start : start + size]
        assert worth_deflating(piece) is worth
        # ...which is what deflate says: it saves a lot, or next to nothing.
        compressor = zlib.compressobj(6, zlib.DEFLATED, -12, 5)
        ratio = len(compressor.compress(piece) + compressor.flush()) / len(piece)
        assert ratio < 0.85 if worth else ratio > 0.99


def test_short_and_odd_buffers() -> None:
    assert worth_deflating(RANDOM[: SAMPLE_FROM - 1])  # not sampled: deflated
    assert not worth_deflating(bytearray(RANDOM))
    assert not worth_deflating(memoryview(RANDOM))
    # A typed view is sampled by its bytes, not its items. Noisy floats
    # (which deflate shrinks by 2%) look incompressible too.
    assert not worth_deflating(memoryview(array.array("d", NOISE)))
    assert not worth_deflating(NOISE)
    assert worth_deflating(memoryview(array.array("i", COUNTERS)))
    # A view that is not contiguous is left to deflate, as before.
    view = memoryview(array.array("d", NOISE))[::2]
    assert not view.c_contiguous
    assert worth_deflating(view)


def test_the_setting_is_validated_and_in_the_frame_key() -> None:
    for bad in (1, "yes", None):
        with pytest.raises(ValueError, match="skip_incompressible"):
            trio_ws.Deflate(skip_incompressible=bad)  # type: ignore[arg-type]
    assert trio_ws.Deflate().skip_incompressible is True
    keys = set()
    for skip in (True, False):
        _, server = _pair(trio_ws.Deflate(skip_incompressible=skip))
        keys.add(server.frame_key)
        assert server.frame_key == deflate_key(12, 6, 5, 16, skip)
    assert len(keys) == 2


# -- framing a whole message -----------------------------------------------------


@pytest.mark.parametrize("name", list(INCOMPRESSIBLE))
def test_incompressible_binary_goes_out_plain_and_arrives_intact(name: str) -> None:
    data = INCOMPRESSIBLE[name]
    client, server = _pair()
    for sender, receiver in ((client, server), (server, client)):
        for message in (data, bytearray(data), memoryview(data)):
            wire = _bytes(sender.encode_message(message))
            assert wire[0] == 0x82  # FIN, RSV1 clear, binary
            assert len(wire) == len(_bytes(sender.encode_message(data, compress=False)))
            assert receiver.receive_data(wire) == [data]
    # The server's frame is exactly that of compress=False.
    assert _bytes(server.encode_message(data)) == _bytes(server.encode_message(data, False))


@pytest.mark.parametrize("name", list(COMPRESSIBLE))
def test_compressible_data_is_still_compressed(name: str) -> None:
    data = COMPRESSIBLE[name]
    client, server = _pair()
    for sender, receiver in ((client, server), (server, client)):
        wire = _bytes(sender.encode_message(data))
        assert wire[0] == 0xC2  # RSV1 set
        assert len(wire) < 0.8 * len(data)
        assert receiver.receive_data(wire) == [data]
        if name != "int32 counters" and name != "binary records":
            text = data.decode()
            wire = _bytes(sender.encode_message(text))
            assert wire[0] == 0xC1
            assert len(wire) < 0.8 * len(data)
            assert receiver.receive_data(wire) == [text]


def test_text_is_never_sampled() -> None:
    # Latin-1 decoding of random bytes: 200 distinct characters in any
    # sample, but as UTF-8 (two bytes for half of them) it compresses.
    text = RANDOM.decode("latin-1")
    client, server = _pair()
    for sender, receiver in ((client, server), (server, client)):
        assert sender.deflate is not None
        assert not sender.deflate.leaves_uncompressed(text)
        wire = _bytes(sender.encode_message(text))
        assert wire[0] == 0xC1
        assert len(wire) < len(text.encode())
        assert receiver.receive_data(wire) == [text]


def test_with_the_setting_off_everything_is_compressed() -> None:
    off = trio_ws.Deflate(skip_incompressible=False)
    client, server = _pair(off, off)
    for sender, receiver in ((client, server), (server, client)):
        for data in INCOMPRESSIBLE.values():
            wire = _bytes(sender.encode_message(data))
            assert wire[0] == 0xC2
            assert len(wire) > len(data)  # deflate's stored blocks: bigger
            assert receiver.receive_data(wire) == [data]


def test_skipping_leaves_the_compression_context_alone() -> None:
    # Both sides keep their context: the frames of the compressible messages
    # around an incompressible one are those of the same stream without it.
    keep = trio_ws.Deflate(server_no_context_takeover=False)
    _, server = _pair(keep)
    _, twin = _pair(keep)
    client, _ = _pair(keep)
    first, second = TEXT[:3000], TEXT[:2900] + b"!"
    ours = [_bytes(server.encode_message(m)) for m in (first, RANDOM, second)]
    theirs = [_bytes(twin.encode_message(m)) for m in (first, second)]
    assert ours[0] == theirs[0]
    assert ours[1][0] == 0x82
    assert ours[2] == theirs[1]
    assert len(ours[2]) < len(ours[0]) // 10  # refers back to the first message
    assert client.receive_data(b"".join(ours)) == [first, RANDOM, second]


def test_incompressible_message_split_by_frame_size() -> None:
    client, server = _pair()
    for sender, receiver in ((client, server), (server, client)):
        frames = sender.encode_message(RANDOM, frame_size=16384)
        assert isinstance(frames, list)
        wire = _bytes(frames)
        assert wire[0] == 0x02  # first of several frames, RSV1 clear
        assert receiver.receive_data(wire) == [RANDOM]
        frames = sender.encode_message(JSON, frame_size=16384)  # compressed, fragmented
        wire = _bytes(frames)
        assert wire[0] == 0x42  # RSV1 on the first frame, not final
        assert receiver.receive_data(wire) == [JSON]


# -- over TCP ----------------------------------------------------------------------


async def _read_frame(raw: RawClient) -> tuple[int, bytes]:
    """The first byte and the payload of the next (unmasked) frame from a
    server, read off the socket without wsproto."""
    data = b""

    async def need(count: int) -> None:
        nonlocal data
        while len(data) < count:
            chunk = await raw.stream.receive_some(65536)
            assert chunk
            data += chunk

    await need(2)
    length, start = data[1] & 0x7F, 2
    if length == 126:
        await need(4)
        length, start = struct.unpack("!H", data[2:4])[0], 4
    elif length == 127:
        await need(10)
        length, start = struct.unpack("!Q", data[2:10])[0], 10
    await need(start + length)
    assert len(data) == start + length  # one frame in flight at a time
    return data[0], data[start:]


async def test_server_echo_over_tcp_leaves_random_data_plain(nursery: trio.Nursery) -> None:
    server = await start_server(nursery, echo)
    raw = await RawClient.connect(server.port, extensions=[PerMessageDeflate()])
    assert raw.conn._proto.extensions  # negotiated
    await raw.send(frame(BINARY, RANDOM))  # uncompressed, as RFC 7692 allows
    first, payload = await _read_frame(raw)
    assert (first, payload) == (0x82, RANDOM)
    await raw.send(frame(BINARY, JSON))
    first, payload = await _read_frame(raw)
    assert first == 0xC2
    assert zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff") == JSON
    await raw.aclose()


async def test_client_and_server_over_tcp(nursery: trio.Nursery) -> None:
    recorder = Recorder(echo)
    server = await start_server(nursery, recorder)
    async with trio_ws.connect(url_of(server)) as ws:
        assert negotiated_deflate(ws) is not None
        sent = ws.stats().traffic.bytes_out
        await ws.send(RANDOM)
        assert await ws.receive() == RANDOM
        assert ws.stats().traffic.bytes_out - sent == len(RANDOM) + 14  # masked header
        remote = await recorder.connection()
        assert remote.stats().traffic.bytes_out == len(RANDOM) + 10  # unmasked header
        for data in (JSON, BASE64, HANZI):
            sent = ws.stats().traffic.bytes_out
            await ws.send(data)
            assert await ws.receive() == data
            assert ws.stats().traffic.bytes_out - sent < 0.8 * len(data)
    off = trio_ws.Deflate(skip_incompressible=False)
    async with trio_ws.connect(url_of(server), compression=off) as ws:
        await ws.send(RANDOM)
        assert await ws.receive() == RANDOM
        assert ws.stats().traffic.bytes_out > len(RANDOM) + 100  # compressed: stored blocks


# -- broadcasts ----------------------------------------------------------------------


def test_framings_never_share_frames_across_the_setting() -> None:
    framings = Framings()
    skip, keep = deflate_key(12, 6, 5, 16, True), deflate_key(12, 6, 5, 16, False)
    plain = framings.frame(RANDOM, skip)
    assert plain == framings.plain(RANDOM)  # RSV1 clear: as without the extension
    compressed = framings.frame(RANDOM, keep)
    assert compressed[0] == 0xC2
    assert len(compressed) > len(plain)
    assert framings.keys == 3
    for key in (skip, keep):
        framed = framings.frame(JSON, key)
        assert framed[0] == 0xC2
        assert len(framed) < 0.8 * len(JSON)
    assert framings.frame(TEXT.decode(), skip)[0] == 0xC1


async def test_hub_broadcast_of_random_data_is_plain_and_intact(nursery: trio.Nursery) -> None:
    async with trio_ws.open_hub() as hub:
        members = trio.open_memory_channel[trio_ws.WebSocket](10)

        async def handler(ws: trio_ws.WebSocket) -> None:
            async with hub.register(ws):
                await members[0].send(ws)
                await ws.wait_closed()

        default = await start_server(nursery, handler)
        always = await start_server(
            nursery, handler, compression=trio_ws.Deflate(skip_incompressible=False)
        )
        clients = [await trio_ws.start_connection(nursery, url_of(default)) for _ in range(3)]
        clients.append(await trio_ws.start_connection(nursery, url_of(always)))
        remotes = [await members[1].receive() for _ in range(4)]
        raw = await RawClient.connect(default.port, extensions=[PerMessageDeflate()])
        await members[1].receive()
        for message in (RANDOM, JSON):
            before = [r.stats().traffic.bytes_out for r in remotes]
            assert hub.broadcast(message) == 5
            for ws in clients:
                assert await ws.receive() == message
            first, payload = await _read_frame(raw)
            grew = [r.stats().traffic.bytes_out - b for r, b in zip(remotes, before, strict=True)]
            if message is RANDOM:
                assert (first, payload) == (0x82, RANDOM)
                # The default server's three connections: plain; the other one
                # (skip_incompressible=False): compressed, in stored blocks.
                assert sorted(grew) == [len(RANDOM) + 10] * 3 + [max(grew)]
                assert max(grew) > len(RANDOM) + 100
            else:
                assert first == 0xC2
                assert all(g < 0.8 * len(JSON) for g in grew)
        await raw.aclose()


# -- websockets, asyncio and trio ---------------------------------------------------


def _asyncio_echo_server(ports: queue.Queue[int], stop: threading.Event) -> None:
    from websockets.asyncio.server import serve

    async def echo_handler(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(echo_handler, "127.0.0.1", 0, compression="deflate") as server:
            ports.put(next(iter(server.sockets)).getsockname()[1])
            await asyncio.get_running_loop().run_in_executor(None, stop.wait)

    asyncio.run(main())


def _asyncio_client(url: str, messages: list[bytes]) -> list[Any]:
    from websockets.asyncio.client import connect

    async def main() -> list[Any]:
        async with connect(url, compression="deflate") as ws:
            got = []
            for message in messages:
                await ws.send(message)
                got.append(await ws.recv())
            return got

    return asyncio.run(main())


async def test_websockets_asyncio_both_ways(nursery: trio.Nursery) -> None:
    messages = [RANDOM, JSON, ZIPPED, BASE64, RANDOM[:5000], TEXT]
    server = await start_server(nursery, echo)
    got = await trio.to_thread.run_sync(_asyncio_client, url_of(server), messages)
    assert got == messages
    ports: queue.Queue[int] = queue.Queue()
    stop = threading.Event()
    thread = threading.Thread(target=_asyncio_echo_server, args=(ports, stop))
    thread.start()
    try:
        port = await trio.to_thread.run_sync(functools.partial(ports.get, timeout=10))
        async with trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
            assert negotiated_deflate(ws) is not None
            for message in messages:
                await ws.send(message)
                assert await ws.receive() == message
    finally:
        stop.set()
        await trio.to_thread.run_sync(thread.join)


@needs_websockets_trio
async def test_websockets_trio_both_ways(nursery: trio.Nursery) -> None:
    from websockets.trio.client import connect
    from websockets.trio.server import serve

    messages: list[str | bytes] = [RANDOM, JSON, ZIPPED, TEXT.decode(), RANDOM]
    server = await start_server(nursery, echo)
    async with connect(url_of(server), compression="deflate") as theirs:
        for message in messages:
            await theirs.send(message)
            assert await theirs.recv() == message

    async def echo_handler(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    their_server = await nursery.start(
        functools.partial(serve, echo_handler, 0, host="127.0.0.1", compression="deflate")
    )
    port = their_server.listeners[0].socket.getsockname()[1]
    async with trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
        for message in messages:
            sent = ws.stats().traffic.bytes_out
            await ws.send(message)
            assert await ws.receive() == message
            if message is RANDOM:
                assert ws.stats().traffic.bytes_out - sent == len(RANDOM) + 14
