"""Faults: peers that vanish, stall or reset, and storms of cancellation."""

from __future__ import annotations

import hashlib
import random
import socket
import struct
from typing import Any

import pytest
import trio
import trio.testing
from conftest import Firehose, Pair, Recorder, start_server
from rawpeer import RawClient

import trio_ws
from trio_ws._test_hooks import pings_waiting, set_socket_buffers


def stamped(number: int, size: int) -> bytes:
    """A self-checking message: number, length, digest, padding."""
    body = random.Random(number).randbytes(size)  # incompressible
    return struct.pack("!II", number, size) + hashlib.sha256(body).digest()[:8] + body


def check(message: str | bytes) -> int:
    assert isinstance(message, bytes)
    number, size = struct.unpack("!II", message[:8])
    body = message[16:]
    assert len(body) == size
    assert hashlib.sha256(body).digest()[:8] == message[8:16]
    return int(number)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_cancellation_storm_leaves_the_connection_usable(
    pair_factory: Any, seed: int
) -> None:
    """Hundreds of tasks send and receive on one connection while a chaos task
    cancels them at random moments (counted in scheduler steps, not time)."""
    no_keepalive = {"ping_interval": None, "max_message_size": None}
    pair: Pair = await pair_factory(
        server_options={**no_keepalive, "max_queue": 4}, **no_keepalive
    )
    for ws in (pair.client, pair.server):
        set_socket_buffers(ws, send=16384, receive=16384)
    rng = random.Random(seed)
    scopes: list[trio.CancelScope] = []
    sent_ok: set[int] = set()
    maybe_sent: set[int] = set()
    received: list[int] = []
    cancelled = {"send": 0, "receive": 0}

    async def sender(number: int, scope: trio.CancelScope) -> None:
        size = rng.choice([0, 10, 1000, 70000, 300000])
        with scope:
            await pair.client.send(stamped(number, size))
            sent_ok.add(number)
        if scope.cancelled_caught:
            cancelled["send"] += 1
            maybe_sent.add(number)

    async def receiver(scope: trio.CancelScope) -> None:
        with scope:
            received.append(check(await pair.server.receive()))
        cancelled["receive"] += scope.cancelled_caught

    async def chaos() -> None:
        order = list(scopes)
        rng.shuffle(order)
        for scope in order:
            for _ in range(rng.randint(0, 40)):
                await trio.lowlevel.checkpoint()
            scope.cancel()

    async with trio.open_nursery() as nursery:
        for number in range(300):
            scopes.append(send_scope := trio.CancelScope())
            scopes.append(receive_scope := trio.CancelScope())
            nursery.start_soon(sender, number, send_scope)
            nursery.start_soon(receiver, receive_scope)
        nursery.start_soon(chaos)
    assert cancelled["send"] > 10
    assert cancelled["receive"] > 10
    # The connection still works both ways afterwards, and every message the
    # server got was whole: no partial frame from any cancelled send. (The
    # sentinel is sent while the server drains: its queue may be full.)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pair.client.send, stamped(10**6, 5))
        while (number := check(await pair.server.receive())) != 10**6:
            received.append(number)
    await pair.server.send("and back")
    assert await pair.client.receive() == "and back"
    assert len(received) == len(set(received))
    assert sent_ok <= set(received)
    assert set(received) <= sent_ok | maybe_sent
    await pair.client.aclose()
    assert pair.client.close_code == 1000


async def test_cancelled_pings_do_not_break_anything(
    pair_factory: Any, autojump_clock: trio.testing.MockClock
) -> None:
    pair: Pair = await pair_factory()

    async def pinger() -> None:
        with trio.move_on_after(random.uniform(0, 0.001)):
            await pair.client.ping()

    async with trio.open_nursery() as nursery:
        for _ in range(200):
            nursery.start_soon(pinger)
    assert pings_waiting(pair.client) == 0  # no waiter left behind
    assert await pair.client.ping() >= 0


async def test_peer_that_vanishes_mid_message(nursery: trio.Nursery) -> None:
    recorder = Recorder()
    server = await start_server(nursery, recorder)
    raw = await RawClient.connect(server.port)
    ws = await recorder.connection()
    # Half a frame, then the TCP connection is gone.
    from rawpeer import BINARY, frame

    await raw.send(frame(BINARY, b"x" * 1000)[:300])
    await raw.aclose()
    with pytest.raises(trio_ws.ConnectionClosed) as info:
        await ws.receive()
    assert info.value.code == 1006
    assert "without a close frame" in (info.value.info.cause or "")


async def test_reset_during_a_blocked_send(nursery: trio.Nursery) -> None:
    firehose = Firehose()
    recorder = Recorder(firehose)
    server = await start_server(nursery, recorder)
    raw = await RawClient.connect(server.port)
    raw.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await raw.next_event()  # the server is sending; it soon blocks on our full window
    raw.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.stream.socket.close()  # RST
    info = await recorder.closed()
    assert info.code == 1006
    assert firehose.stopped_by is not None
    assert firehose.stopped_by.code == 1006


async def test_silent_drop_is_detected_by_keepalive(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A proxy between client and server forwards everything, then starts
    swallowing every byte in both directions without closing anything: the
    network black-holes the connection. Both keepalives must notice."""
    recorder = Recorder()
    options = {"ping_interval": 2, "ping_timeout": 2, "close_timeout": 2}
    server = await start_server(nursery, recorder, **options)
    black_hole = trio.Event()

    async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
        while data := await source.receive_some(65536):
            if not black_hole.is_set():
                await sink.send_all(data)

    async def proxy(downstream: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with upstream, downstream, trio.open_nursery() as pumps:
            pumps.start_soon(pump, downstream, upstream)
            pumps.start_soon(pump, upstream, downstream)

    import functools

    listeners = await nursery.start(functools.partial(trio.serve_tcp, proxy, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    async with trio_ws.connect(f"ws://127.0.0.1:{port}/", **options) as ws:
        await ws.ping()
        black_hole.set()
        start = trio.current_time()
        with pytest.raises(trio_ws.ConnectionClosed):
            await ws.receive()
        elapsed = trio.current_time() - start
    assert ws.close_info is not None
    assert ws.close_info.code == 1011
    assert ws.close_info.cause == "keepalive timeout: no pong within 2 s"
    assert elapsed <= 2 + 2 + 2 + 0.1
    info = await recorder.closed()
    assert info.code == 1011
    assert info.initiator == "local"
