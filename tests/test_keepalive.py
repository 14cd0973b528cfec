"""Keepalive: pings that catch dead peers, including when our writes are stuck."""

from __future__ import annotations

import math
import socket
from typing import Any

import pytest
import trio
import trio.testing
from conftest import Firehose, Pair, Recorder, start_server, url_of
from rawpeer import RawClient

import trio_ws
from trio_ws._conn.keepalive import Keepalive, Ping, Step
from trio_ws._test_hooks import (
    background_tasks,
    guarded_scopes,
    reading_paused,
    set_socket_buffers,
)

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
    set_socket_buffers(await recorder.connection(), send=4096, receive=4096)
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
        assert reading_paused(pair.client)
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


# -- the schedule (pure bookkeeping) -------------------------------------------


def test_schedule_pings_after_the_interval_and_times_out_after_the_timeout() -> None:
    keepalive = Keepalive(interval=10, timeout=5, now=100)
    assert keepalive.deadline == 110
    assert keepalive.tick(110, paused=False, resumed_at=-math.inf) is Step.PING
    ping = Ping(110)
    keepalive.sent(ping)
    assert keepalive.deadline == 115
    assert keepalive.tick(115, paused=False, resumed_at=-math.inf) is Step.TIMEOUT


def test_schedule_next_ping_an_interval_after_the_pong() -> None:
    keepalive = Keepalive(interval=10, timeout=5, now=0)
    ping = Ping(10)
    keepalive.sent(ping)
    ping.rtt = 2  # answered at 12
    assert keepalive.tick(15, paused=False, resumed_at=-math.inf) is Step.WAIT
    assert keepalive.deadline == 22
    assert keepalive.ping is None
    assert keepalive.tick(22, paused=False, resumed_at=-math.inf) is Step.PING


def test_schedule_pings_at_once_when_the_next_ping_is_already_due() -> None:
    keepalive = Keepalive(interval=1, timeout=5, now=0)
    ping = Ping(1)
    keepalive.sent(ping)
    ping.rtt = 0.1
    assert keepalive.tick(6, paused=False, resumed_at=-math.inf) is Step.PING


def test_schedule_does_not_count_time_with_reading_paused() -> None:
    keepalive = Keepalive(interval=10, timeout=5, now=0)
    keepalive.sent(Ping(10))
    # Our reading is paused at the deadline: look again a timeout later.
    assert keepalive.tick(15, paused=True, resumed_at=-math.inf) is Step.WAIT
    assert keepalive.deadline == 20
    # Reading resumed at 18: the peer gets a full timeout from then.
    assert keepalive.tick(20, paused=False, resumed_at=18) is Step.WAIT
    assert keepalive.deadline == 23
    assert keepalive.tick(23, paused=False, resumed_at=18) is Step.TIMEOUT


# -- tasks: keepalive costs an idle connection no task of its own ------------------


async def test_idle_connection_has_one_background_task(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()
    # The server's connection: its background task (reading while the handler
    # does not, and keepalive). The client of start_connection: none beside
    # the task that owns its nursery, which does that work itself.
    assert background_tasks(pair.server) == 1
    assert background_tasks(pair.client) == 0
    # Pongs are written by a writer task started on demand, which ends when
    # done; the scopes of ended tasks are not kept.
    for _ in range(50):
        await pair.client.ping()
    await trio.testing.wait_all_tasks_blocked()
    assert background_tasks(pair.server) == 1
    assert guarded_scopes(pair.server) == 1
    assert pair.client.latency is not None


async def test_connect_block_has_one_background_task(echo_server: trio_ws.Server) -> None:
    async with trio_ws.connect(url_of(echo_server)) as ws:
        await ws.send("hi")
        assert await ws.receive() == "hi"
        assert background_tasks(ws) == 1


async def test_keepalive_over_tls(
    nursery: trio.Nursery, tls: Any, autojump_clock: trio.testing.MockClock
) -> None:
    """On TLS, keepalive runs in a task of its own (a TLS read must not be
    interrupted): it measures latency, keeps the connection, and its task
    ends with the connection."""
    recorder = Recorder()
    server = await start_server(nursery, recorder, ssl_context=tls.server_context, **FAST)
    url = f"wss://127.0.0.1:{server.port}/"
    async with trio_ws.connect(url, ssl_context=tls.client_context, **FAST) as ws:
        await trio.sleep(10)
        assert ws.latency is not None
        assert (await recorder.connection()).latency is not None
        # reader, writer (permanent on TLS) and keepalive
        assert background_tasks(ws) == 3
        await ws.send("still alive")
    info = await recorder.closed()
    assert info.code == 1000


def test_schedule_without_a_timeout_goes_on_pinging() -> None:
    keepalive = Keepalive(interval=10, timeout=math.inf, now=0)
    assert keepalive.tick(10, paused=False, resumed_at=-math.inf) is Step.PING
    ping = Ping(10)
    keepalive.sent(ping)
    assert keepalive.deadline == 20  # look for the pong an interval later
    assert keepalive.tick(20, paused=False, resumed_at=-math.inf) is Step.WAIT
    assert keepalive.deadline == 30
    ping.rtt = 11  # answered at 21
    assert keepalive.tick(30, paused=False, resumed_at=-math.inf) is Step.WAIT
    assert keepalive.deadline == 31
    assert keepalive.tick(31, paused=False, resumed_at=-math.inf) is Step.PING


async def test_keepalive_without_timeout_keeps_measuring(
    pair_factory: Any, autojump_clock: trio.testing.MockClock
) -> None:
    pair: Pair = await pair_factory(
        ping_interval=1, ping_timeout=None, server_options={"ping_interval": None}
    )
    await trio.sleep(1.5)
    assert pair.client.latency is not None
    before = pair.client.stats().traffic.bytes_out
    await trio.sleep(10)
    # A client's ping with a 4-byte payload is 10 bytes on the wire.
    pings = (pair.client.stats().traffic.bytes_out - before) // 10
    assert 5 <= pings <= 11  # one every interval or two (the pong is looked for an interval on)
    assert not pair.client.closed
