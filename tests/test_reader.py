"""The incoming side (trio_ws/_conn/reader.py).

First under hostile input: what a peer can make a connection hold in
memory, over real loopback sockets (see the limits in docs/security.md).
Then unit tests of :class:`Reader` alone, on memory streams.
"""

from __future__ import annotations

import math
import struct
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio
import trio.testing
from conftest import Recorder, start_server, url_of
from rawpeer import BINARY, CONTINUATION, PING, TEXT, RawClient, frame
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage

import trio_ws
from trio_ws._conn.close_state import CloseState
from trio_ws._conn.reader import Reader
from trio_ws._conn.writer import NotOpen
from trio_ws._wire.deflate import DeflateExtension
from trio_ws._wire.events import Incoming, Piece, PingReceived
from trio_ws._wire.protocol import FRAME_MIN_CHARGE, FREE_FRAMES, Protocol

MiB = 2**20


class Growth:
    """Memory traced by tracemalloc: ``now`` (above the start) and ``peak``."""

    def __init__(self) -> None:
        self.start = 0

    @property
    def now(self) -> int:
        return tracemalloc.get_traced_memory()[0] - self.start

    @property
    def peak(self) -> int:
        return tracemalloc.get_traced_memory()[1] - self.start


@contextmanager
def traced() -> Iterator[Growth]:
    tracemalloc.start()
    growth = Growth()
    growth.start = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    try:
        yield growth
    finally:
        tracemalloc.stop()


async def test_many_small_fragments_are_held_in_one_buffer(nursery: trio.Nursery) -> None:
    """A message of one-byte fragments costs its bytes, not an object per
    fragment (it used to cost about 50 bytes a fragment)."""
    rec = Recorder()
    server = await start_server(nursery, rec)
    client = await RawClient.connect(server.port)
    ws = await rec.connection()
    # Within the limit: 16 frames counted by payload, then 64 bytes each.
    count = (2**20 - 2 * FREE_FRAMES) // FRAME_MIN_CHARGE - 1
    wire = frame(BINARY, b"ab", fin=False) + b"".join(
        frame(CONTINUATION, b"ab", fin=False) for _ in range(count)
    )
    with traced() as growth:
        await client.send(wire)
        await client.ping_pong()  # the server read it all
        held = growth.now
    assert held < 96 * 1024, f"{count} two-byte fragments held {held} bytes"
    await client.send(frame(CONTINUATION, b"c"))
    assert await ws.receive() == b"ab" * (count + 1) + b"c"
    await client.aclose()


async def test_empty_continuation_frames_count_toward_the_limit(nursery: trio.Nursery) -> None:
    """Empty frames carry no payload, but a flood of them still reaches
    max_message_size and closes the connection with 1009."""
    rec = Recorder()
    server = await start_server(nursery, rec, max_message_size=65536)
    client = await RawClient.connect(server.port)
    await rec.connection()
    empty = frame(CONTINUATION, b"", fin=False)
    await client.send(frame(BINARY, b"x", fin=False) + empty * 20000)
    assert await client.until_close() == (1009, "message larger than 65536 bytes")
    await client.aclose()
    assert (await rec.closed()).code == 1009


async def test_text_fragments_reassemble_across_characters(nursery: trio.Nursery) -> None:
    """Fragments split inside a UTF-8 character still make the right text."""
    rec = Recorder()
    server = await start_server(nursery, rec)
    client = await RawClient.connect(server.port)
    ws = await rec.connection()
    data = "zé€😀".encode() * 10
    pieces = [data[i : i + 3] for i in range(0, len(data), 3)]
    wire = frame(TEXT, pieces[0], fin=False)
    wire += b"".join(frame(CONTINUATION, p, fin=False) for p in pieces[1:])
    await client.send(wire + frame(CONTINUATION, b""))
    assert await ws.receive() == "zé€😀" * 10
    await client.aclose()


def header_only(length: int) -> bytes:
    """A masked binary frame header announcing ``length`` bytes, and its key."""
    return bytes([0x82, 0x80 | 127]) + struct.pack("!Q", length) + b"\x00\x00\x00\x00"


async def test_a_frame_announcing_too_much_is_refused_at_its_header(
    nursery: trio.Nursery,
) -> None:
    """2**40 or 2**63-1 announced bytes close the connection with 1009 as soon
    as the header arrives, not after a megabyte of its payload."""
    for length in (2**40, 2**63 - 1, 2**20 + 1):
        rec = Recorder()
        server = await start_server(nursery, rec)
        client = await RawClient.connect(server.port)
        await rec.connection()
        with trio.fail_after(5):
            await client.send(header_only(length) + b"\x00" * 100)
            assert await client.until_close() == (1009, "message larger than 1048576 bytes")
        await client.aclose()
        assert (await rec.closed()).code == 1009


async def test_a_continuation_announcing_too_much_is_refused_at_its_header(
    nursery: trio.Nursery,
) -> None:
    """The announced length counts with what the message already holds."""
    rec = Recorder()
    server = await start_server(nursery, rec, max_message_size=1000)
    client = await RawClient.connect(server.port)
    await rec.connection()
    continuation = bytes([0x00, 0x80 | 126]) + struct.pack("!H", 500) + b"\x00" * 4
    await client.send(frame(BINARY, b"x" * 600, fin=False) + continuation)
    assert await client.until_close() == (1009, "message larger than 1000 bytes")
    await client.aclose()


async def test_an_announced_size_within_the_limit_is_waited_for(nursery: trio.Nursery) -> None:
    """A frame that fits the limit is read however slowly it arrives."""
    rec = Recorder()
    server = await start_server(nursery, rec, max_message_size=4096)
    client = await RawClient.connect(server.port)
    ws = await rec.connection()
    whole = frame(BINARY, b"y" * 4096)
    for i in range(0, len(whole), 1000):
        await client.send(whole[i : i + 1000])
        await trio.testing.wait_all_tasks_blocked(0.01)
    assert await ws.receive() == b"y" * 4096
    await client.aclose()


async def test_compressed_uploads_held_within_max_queue_bytes(nursery: trio.Nursery) -> None:
    """20 messages of 1 MiB that compress to about 1 KiB each, sent to a
    handler that does not read: the connection holds about max_queue_bytes
    plus one message, not max_queue messages (it used to hold 16 MiB), and
    every message is still delivered, in order, once the handler reads."""
    go, done = trio.Event(), trio.Event()
    got: list[bytes] = []

    async def late_reader(ws: trio_ws.WebSocket) -> None:
        await go.wait()
        for _ in range(20):
            got.append(await ws.receive())  # type: ignore[arg-type]
        done.set()
        await ws.wait_closed()

    rec = Recorder(late_reader)
    server = await start_server(nursery, rec)
    async with trio_ws.connect(url_of(server)) as client:
        ws = await rec.connection()
        with traced() as growth:
            for i in range(20):
                await client.send(bytes([i]) * MiB)
            # The server has read what it will read: every byte, or it paused.
            await trio.testing.wait_all_tasks_blocked(0.05)
            held = growth.now
        assert ws.pending <= 2
        assert held < 3.5 * MiB, f"held {held / MiB:.1f} MiB"
        go.set()
        with trio.fail_after(10):
            await done.wait()
    assert [m[:1] for m in got] == [bytes([i]) for i in range(20)]
    assert all(len(m) == MiB for m in got)


async def test_max_queue_bytes_none_keeps_only_the_message_count(
    nursery: trio.Nursery,
) -> None:
    """With max_queue_bytes=None the queue is bounded by max_queue alone."""
    rec = Recorder()
    server = await start_server(nursery, rec, max_queue_bytes=None, max_queue=4)
    async with trio_ws.connect(url_of(server)) as client:
        ws = await rec.connection()
        for _ in range(8):
            await client.send(b"z" * 300_000)
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert ws.pending == 4
        for _ in range(8):
            assert await ws.receive() == b"z" * 300_000


async def test_byte_limit_pauses_reading(nursery: trio.Nursery) -> None:
    """Uncompressed too: the queue stops filling at max_queue_bytes (the
    sender is held back by TCP), and nothing is lost once it is read."""
    rec = Recorder()
    server = await start_server(
        nursery, rec, max_queue_bytes=100_000, max_queue=1000, compression=None
    )
    async with trio_ws.connect(url_of(server), compression=None) as client:
        ws = await rec.connection()

        async def send_all() -> None:
            for i in range(200):
                await client.send(bytes([i]) * 10_000)

        nursery.start_soon(send_all)
        await trio.testing.wait_all_tasks_blocked(0.05)
        # At most the limit plus what one read brought in.
        assert 10 <= ws.pending <= 10 + 13
        for i in range(200):
            assert await ws.receive() == bytes([i]) * 10_000


async def test_queued_bytes_count_what_messages_take(nursery: trio.Nursery) -> None:
    """pending_in_bytes follows every message in and out of the queue (text
    counted by what Python's string takes), whether taken whole, as a
    stream, or handed back after a stream was abandoned; it ends at 0."""
    rec = Recorder()
    server = await start_server(nursery, rec)
    client = await RawClient.connect(server.port)
    ws = await rec.connection()
    texts = ["ascii", "é" * 100, "€" * 100, "😀" * 100]
    wire = b"".join(frame(TEXT, t.encode()) for t in texts)
    # A fragmented message and a binary one.
    wire += frame(TEXT, "😀".encode() * 10, fin=False) + frame(CONTINUATION, b"!")
    wire += frame(BINARY, b"\x00" * 1000)
    await client.send(wire)
    await client.ping_pong()
    stats = ws.stats()
    assert stats.pending_in == 6
    assert 5 + 100 + 200 + 400 + 41 + 1000 <= stats.pending_in_bytes <= 2000
    for expected in texts:
        assert await ws.receive() == expected
    async with ws.receive_stream() as message:
        assert "".join([chunk async for chunk in message]) == "😀" * 10 + "!"  # type: ignore[misc]
    assert await ws.receive() == b"\x00" * 1000
    assert ws.stats().pending_in_bytes == 0
    # A stream whose pieces were queued, abandoned after its first piece.
    await client.send(frame(TEXT, "€".encode() * 50, fin=False))
    await client.ping_pong()
    async with ws.receive_stream() as message:
        async for _ in message:
            break
    await client.send(frame(CONTINUATION, "€".encode()) + frame(TEXT, b"next"))
    assert await ws.receive() == "next"
    assert ws.stats().pending_in_bytes == 0
    await client.aclose()


# -- unit tests: the Reader alone, on memory streams ------------------------------
#
# A server-side Reader reads what a test writes to the other end of a
# trio.testing stream pair. On memory streams the reader is not "direct":
# only its task (Reader.run, started in the test's nursery) reads, and
# receivers wait for it. lockstep_stream_pair() makes the other end's
# send_all() wait until the reader has read: that is where a paused reader
# shows.


class ReaderRig:
    """A Reader on one end of a stream pair, its task running in ``nursery``;
    ``peer`` is the other end. Control events and end-of-file reports are
    collected in ``events`` and ``eofs``; end-of-file starts closing in
    ``state``, the close state, as a connection's does."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        max_queue: int = 16,
        max_queue_bytes: float = math.inf,
        lockstep: bool = False,
        deflate: DeflateExtension | None = None,
    ) -> None:
        pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
        ours, self.peer = pair()
        extensions = [deflate] if deflate is not None else None
        self.protocol = Protocol(Connection(ConnectionType.SERVER, extensions), None, deflate)
        self.events: list[Incoming] = []
        self.eofs: list[BaseException | None] = []
        self.state = CloseState()
        self.reader = Reader(
            ours,
            self.protocol,
            self.state,
            max_queue,
            self.events.append,
            self._on_eof,
            max_queue_bytes,
        )
        assert not self.reader.direct
        nursery.start_soon(self.reader.run)

    def _on_eof(self, error: BaseException | None) -> None:
        self.eofs.append(error)
        self.state.stream_ended(error)


def compressing_client() -> tuple[DeflateExtension, Connection]:
    """A server's negotiated permessage-deflate extension, and a client-side
    wsproto connection that compresses what it sends to it."""
    server = trio_ws.Deflate().extension(client=False, max_message_size=None)
    response = server.accept("permessage-deflate")
    assert isinstance(response, str)
    client = trio_ws.Deflate().extension(client=True, max_message_size=None)
    client.finalize(f"permessage-deflate; {response}")
    return server, Connection(ConnectionType.CLIENT, [client])


async def test_reader_hands_out_messages_in_order(nursery: trio.Nursery) -> None:
    rig = ReaderRig(nursery)
    wire = (
        frame(TEXT, b"one")
        + frame(BINARY, b"two")
        + frame(TEXT, b"thr", fin=False)
        + frame(PING, b"p")  # a control frame between two fragments
        + frame(CONTINUATION, b"ee")
        + frame(TEXT, "é".encode())
    )
    # Frames cut across reads, down to a byte, come out the same.
    for start in range(0, len(wire), 3):
        await rig.peer.send_all(wire[start : start + 3])
        await trio.testing.wait_all_tasks_blocked()
    assert [await rig.reader.receive() for _ in range(4)] == ["one", b"two", "three", "é"]
    assert rig.events == [PingReceived(b"p")]
    reader = rig.reader
    assert (reader.text_in, reader.binary_in, reader.bytes_read) == (3, 1, len(wire))
    assert (reader.queued, reader.queued_bytes) == (0, 0)
    assert rig.eofs == []


async def test_reader_cancelled_receive_loses_nothing(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    rig = ReaderRig(nursery, max_queue=4)
    reader = rig.reader
    # Cancelled with a message queued: it takes nothing.
    await rig.peer.send_all(frame(TEXT, b"kept"))
    await trio.testing.wait_all_tasks_blocked()
    assert reader.queued == 1
    with trio.CancelScope() as scope:
        scope.cancel()
        await reader.receive()
    assert scope.cancelled_caught
    assert reader.queued == 1
    assert await reader.receive() == "kept"
    # Cancelled while waiting: the message that comes next is still there.
    with trio.move_on_after(1) as scope:
        await reader.receive()
    assert scope.cancelled_caught
    await rig.peer.send_all(frame(TEXT, b"next"))
    assert await reader.receive() == "next"

    # Receives cut short at every moment relative to the arrivals (mock
    # time): each message is taken exactly once, in order.
    count = 200

    async def peer() -> None:
        for i in range(count):
            await rig.peer.send_all(frame(TEXT, str(i).encode()))
            await trio.sleep(0.001 * (i % 4))

    nursery.start_soon(peer)
    got: list[str | bytes] = []
    cancelled = 0
    while len(got) < count:
        with trio.move_on_after(0.0015) as scope:
            got.append(await reader.receive())
        cancelled += scope.cancelled_caught
    assert got == [str(i) for i in range(count)]
    assert cancelled > 10
    assert reader.queued == 0


@pytest.mark.parametrize(
    ("max_queue", "max_queue_bytes", "full"),
    [(2, math.inf, 2), (100, 25, 3)],
    ids=["messages", "bytes"],
)
async def test_reader_pauses_when_the_queue_is_full(
    nursery: trio.Nursery, max_queue: int, max_queue_bytes: float, full: int
) -> None:
    """max_queue messages, or max_queue_bytes bytes, queued: nothing more is
    read (the other end's send_all blocks) until a receive makes room."""
    rig = ReaderRig(nursery, max_queue=max_queue, max_queue_bytes=max_queue_bytes, lockstep=True)
    reader = rig.reader
    count = 6
    sent = 0

    async def peer() -> None:
        nonlocal sent
        for i in range(count):
            await rig.peer.send_all(frame(BINARY, bytes([i]) * 10))
            sent += 1

    nursery.start_soon(peer)
    await trio.testing.wait_all_tasks_blocked()
    assert reader.paused
    assert (reader.queued, reader.queued_bytes) == (full, 10 * full)
    assert sent == full  # the next send_all waits: nobody reads it
    for i in range(count):
        assert await reader.receive() == bytes([i]) * 10
        await trio.testing.wait_all_tasks_blocked()
        # Room for one: one more read, then paused again.
        assert sent == min(full + i + 1, count)
        assert reader.queued == min(full, count - i - 1)
    assert not reader.paused


async def test_reader_inflates_a_compressed_backlog_only_as_room_frees(
    nursery: trio.Nursery,
) -> None:
    """A read that brings far more than the queue takes (compressed data):
    it is all read, but only parsed (and inflated) as receives make room."""
    deflate, client = compressing_client()
    rig = ReaderRig(nursery, max_queue=100, max_queue_bytes=3000, deflate=deflate)
    reader = rig.reader
    wire = b"".join(client.send(BytesMessage(bytes([i]) * 1000)) for i in range(20))
    assert len(wire) < 1000  # 20 KB of messages, compressed
    await rig.peer.send_all(wire)
    await trio.testing.wait_all_tasks_blocked()
    assert reader.bytes_read == len(wire)  # every byte read...
    assert (reader.queued, reader.queued_bytes) == (3, 3000)  # ...3 messages inflated
    assert rig.protocol.backlog
    for i in range(20):
        assert await reader.receive() == bytes([i]) * 1000
        await trio.testing.wait_all_tasks_blocked()
        assert reader.queued_bytes == min(3000, 1000 * (19 - i))
    assert not rig.protocol.backlog


async def test_reader_once_closing_queues_nothing_more_and_reads_on(
    nursery: trio.Nursery,
) -> None:
    """Closing starts (the close state says so, and the owner wakes the
    reader): the reader task reads at once although the queue is full, and
    drops what comes; the messages queued before are still handed out, then
    NotOpen."""
    rig = ReaderRig(nursery, max_queue=1, lockstep=True)
    reader = rig.reader
    sent = 0

    async def peer() -> None:
        nonlocal sent
        for i in range(3):
            await rig.peer.send_all(frame(TEXT, str(i).encode()))
            sent += 1

    nursery.start_soon(peer)
    await trio.testing.wait_all_tasks_blocked()
    assert reader.paused
    assert sent == 1
    rig.state.close(1000, "", "local", None)
    reader.wake()
    await trio.testing.wait_all_tasks_blocked()
    assert not reader.paused
    assert sent == 3  # read at once, the queue full or not...
    assert reader.discarded == 2  # ...and dropped
    assert await reader.receive() == "0"
    with pytest.raises(NotOpen):
        await reader.receive()


async def test_reader_end_of_file_after_the_queued_messages(nursery: trio.Nursery) -> None:
    rig = ReaderRig(nursery)
    reader = rig.reader
    outcomes: list[str | bytes] = []

    async def waiting_receiver() -> None:
        try:
            outcomes.append(await reader.receive())
        except NotOpen:
            outcomes.append("NotOpen")

    async with trio.open_nursery() as waiting:
        for _ in range(3):
            waiting.start_soon(waiting_receiver)
        await trio.testing.wait_all_tasks_blocked()
        # Two messages, then end-of-file, in one read: the receivers
        # already waiting take the messages; the third gets NotOpen.
        await rig.peer.send_all(frame(TEXT, b"a") + frame(TEXT, b"b"))
        await rig.peer.send_eof()
    assert sorted(outcomes) == ["NotOpen", "a", "b"]  # type: ignore[type-var]
    assert reader.eof
    assert rig.state.closing
    assert rig.eofs == [None]

    rig = ReaderRig(nursery)
    await rig.peer.send_all(frame(TEXT, b"a") + frame(TEXT, b"b"))
    await rig.peer.send_eof()
    with trio.fail_after(1):
        await rig.reader.wait_eof()
    # Queued messages are still handed out, then NotOpen, every time.
    assert await rig.reader.receive() == "a"
    assert await rig.reader.receive() == "b"
    for _ in range(2):
        with pytest.raises(NotOpen):
            await rig.reader.receive()


async def test_reader_streams_a_message_in_pieces(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    rig = ReaderRig(nursery)
    reader = rig.reader
    # Claimed before it starts: every frame is a piece.
    pieces: list[Piece | str | bytes] = []

    async def take_stream() -> None:
        pieces.append(await reader.start_stream())
        while not pieces[-1].last:  # type: ignore[union-attr]
            pieces.append(await reader.next_piece())

    async with trio.open_nursery() as taking:
        taking.start_soon(take_stream)
        await trio.testing.wait_all_tasks_blocked()
        for part in (frame(TEXT, b"ab", fin=False), frame(CONTINUATION, b"cd", fin=False)):
            await rig.peer.send_all(part)
            await trio.testing.wait_all_tasks_blocked()
        await rig.peer.send_all(frame(CONTINUATION, b"ef") + frame(TEXT, b"whole"))
    assert pieces == [Piece("ab", False), Piece("cd", False), Piece("ef", True)]
    assert await reader.receive() == "whole"

    # Claimed half-way: what arrived so far is the first piece.
    await rig.peer.send_all(
        frame(BINARY, b"12", fin=False) + frame(CONTINUATION, b"34", fin=False)
    )
    await trio.testing.wait_all_tasks_blocked()
    assert await reader.start_stream() == Piece(b"1234", False)
    await rig.peer.send_all(frame(CONTINUATION, b"56"))
    assert await reader.next_piece() == Piece(b"56", True)

    # Abandoned after its first piece: the queued pieces and those still to
    # come are dropped; the next message is whole.
    await rig.peer.send_all(frame(TEXT, b"x", fin=False))
    await trio.testing.wait_all_tasks_blocked()
    assert await reader.start_stream() == Piece("x", False)
    await rig.peer.send_all(frame(CONTINUATION, b"y", fin=False))
    await trio.testing.wait_all_tasks_blocked()
    assert reader.queued == 1
    reader.abandon_stream()
    await rig.peer.send_all(frame(CONTINUATION, b"z", fin=False) + frame(CONTINUATION, b"!"))
    await rig.peer.send_all(frame(TEXT, b"after"))
    assert await reader.receive() == "after"

    # A claim cancelled before its message started takes nothing: the
    # message is received whole.
    with trio.move_on_after(1) as scope:
        await reader.start_stream()
    assert scope.cancelled_caught
    await rig.peer.send_all(frame(TEXT, b"hel", fin=False) + frame(CONTINUATION, b"lo"))
    assert await reader.receive() == "hello"
    assert (reader.queued, reader.queued_bytes) == (0, 0)
