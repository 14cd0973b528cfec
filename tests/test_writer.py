"""The outgoing side (trio_ws/_conn/writer.py).

First under hostile peers, over real loopback sockets: pongs owed to a peer
that never reads, and end-of-file while frames are still being written.
Then unit tests of :class:`Writer` alone, on memory streams.
"""

from __future__ import annotations

import logging
import socket
import tracemalloc
from typing import Any

import pytest
import trio
import trio.testing
from conftest import Recorder, start_server
from rawpeer import PING, RawClient, frame
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage

import trio_ws
from trio_ws._conn.close_state import CloseState
from trio_ws._conn.delivery import Framings, Outcome
from trio_ws._conn.writer import MAX_QUEUED_PONGS, Kind, NotOpen, Writer
from trio_ws._test_hooks import set_socket_buffers
from trio_ws._wire.protocol import Protocol

#: A ping with the largest payload a control frame may carry.
BIG_PING = frame(PING, b"p" * 125)


async def non_reading_client(port: int, receive_buffer: int = 4096) -> RawClient:
    """A raw client whose receive buffer is small, so that what the server
    writes to it backs up soon. (With both sides' buffers tiny and both
    sending, loopback TCP can stall the client's own sends too: tests that
    need the client to keep sending use a larger buffer.)"""
    client = await RawClient.connect(port)
    client.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    return client


def shrink_send_buffer(ws: trio_ws.WebSocket) -> None:
    set_socket_buffers(ws, send=4096)


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


async def test_a_burst_of_pings_gets_a_pong_each(nursery: trio.Nursery) -> None:
    """Ten pings in one write from a peer that reads: ten pongs, each with
    its ping's payload (Autobahn 2.10; not required by RFC 6455, expected by
    peers all the same)."""
    rec = Recorder()
    server = await start_server(nursery, rec)
    client = await RawClient.connect(server.port)
    await rec.connection()
    payloads = [f"ping {i}".encode() for i in range(10)]
    await client.send(b"".join(frame(PING, p) for p in payloads))
    got = []
    with trio.fail_after(5):
        while len(got) < 10:
            event = await client.next_event()
            if isinstance(event, Pong):
                got.append(bytes(event.payload))
    assert got == payloads
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
    client = await non_reading_client(server.port, receive_buffer=65536)
    ws = await rec.connection()
    shrink_send_buffer(ws)
    for _ in range(150):  # 380 KB of pongs: the server's writer is stuck
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


# -- unit tests: the Writer alone, on memory streams ------------------------------
#
# A server-side Writer writes to one end of a trio.testing stream pair; the
# test reads the other end and decodes it with a client-side wsproto
# connection. On memory streams the writer keeps a permanent writer task
# (started by Writer.start() through ``spawn``, here in the test's nursery)
# that writes every frame; callers wait for it. With lockstep_stream_pair()
# the writer task's send_all() waits until the test reads: that is how a
# test holds a frame "being written".


class WriterRig:
    """A Writer on one end of a stream pair, its task running in ``nursery``.
    ``read()`` decodes what reaches the other end; streams broken under the
    writer are reported in ``breakages``."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        lockstep: bool = False,
        frame_size: int | None = None,
        sockets: bool = False,
    ) -> None:
        ours: trio.abc.Stream
        self.peer: trio.abc.Stream
        if sockets:
            # A socket pair with small buffers: the writer writes its
            # descriptor itself, and a large frame fills it part-way.
            a, b = trio.socket.socketpair()
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            ours, self.peer = trio.SocketStream(a), trio.SocketStream(b)
        else:
            pair = (
                trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
            )
            ours, self.peer = pair()
        self.breakages: list[BaseException] = []
        #: The close state the writer reads (a connection's own).
        self.state = CloseState()
        self.writer = Writer(
            ours,
            Protocol(Connection(ConnectionType.SERVER), None),
            self.state,
            self.breakages.append,
            nursery.start_soon,
            frame_size,
        )
        self.writer.start()
        self._ours = ours
        self._decoder = Connection(ConnectionType.CLIENT)
        self._events: list[Event] = []
        self._parts: list[Any] = []  # of a message not yet finished
        #: Bytes read from the other end so far.
        self.bytes_in = 0

    async def aclose(self) -> None:
        """Close both ends (needed with ``sockets``)."""
        await self._ours.aclose()
        await self.peer.aclose()

    async def _receive(self) -> bool:
        data = await self.peer.receive_some()
        self.bytes_in += len(data)
        self._decoder.receive_data(data)
        for event in self._decoder.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                # A large message arrives in parts: one event per message.
                self._parts.append(event.data)
                if not event.message_finished:
                    continue
                if isinstance(event, TextMessage):
                    event = TextMessage(data="".join(self._parts))
                else:
                    event = BytesMessage(data=b"".join(self._parts))
                self._parts = []
            self._events.append(event)
        return bool(data)

    async def read(self, count: int) -> list[Any]:
        """The next ``count`` frames, summarised (see :func:`summary`)."""
        while len(self._events) < count:
            assert await self._receive(), "end-of-file"
        events, self._events = self._events[:count], self._events[count:]
        return [summary(event) for event in events]

    async def read_to_eof(self) -> list[Any]:
        """Every frame until end-of-file, summarised."""
        while await self._receive():
            pass
        events, self._events = self._events, []
        return [summary(event) for event in events]


def summary(event: Event) -> Any:
    """A message as its data; control frames as ("ping", payload) and so on."""
    if isinstance(event, (TextMessage, BytesMessage)):
        assert event.message_finished
        return event.data
    if isinstance(event, Ping):
        return ("ping", event.payload)
    if isinstance(event, Pong):
        return ("pong", event.payload)
    if isinstance(event, CloseConnection):
        return ("close", event.code, event.reason)
    raise AssertionError(event)


async def test_writer_writes_frames_in_order(nursery: trio.Nursery) -> None:
    rig = WriterRig(nursery)
    writer = rig.writer
    await writer.send_message("one")
    await writer.send_message(b"two", compress=False)
    writer.post(Kind.Ping(b"keepalive"))
    await writer.send(Kind.Ping(b"p"))
    # Concurrent senders: each frame goes out whole, in the order queued.
    queued: list[str] = []

    async def sender(i: int) -> None:
        queued.append(f"c{i}")  # no checkpoint between this and queuing the frame
        await writer.send_message(f"c{i}")

    async with trio.open_nursery() as senders:
        for i in range(10):
            senders.start_soon(sender, i)
    await writer.send(Kind.Close(1000, "bye"))
    assert await rig.read(15) == [
        "one",
        b"two",
        ("ping", b"keepalive"),
        ("ping", b"p"),
        *queued,
        ("close", 1000, "bye"),
    ]
    assert (writer.text_out, writer.binary_out) == (11, 1)
    assert writer.bytes_out == rig.bytes_in
    assert writer.queued == 0
    # After the close frame, no message can be framed.
    with pytest.raises(NotOpen):
        await writer.send_message("late")


async def test_writer_splits_messages_into_frames_of_frame_size(nursery: trio.Nursery) -> None:
    rig = WriterRig(nursery, frame_size=4)
    await rig.writer.send_message(b"0123456789")
    await rig.writer.send_message("short")
    await rig.writer.shut_down()
    wire = b""
    while data := await rig.peer.receive_some():
        wire += data
    # Three frames of 4 + 4 + 2 bytes (2-byte headers): binary, continuation,
    # final continuation; then "short" in two frames.
    assert (wire[0], wire[6], wire[12]) == (0x02, 0x00, 0x80)
    assert (wire[16], wire[22]) == (0x01, 0x80)
    assert len(wire) == 16 + 6 + 3
    decoder = Connection(ConnectionType.CLIENT)
    decoder.receive_data(wire)
    pieces = [(event.data, event.message_finished) for event in decoder.events()]  # type: ignore[attr-defined]
    assert pieces == [
        (b"0123", False),
        (b"4567", False),
        (b"89", True),
        ("shor", False),
        ("t", True),
    ]


async def test_writer_cancelled_send_before_any_byte_sends_nothing(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    rig = WriterRig(nursery, lockstep=True)
    writer = rig.writer
    # Cancelled before it could even wait: nothing is queued.
    with trio.CancelScope() as scope:
        scope.cancel()
        await writer.send_message("never")
    assert scope.cancelled_caught
    async with trio.open_nursery() as senders:
        # The writer task blocks writing "first" (nobody reads yet)...
        senders.start_soon(writer.send_message, "first")
        await trio.testing.wait_all_tasks_blocked()
        # ...so "second" waits its turn, and is cancelled there.
        with trio.move_on_after(1) as scope:
            await writer.send_message("second")
        assert scope.cancelled_caught
        senders.start_soon(writer.send_message, "third")
        assert await rig.read(2) == ["first", "third"]
    assert writer.text_out == 2


async def test_writer_keeps_a_bounded_number_of_pongs_waiting(nursery: trio.Nursery) -> None:
    rig = WriterRig(nursery, lockstep=True)
    writer = rig.writer
    nursery.start_soon(writer.send_message, "busy")
    await trio.testing.wait_all_tasks_blocked()  # the writer task is writing "busy"
    payloads = [str(i).encode() for i in range(MAX_QUEUED_PONGS + 5)]
    for payload in payloads:
        writer.post_pong(payload)
    # A pong each up to the cap; the last one waiting takes the latest payload.
    assert writer.queued == MAX_QUEUED_PONGS
    expected = [("pong", p) for p in payloads[: MAX_QUEUED_PONGS - 1]]
    expected.append(("pong", payloads[-1]))
    assert await rig.read(1 + MAX_QUEUED_PONGS) == ["busy", *expected]
    writer.post_pong(b"again")  # room again: a pong of its own
    assert await rig.read(1) == [("pong", b"again")]


async def test_writer_shut_down_sends_end_of_file_after_queued_frames(
    nursery: trio.Nursery,
) -> None:
    rig = WriterRig(nursery)
    writer = rig.writer
    writer.post(Kind.Ping(b"1"))
    writer.enqueue(Kind.Message("queued"), 6)
    writer.post_pong(b"2")
    assert writer.queued == 3  # none written yet: the writer task has not run
    await writer.shut_down()
    assert writer.queued == 0
    assert await rig.read_to_eof() == [("ping", b"1"), "queued", ("pong", b"2")]
    # Nothing is written after end-of-file.
    assert writer.broken is not None
    with pytest.raises(NotOpen):
        await writer.send_message("late")
    assert rig.breakages == []  # not a breakage


async def test_writer_shut_down_waits_for_the_frame_being_written(
    nursery: trio.Nursery,
) -> None:
    rig = WriterRig(nursery, lockstep=True)
    done: list[str] = []

    async def shut_down() -> None:
        await rig.writer.shut_down()
        done.append("eof")

    nursery.start_soon(rig.writer.send_message, "being written")
    await trio.testing.wait_all_tasks_blocked()
    nursery.start_soon(shut_down)
    await trio.testing.wait_all_tasks_blocked()
    assert done == []  # its turn comes after the frame
    assert await rig.read_to_eof() == ["being written"]
    await trio.testing.wait_all_tasks_blocked()
    assert done == ["eof"]


async def test_writer_queue_message_and_offer_within_limits(nursery: trio.Nursery) -> None:
    rig = WriterRig(nursery)
    writer = rig.writer
    QUEUED, FULL, CLOSED = Outcome.QUEUED, Outcome.FULL, Outcome.CLOSED
    f_frame = Framings().plain("f")
    # The writer task has not run yet: whatever is accepted waits.
    assert writer.queue_message("a", 10, 3, 100) is QUEUED
    assert writer.queue_message("b", 10, 3, 100) is QUEUED
    assert writer.queue_message("x", 81, 3, 100) is FULL  # 20 + 81 bytes > 100
    assert writer.queue_message("c", 80, 3, 100) is QUEUED  # 100: within
    assert writer.queue_message("x", 1, 3, 100) is FULL  # 3 frames wait
    assert writer.offer(f_frame, True, 1, 4, 100) is FULL  # 101 bytes
    assert (writer.queued, writer.queued_bytes) == (3, 100)
    await trio.testing.wait_all_tasks_blocked()  # written
    assert (writer.queued, writer.queued_bytes) == (0, 0)
    # With nothing waiting, a message over max_bytes still goes.
    assert writer.queue_message(b"big", 500, 3, 100) is QUEUED
    await trio.testing.wait_all_tasks_blocked()
    assert writer.offer(f_frame, True, 1, 3, 100) is QUEUED
    assert writer.offer(f_frame, True, 1, 0, 100) is FULL  # max_frames 0: never
    assert await rig.read(5) == ["a", "b", "c", b"big", "f"]
    assert writer.queued_bytes == 0
    # Closing (the close state says so): nothing more is queued.
    rig.state.close(1000, "", "local", None)
    assert writer.queue_message("x", 1, 3, 100) is CLOSED
    assert writer.offer(f_frame, True, 1, 3, 100) is CLOSED
    # A stream that takes no more writes: nor there.
    writer = WriterRig(nursery).writer
    writer.fail_all(NotOpen())
    assert writer.queue_message("x", 1, 3, 100) is CLOSED
    assert writer.offer(f_frame, True, 1, 3, 100) is CLOSED


async def test_writer_fail_all_releases_waiting_senders(nursery: trio.Nursery) -> None:
    rig = WriterRig(nursery, lockstep=True)
    writer = rig.writer
    outcomes: dict[str, str] = {}

    async def sender(message: str) -> None:
        try:
            await writer.send_message(message)
            outcomes[message] = "sent"
        except NotOpen:
            outcomes[message] = "NotOpen"

    async with trio.open_nursery() as senders:
        senders.start_soon(sender, "being written")
        await trio.testing.wait_all_tasks_blocked()
        for message in ("waits 1", "waits 2"):
            senders.start_soon(sender, message)
        await trio.testing.wait_all_tasks_blocked()
        assert writer.queued == 2
        error = OSError("the connection is going away")
        writer.fail_all(error)
        await trio.testing.wait_all_tasks_blocked()
        assert outcomes == {"waits 1": "NotOpen", "waits 2": "NotOpen"}
        assert writer.queued == 0
        assert writer.broken is error
        # The frame already being written is finished: the stream stays whole.
        assert await rig.read(1) == ["being written"]
    assert outcomes["being written"] == "sent"
    with pytest.raises(NotOpen):
        await writer.send_message("late")
    writer.post(Kind.Ping(b""))
    writer.post_pong(b"")
    assert writer.queued == 0
    assert rig.breakages == []  # failing is not a breakage report


async def test_writer_reports_a_broken_stream_once(nursery: trio.Nursery) -> None:
    """The other end goes away for real: the write fails, the breakage is
    reported once through on_broken, and every sender gets NotOpen."""
    rig = WriterRig(nursery)
    await rig.peer.aclose()
    outcomes: list[str] = []

    async def sender() -> None:
        try:
            await rig.writer.send_message("lost")
        except NotOpen:
            outcomes.append("NotOpen")

    async with trio.open_nursery() as senders:
        for _ in range(3):
            senders.start_soon(sender)
    assert outcomes == ["NotOpen"] * 3
    assert len(rig.breakages) == 1
    assert isinstance(rig.breakages[0], trio.BrokenResourceError)
    assert rig.writer.broken is rig.breakages[0]


# -- on a socket: the writer writes the descriptor itself ---------------------


async def test_writer_on_a_socket_writes_and_counts_each_message_once(
    nursery: trio.Nursery,
) -> None:
    """Messages that fill the socket part-way: the rest of each goes to the
    writer task, the stream stays whole, and each message and byte counts
    once (the rest of a frame written inline used to count twice)."""
    rig = WriterRig(nursery, sockets=True)
    writer = rig.writer
    big = b"b" * 300_000
    limits = (100, 10_000_000)
    assert writer.offer(Framings().plain(big), False, len(big), *limits) is Outcome.QUEUED
    assert writer.queued == 1  # the rest of the frame, for the writer task
    assert writer.queue_message("queued", 6, *limits) is Outcome.QUEUED
    sent: list[str] = []

    async def sender() -> None:
        await writer.send_message(big)
        sent.append("sent")

    nursery.start_soon(sender)
    writer.post(Kind.Ping(b"p"))
    assert await rig.read(4) == [big, "queued", ("ping", b"p"), big]
    await trio.testing.wait_all_tasks_blocked()
    assert sent == ["sent"]
    assert (writer.text_out, writer.binary_out) == (1, 2)
    assert writer.bytes_out == rig.bytes_in
    assert (writer.queued, writer.queued_bytes) == (0, 0)
    await rig.aclose()


async def test_writer_on_a_socket_finishes_a_cancelled_send(
    nursery: trio.Nursery,
) -> None:
    """send_message() cancelled part-way through its frame, on the direct
    path: the writer task writes the rest, which counts as the message."""
    rig = WriterRig(nursery, sockets=True)
    writer = rig.writer
    big = b"c" * 300_000
    with trio.CancelScope() as scope:
        nursery.start_soon(_cancel_when_blocked, scope)
        await writer.send_message(big)
    assert scope.cancelled_caught
    assert writer.queued == 1  # the rest of the frame
    nursery.start_soon(writer.send_message, "after")  # waits its turn
    assert await rig.read(2) == [big, "after"]
    await trio.testing.wait_all_tasks_blocked()
    assert (writer.text_out, writer.binary_out) == (1, 1)
    assert writer.bytes_out == rig.bytes_in
    await rig.aclose()


async def _cancel_when_blocked(scope: trio.CancelScope) -> None:
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()
