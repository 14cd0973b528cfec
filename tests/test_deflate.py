"""permessage-deflate: negotiation, interoperability, limits, broadcasts."""

from __future__ import annotations

import functools
import itertools
import random
import tracemalloc
import zlib
from typing import Any

import pytest
import trio
from conftest import Recorder, echo, needs_websockets_trio, start_server, url_of
from rawpeer import BINARY, TEXT, RawClient, frame
from wsproto.extensions import PerMessageDeflate

import trio_ws
from trio_ws._conn import delivery as _delivery
from trio_ws._conn.lifecycle import delivery_of
from trio_ws._test_hooks import holds_compressor, negotiated_deflate

TEXT_MESSAGE = "compress me, compress me, compress me please " * 40
RANDOM = random.Random(5).randbytes(20_000)

SETTINGS = [
    None,
    trio_ws.Deflate(),
    trio_ws.Deflate(server_no_context_takeover=False),
    trio_ws.Deflate(client_no_context_takeover=True, server_max_window_bits=9),
    trio_ws.Deflate(server_max_window_bits=15, client_max_window_bits=15, level=9),
    trio_ws.Deflate(client_max_window_bits=9, memory_level=1, min_size=0),
]


@pytest.mark.parametrize(
    ("server_setting", "client_setting"),
    list(itertools.product(SETTINGS, SETTINGS)),
    ids=lambda s: "off" if s is None else f"{s.server_max_window_bits}-{s.client_max_window_bits}",
)
async def test_every_pairing_of_settings(
    nursery: trio.Nursery, server_setting: Any, client_setting: Any
) -> None:
    server = await start_server(nursery, compression=server_setting)
    async with trio_ws.connect(url_of(server), compression=client_setting) as ws:
        negotiated = negotiated_deflate(ws) is not None
        assert negotiated == (server_setting is not None and client_setting is not None)
        for message in (TEXT_MESSAGE, RANDOM, "tiny", b"", "é" * 3000, TEXT_MESSAGE):
            await ws.send(message)
            assert await ws.receive() == message
        await ws.send_stream([TEXT_MESSAGE, TEXT_MESSAGE])
        assert await ws.receive() == TEXT_MESSAGE * 2
        traffic = ws.stats().traffic
    if negotiated:
        # Two copies of a 1.8 KB repetitive text cost far less than that.
        assert traffic.bytes_in < len(RANDOM) + 3000 * 2 + 2000
    else:
        assert traffic.bytes_in > len(RANDOM) + 2 * len(TEXT_MESSAGE)


async def test_compress_false_sends_uncompressed(nursery: trio.Nursery) -> None:
    recorder = Recorder(echo)
    server = await start_server(nursery, recorder)
    async with trio_ws.connect(url_of(server)) as ws:
        await ws.send(TEXT_MESSAGE, compress=False)
        assert await ws.receive() == TEXT_MESSAGE
        plain = ws.stats().traffic.bytes_out
        await ws.send(TEXT_MESSAGE)
        assert await ws.receive() == TEXT_MESSAGE
        compressed = ws.stats().traffic.bytes_out - plain
    assert plain > len(TEXT_MESSAGE)
    assert compressed < len(TEXT_MESSAGE) // 5


async def test_deflate_bomb_is_refused_with_1009(nursery: trio.Nursery) -> None:
    recorder = Recorder()
    server = await start_server(nursery, recorder, max_message_size=2**20)
    raw = await RawClient.connect(server.port, extensions=[PerMessageDeflate()])
    assert raw.conn._proto.extensions  # negotiated
    # 64 MiB of zeros compress to ~64 KiB.
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = compressor.compress(bytes(64 * 2**20)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    tracemalloc.start()
    try:
        await raw.send(frame(BINARY, bomb[:-4], rsv=0b100))
        got = await raw.until_close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The server inflated at most max_message_size, not 64 MiB.
    assert peak < 8 * 2**20
    assert got is not None
    assert got[0] == 1009
    await raw.aclose()
    info = await recorder.closed()
    assert info.code == 1009
    assert info.cause == "message larger than 1048576 bytes"


async def test_corrupt_compressed_data_is_1007(nursery: trio.Nursery) -> None:
    recorder = Recorder()
    server = await start_server(nursery, recorder)
    raw = await RawClient.connect(server.port, extensions=[PerMessageDeflate()])
    await raw.send(frame(TEXT, b"\xff\xff\xff\xff not deflate", rsv=0b100))
    got = await raw.until_close()
    assert got is not None
    assert got[0] == 1007
    await raw.aclose()
    info = await recorder.closed()
    assert info.reason == "invalid compressed data"
    assert info.cause == "invalid compressed data"


async def test_server_keeps_no_compressor_between_messages(nursery: trio.Nursery) -> None:
    recorder = Recorder(echo)
    server = await start_server(nursery, recorder)
    async with trio_ws.connect(url_of(server)) as ws:
        await ws.send(TEXT_MESSAGE)
        assert await ws.receive() == TEXT_MESSAGE
        remote = await recorder.connection()
        assert negotiated_deflate(remote) is not None
        assert not holds_compressor(remote)  # server_no_context_takeover
        assert negotiated_deflate(ws) is not None
        assert holds_compressor(ws)  # the client keeps its context


async def test_broadcast_is_compressed_once_for_a_group(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    server = await start_server(nursery, recorder)
    clients = [await trio_ws.start_connection(nursery, url_of(server)) for _ in range(3)]
    plain = await trio_ws.start_connection(nursery, url_of(server), compression=None)
    remotes = [await recorder.connection() for _ in range(4)]
    framed = []
    original = _delivery._framer

    def counting(key: Any) -> Any:
        framed.append(key)
        return original(key)

    monkeypatch.setattr(_delivery, "_framer", counting)
    framings = _delivery.Framings()
    message = TEXT_MESSAGE + "broadcast"
    frame_bytes = framings.plain(message)
    for remote in remotes:
        offered = delivery_of(remote).offer(
            message, frame_bytes, len(message), 100, 2**20, framings
        )
        assert offered is _delivery.Outcome.QUEUED
    for ws in [*clients, plain]:
        assert await ws.receive() == message
    # One plain framing, one deflate framing: not one per connection.
    assert sorted(k[0] for k in framed) == ["deflate", "plain"]
    compressed = {remotes[i].stats().traffic.bytes_out for i in range(3)}
    assert len(compressed) == 1  # the same bytes went to the three deflate clients
    assert compressed.pop() < remotes[3].stats().traffic.bytes_out


@needs_websockets_trio
async def test_websockets_client_against_our_server(nursery: trio.Nursery) -> None:
    from websockets.trio.client import connect

    server = await start_server(nursery)
    for compression in ("deflate", None):
        async with connect(url_of(server), compression=compression) as ws:
            for message in (TEXT_MESSAGE, RANDOM, "é" * 2000, b""):
                await ws.send(message)
                assert await ws.recv() == message
            await ws.send([TEXT_MESSAGE, "second fragment"])  # a fragmented message
            assert await ws.recv() == TEXT_MESSAGE + "second fragment"


@needs_websockets_trio
async def test_our_client_against_websockets_server(nursery: trio.Nursery) -> None:
    from websockets.trio.server import serve

    async def echo_handler(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    for compression in ("deflate", None):
        server = await nursery.start(
            functools.partial(serve, echo_handler, 0, host="127.0.0.1", compression=compression)
        )
        port = server.listeners[0].socket.getsockname()[1]
        for setting in SETTINGS:
            async with trio_ws.connect(f"ws://127.0.0.1:{port}/", compression=setting) as ws:
                assert (negotiated_deflate(ws) is not None) == (
                    compression is not None and setting is not None
                )
                for message in (TEXT_MESSAGE, RANDOM, "é" * 2000, b"", TEXT_MESSAGE):
                    await ws.send(message)
                    assert await ws.receive() == message
                await ws.send_stream(iter([TEXT_MESSAGE, "x"]))
                assert await ws.receive() == TEXT_MESSAGE + "x"


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="server_max_window_bits"):
        trio_ws.Deflate(server_max_window_bits=8)
    with pytest.raises(ValueError, match="level"):
        trio_ws.Deflate(level=0)
    with pytest.raises(ValueError, match="memory_level"):
        trio_ws.Deflate(memory_level=10)
    with pytest.raises(ValueError, match="min_size"):
        trio_ws.Deflate(min_size=-1)
    with pytest.raises(TypeError):
        trio_ws.Options(compression="deflate")  # type: ignore[arg-type]
