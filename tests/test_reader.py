"""The incoming side under hostile input: what a peer can make a connection
hold in memory, over real loopback sockets (see trio_ws/_reader.py and the
limits in docs/security.md)."""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

import trio
import trio.testing
from conftest import Recorder, start_server, url_of
from rawpeer import BINARY, CONTINUATION, TEXT, RawClient, frame

import trio_ws
from trio_ws._protocol import FRAME_MIN_CHARGE, FREE_FRAMES

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
