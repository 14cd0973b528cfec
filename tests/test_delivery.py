"""The delivery seam (trio_ws/_conn/delivery.py): frames shared by a fan-out, and
what becomes of a message offered to a connection, over real sockets."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing
from conftest import Recorder, start_server, url_of
from rawpeer import RawClient
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage

import trio_ws
from trio_ws._conn.delivery import PLAIN, Framings, Outcome
from trio_ws._conn.lifecycle import delivery_of

LIMITS = (100, 2**20)  # frames, bytes


def test_plain_frames_are_wsprotos() -> None:
    framings = Framings()
    server = Connection(ConnectionType.SERVER)
    assert framings.plain("héllo") == server.send(TextMessage(data="héllo"))
    assert framings.plain(b"\x00" * 70000) == server.send(BytesMessage(data=b"\x00" * 70000))
    with pytest.raises(TypeError, match="str \\(text\\) or bytes"):
        framings.plain(42)  # type: ignore[arg-type]


def test_a_message_is_framed_once_per_key() -> None:
    framings = Framings()
    message = "the same message, asked for by many connections"
    first = framings.frame(message, PLAIN)
    assert framings.frame(message, PLAIN) is first  # remembered, not framed again
    assert framings.keys == 1
    # An equal but different message object is framed anew.
    assert framings.frame("".join(message), PLAIN) == first


def test_framings_belong_to_their_owner() -> None:
    """Two owners share nothing: no process-wide cache."""
    one, two = Framings(), Framings()
    one.plain("a")
    assert one.keys == 1
    assert two.keys == 0


async def test_offers_keep_their_place_among_sends(nursery: trio.Nursery) -> None:
    recorder = Recorder()
    server = await start_server(nursery, recorder)
    async with trio_ws.connect(url_of(server)) as ws:
        remote = await recorder.connection()
        delivery = delivery_of(remote)
        framings = Framings()
        for message in ("shared", b"bytes"):
            outcome = delivery.offer(message, framings.plain(message), 6, *LIMITS, framings)
            assert outcome is Outcome.QUEUED
        await remote.send("direct")  # behind the offers: order kept
        assert [await ws.receive() for _ in range(3)] == ["shared", b"bytes", "direct"]
        assert remote.stats().traffic.messages_out == 3


async def test_compressed_connections_share_a_frame(nursery: trio.Nursery) -> None:
    recorder = Recorder()
    server = await start_server(nursery, recorder)
    clients = [await trio_ws.start_connection(nursery, url_of(server)) for _ in range(3)]
    remotes = [await recorder.connection() for _ in clients]
    framings = Framings()
    message = "compressible " * 100
    for remote in remotes:
        delivery = delivery_of(remote)
        assert not delivery.shares_plain_frame
        outcome = delivery.offer(message, framings.plain(message), len(message), *LIMITS, framings)
        assert outcome is Outcome.QUEUED
    assert framings.keys == 2  # the plain frame, and one compressed for all three
    for client in clients:
        assert await client.receive() == message


async def test_full_then_shed_then_closed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A client that never reads: offers queue up to the limits (FULL), then
    shedding drops them and closes with the code given; later offers get
    CLOSED."""
    recorder = Recorder()
    server = await start_server(nursery, recorder, close_timeout=1)
    raw = await RawClient.connect(server.port)
    raw.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    remote = await recorder.connection()
    delivery = delivery_of(remote)
    framings = Framings()
    message = b"m" * 2**20
    frame = framings.plain(message)
    outcomes = []
    for _ in range(64):  # more than any kernel buffers on loopback
        outcomes.append(delivery.offer(message, frame, len(message), 1000, 4 * 2**20, framings))
        if outcomes[-1] is not Outcome.QUEUED:
            break
    assert outcomes[-1] is Outcome.FULL
    assert delivery.queued_bytes <= 4 * 2**20
    assert remote.stats().pending_out_bytes == delivery.queued_bytes
    assert delivery.shed_and_close(1013, "too slow", "fell behind") >= 1
    assert delivery.offer(message, frame, len(message), *LIMITS, framings) is Outcome.CLOSED
    info = await recorder.closed()
    assert (info.code, info.reason, info.cause) == (1013, "too slow", "fell behind")
    await raw.aclose()
