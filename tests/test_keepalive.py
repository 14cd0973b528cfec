"""Keepalive: pings that catch dead peers, including when our writes are stuck."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio
import trio.testing
from conftest import Firehose, Pair, Recorder, start_server, url_of
from rawpeer import RawClient

import trio_ws

FAST = {"ping_interval": 1, "ping_timeout": 1, "close_timeout": 1}


def shrink(sock: Any, size: int = 4096) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


async def test_keepalive_measures_latency(
    pair_factory: Any, autojump_clock: trio.testing.MockClock
) -> None:
    pair: Pair = await pair_factory(ping_interval=1, server_options={"ping_interval": None})
    assert pair.client.latency is None
    await trio.sleep(1.5)
    assert pair.client.latency is not None
    assert pair.client.latency < 0.5
    assert pair.server.latency is None  # keepalive off on that side
    rtt = await pair.server.ping()
    assert pair.server.latency == rtt


async def test_keepalive_off(pair_factory: Any, autojump_clock: trio.testing.MockClock) -> None:
    pair: Pair = await pair_factory(ping_interval=None, server_options={"ping_interval": None})
    await trio.sleep(100)
    assert pair.client.latency is None
    assert not pair.client.closed


async def test_silent_peer_is_closed_1011(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    recorder = Recorder()
    server = await start_server(nursery, recorder, **FAST)
    raw = await RawClient.connect(server.port)  # completes the handshake, then never reads
    ws = await recorder.connection()
    start = trio.current_time()
    info = await recorder.closed()
    elapsed = trio.current_time() - start
    assert info.code == 1011
    assert info.reason == "keepalive timeout"
    assert info.initiator == "local"
    assert info.cause == "keepalive timeout: no pong within 1 s"
    # Ping after 1 s, no pong by 2 s, close frame written, no reply by 3 s.
    assert elapsed == pytest.approx(3, abs=0.1)
    assert ws.closed
    await raw.aclose()


async def test_stalled_writer_is_closed_in_bounded_time(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The peer stops reading while the server keeps sending: the server's
    writes block (full TCP window) and the keepalive ping cannot even be
    written. The connection must still end within interval + timeout +
    close_timeout (+1 s)."""
    firehose = Firehose()
    recorder = Recorder(firehose)
    server = await start_server(nursery, recorder, **FAST)
    raw = await RawClient.connect(server.port)
    shrink(raw.stream.socket)
    shrink((await recorder.connection())._stream.socket)
    start = trio.current_time()
    info = await recorder.closed()
    elapsed = trio.current_time() - start
    assert elapsed <= 1 + 1 + 1 + 1
    assert info.code == 1011
    assert info.cause == "keepalive timeout: no pong within 1 s"
    # The blocked send was released with the close's explanation.
    assert firehose.stopped_by is not None
    assert firehose.stopped_by.info == info
    assert firehose.sent < 100  # the first 64 KiB may already block on a 4 KiB buffer
    await raw.aclose()


async def test_paused_reading_is_not_a_dead_peer(
    pair_factory: Any, autojump_clock: trio.testing.MockClock
) -> None:
    """Our application stops receiving: the queue fills, reading stops, and the
    peer's pongs are stuck behind unread messages. That must not look like a
    keepalive timeout on our side. (The sending side's own keepalive would
    rightly treat us as a stalled peer: it is switched off here.)"""
    pair: Pair = await pair_factory(max_queue=2, server_options={"ping_interval": None}, **FAST)
    message = b"m" * 20000
    count = 300  # about 6 MB: the kernel buffers hold it, the sender never blocks long

    async def flood() -> None:
        for _ in range(count):
            await pair.server.send(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood)
        await trio.sleep(20)  # twenty keepalive intervals without receiving
        assert pair.client._reader.paused
        assert not pair.client.closed
        for _ in range(count):
            assert await pair.client.receive() == message
    # The pongs behind those messages came in: keepalive works as before.
    await trio.sleep(3)
    assert pair.client.latency is not None
    assert not pair.client.closed
    assert not pair.server.closed


async def test_keepalive_options_are_validated() -> None:
    with pytest.raises(ValueError, match="ping_interval"):
        trio_ws.Options(ping_interval=0)
    with pytest.raises(ValueError, match="ping_timeout"):
        trio_ws.Options(ping_timeout=-1)
    assert trio_ws.Options(ping_interval=None, ping_timeout=None).ping_seconds == float("inf")


async def test_keepalive_survives_a_long_idle_connection(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(nursery, **FAST)
    async with trio_ws.connect(url_of(server), **FAST) as ws:
        await trio.sleep(60)
        assert not ws.closed
        await ws.send("still alive")
        assert await ws.receive() == "still alive"
