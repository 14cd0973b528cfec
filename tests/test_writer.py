"""The outgoing side under hostile peers, over real loopback sockets: pongs
owed to a peer that never reads, and end-of-file while frames are still
being written (see trio_ws/_writer.py)."""

from __future__ import annotations

import logging
import socket
import tracemalloc

import pytest
import trio
import trio.testing
from conftest import Recorder, start_server
from rawpeer import PING, RawClient, frame
from wsproto.events import Pong

import trio_ws

#: A ping with the largest payload a control frame may carry.
BIG_PING = frame(PING, b"p" * 125)


async def non_reading_client(port: int) -> RawClient:
    """A raw client whose receive buffer is tiny, so that what the server
    writes to it backs up at once."""
    client = await RawClient.connect(port)
    client.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return client


def shrink_send_buffer(ws: trio_ws.WebSocket) -> None:
    stream = ws._stream
    assert isinstance(stream, trio.SocketStream)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


async def test_pongs_owed_to_a_non_reading_peer_take_constant_memory(
    nursery: trio.Nursery,
) -> None:
    """A client sends pings and never reads: the server keeps one pong to
    write (for the latest ping), not one per ping (it grew by about 240
    bytes a ping)."""
    rec = Recorder()
    server = await start_server(nursery, rec, ping_interval=None)
    client = await non_reading_client(server.port)
    ws = await rec.connection()
    shrink_send_buffer(ws)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(20):
            await client.send(BIG_PING * 1000)
        # A text message after the pings: once the server has it, it has
        # read (and answered) every ping before it.
        await client.send(frame(0x1, b"after the pings"))
        assert await ws.receive() == "after the pings"
        held = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert held < 100_000, f"20,000 unanswered pings held {held} bytes"
    # The pong that is owed answers the latest ping: the client gets pongs
    # once it reads, and the connection still works.
    await client.send(frame(PING, b"last"))
    payloads = []
    with trio.fail_after(5):
        while b"last" not in payloads:
            event = await client.next_event()
            if isinstance(event, Pong):
                payloads.append(bytes(event.payload))
    assert len(payloads) < 1000
    await client.aclose()


async def test_ping_flood_is_closed_by_keepalive_within_its_bound(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The server's own keepalive ping waits behind the pong the flooding,
    non-reading client never takes: the connection is dropped within
    ping_interval + ping_timeout + close_timeout, as docs/keepalive.md says."""
    rec = Recorder()
    server = await start_server(
        nursery, rec, ping_interval=1.0, ping_timeout=1.0, close_timeout=1.0
    )
    client = await non_reading_client(server.port)
    ws = await rec.connection()
    shrink_send_buffer(ws)
    opened = trio.current_time()

    async def flood() -> None:
        try:
            while True:
                await client.send(BIG_PING * 100)
                await trio.sleep(0.05)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    nursery.start_soon(flood)
    info = await rec.closed()
    assert (info.code, info.reason) == (1011, "keepalive timeout")
    assert trio.current_time() - opened <= 3.2
    await client.aclose()


async def test_end_of_file_waits_for_the_frame_being_written(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Pings without reading, then FIN: the server's TCP shutdown used to run
    while its writer task was still sending pongs, and logged an internal
    error (BusyResourceError). Now it waits its turn: no error, and the
    connection is closed within close_timeout."""
    caplog.set_level(logging.DEBUG, "trio_ws")
    rec = Recorder()
    server = await start_server(nursery, rec, ping_interval=None, close_timeout=2.0)
    client = await non_reading_client(server.port)
    ws = await rec.connection()
    shrink_send_buffer(ws)
    for _ in range(50):
        await client.send(BIG_PING * 20)
        await trio.sleep(0.001)
    await client.stream.send_eof()
    info = await rec.closed()
    assert info.code == 1006
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "internal error" not in caplog.text
    await client.aclose()


async def test_end_of_file_after_the_pongs_when_the_peer_reads(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """Same, with a peer that does read after its FIN: it gets every pong the
    server owed, then end-of-file, and the server logs no error."""
    caplog.set_level(logging.DEBUG, "trio_ws")
    rec = Recorder()
    server = await start_server(nursery, rec, ping_interval=None)
    client = await non_reading_client(server.port)
    ws = await rec.connection()
    shrink_send_buffer(ws)
    for _ in range(20):
        await client.send(BIG_PING * 20)
    await client.send(frame(0x1, b"done"))
    assert await ws.receive() == "done"
    await client.stream.send_eof()
    pongs = 0
    with trio.fail_after(10):
        while (event := await client.next_event()) is not None:
            pongs += isinstance(event, Pong)
    assert pongs >= 1
    info = await rec.closed()
    assert info.code == 1006
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    await client.aclose()
