"""Messages sent as several frames, and messages received piece by piece."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio
import trio.testing
from conftest import Pair, Recorder, start_server
from rawpeer import BINARY, CONTINUATION, PING, TEXT, RawClient, frame

import trio_ws
from trio_ws._conn.reader import READ_SIZE
from trio_ws._test_hooks import negotiated_deflate


async def chunks_slowly(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        await trio.sleep(0.01)
        yield part


async def test_send_stream_sync_and_async_iterables(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()
    await pair.client.send_stream(["he", "llo", ""])
    assert await pair.server.receive() == "hello"
    await pair.client.send_stream(chunks_slowly([b"a" * 1000, b"b" * 1000]))
    assert await pair.server.receive() == b"a" * 1000 + b"b" * 1000
    await pair.client.send_stream(iter([memoryview(b"view")]))
    assert await pair.server.receive() == b"view"
    await pair.client.send_stream([])
    assert await pair.server.receive() == b""
    with pytest.raises(TypeError, match="iterable of chunks"):
        await pair.client.send_stream(b"not chunks")
    assert pair.client.stats().traffic.messages_out == 4


async def test_send_stream_makes_one_frame_per_chunk(nursery: trio.Nursery) -> None:
    recorder = Recorder()
    server = await start_server(nursery, recorder, compression=None)
    async with trio_ws.connect(f"ws://127.0.0.1:{server.port}/", compression=None) as ws:
        remote = await recorder.connection()
        # Pings between the chunks prove each frame is read on its own.
        await ws.send_stream([b"one", b"two", b"three"])
        async with remote.receive_stream() as message:
            chunks = [chunk async for chunk in message]
        assert b"".join(chunks) == b"onetwothree"
        # Three frames plus an empty final one, each with a 6-byte header.
        assert remote.stats().traffic.bytes_in == 4 * 6 + 3 + 3 + 5


async def test_other_messages_wait_for_a_streamed_one(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()
    release = trio.Event()

    async def held_chunks() -> AsyncIterator[str]:
        yield "first half, "
        await release.wait()
        yield "second half"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pair.client.send_stream, held_chunks())
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(pair.client.send, "a whole message")
        await trio.testing.wait_all_tasks_blocked()
        # Pings still pass between the frames of the streamed message.
        assert await pair.client.ping() >= 0
        release.set()
    assert await pair.server.receive() == "first half, second half"
    assert await pair.server.receive() == "a whole message"


async def test_interrupted_stream_closes_with_1011(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()

    def failing() -> Iterator[bytes]:
        yield b"part"
        yield b"more"
        raise ValueError("producer failed")

    with pytest.raises(ValueError, match="producer failed"):
        await pair.client.send_stream(failing())
    info = await pair.server.wait_closed()
    assert info.code == 1011
    assert info.reason == "message interrupted"
    assert pair.client.close_info is not None
    assert pair.client.close_info.cause == (
        "a streamed message was interrupted after its first frame"
    )


async def test_stream_cancelled_before_its_first_frame_sends_nothing(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()

    async def never() -> AsyncIterator[bytes]:
        await trio.sleep_forever()
        yield b""  # pragma: no cover

    with trio.move_on_after(0.05):
        await pair.client.send_stream(never())
    await pair.client.send("still fine")
    assert await pair.server.receive() == "still fine"


async def test_receive_stream_chunks_arrive_as_frames_do(nursery: trio.Nursery) -> None:
    recorder = Recorder()
    server = await start_server(nursery, recorder)
    raw = await RawClient.connect(server.port)
    ws = await recorder.connection()
    await raw.send(frame(TEXT, "héllo ".encode(), fin=False))
    async with ws.receive_stream() as message:
        assert message.is_text
        assert await message.__anext__() == "héllo "
        await raw.send(frame(PING, b"interleaved") + frame(CONTINUATION, b"world", fin=False))
        assert await message.__anext__() == "world"
        await raw.send(frame(CONTINUATION, b"!"))
        assert [chunk async for chunk in message] == ["!"]
    # Later messages are whole again.
    await raw.send(frame(BINARY, b"next"))
    assert await ws.receive() == b"next"
    await raw.aclose()


async def test_receive_stream_of_a_message_already_here(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()
    await pair.client.send(b"whole")
    await pair.client.ping()  # the message is queued at the server by now
    async with pair.server.receive_stream() as message:
        assert not message.is_text
        assert await message.read_all() == b"whole"


async def test_receive_stream_takes_over_a_half_assembled_message(
    nursery: trio.Nursery,
) -> None:
    recorder = Recorder()
    server = await start_server(nursery, recorder)
    raw = await RawClient.connect(server.port)
    ws = await recorder.connection()
    await raw.send(frame(BINARY, b"ab", fin=False) + frame(CONTINUATION, b"cd", fin=False))
    await raw.ping_pong()  # both frames have been read
    async with ws.receive_stream() as message:
        assert await message.__anext__() == b"abcd"
        await raw.send(frame(CONTINUATION, b"ef"))
        assert await message.read_all() == b"ef"
    await raw.aclose()


async def test_large_message_never_held_whole(pair_factory: Any) -> None:
    """A 16 MiB message through a 1 MiB max_message_size... is refused, but a
    streamed 900 KiB one arrives in pieces no bigger than one read."""
    pair: Pair = await pair_factory(server_options={"max_message_size": 2**20})
    data = random.Random(3).randbytes(900 * 1024)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pair.client.send, data)
        async with pair.server.receive_stream() as message:
            sizes = [len(chunk) async for chunk in message]
    assert sum(sizes) == len(data)
    assert max(sizes) <= READ_SIZE < len(data) // 7


async def test_receive_stream_enforces_max_message_size(pair_factory: Any) -> None:
    pair: Pair = await pair_factory(server_options={"max_message_size": 1000})
    await pair.client.send_stream([b"x" * 600, b"y" * 600])
    async with pair.server.receive_stream() as message:
        assert await message.__anext__() == b"x" * 600
        with pytest.raises(trio_ws.ConnectionClosed) as info:
            await message.__anext__()  # the second chunk goes over the limit
    assert info.value.code == 1009


async def test_leaving_a_stream_early_drops_the_rest(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()

    async def parts() -> AsyncIterator[bytes]:
        for i in range(5):
            yield bytes([i]) * 10
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pair.client.send_stream, parts())
        async with pair.server.receive_stream() as message:
            assert await message.__anext__() == b"\x00" * 10
    await pair.client.send("after")
    assert await pair.server.receive() == "after"


async def test_receive_waits_for_another_tasks_stream(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()
    order: list[str] = []
    release = trio.Event()

    async def slow_parts() -> AsyncIterator[str]:
        yield "streamed "
        await release.wait()
        yield "message"

    async def plain_receiver() -> None:
        order.append(f"receive: {await pair.server.receive()}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pair.client.send_stream, slow_parts())
        async with pair.server.receive_stream() as message:
            nursery.start_soon(plain_receiver)
            first = await message.__anext__()
            release.set()
            order.append(f"stream: {first}{await message.read_all()}")
        await pair.client.send("afterwards")
    assert order == ["stream: streamed message", "receive: afterwards"]


async def test_cancelled_receive_stream_loses_nothing(
    pair_factory: Any, autojump_clock: trio.testing.MockClock
) -> None:
    pair: Pair = await pair_factory()
    count = 300
    got: list[str] = []

    async def sender() -> None:
        for i in range(count):
            await pair.client.send_stream([str(i), "-", "x" * (i % 7)])
            await trio.sleep(0.001 if i % 2 else 0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        while len(got) < count:
            if len(got) % 2:
                with trio.move_on_after(0.0003):
                    got.append(await pair.server.receive())  # type: ignore[arg-type]
                continue
            # Entering a stream is cancel-safe (leaving one early is not: it
            # drops the rest of the message on purpose).
            stream = pair.server.receive_stream()
            with trio.move_on_after(0.0003) as scope:
                message = await stream.__aenter__()
            if scope.cancelled_caught:
                continue
            got.append(await message.read_all())  # type: ignore[arg-type]
            await stream.__aexit__(None, None, None)
    assert got == [f"{i}-" + "x" * (i % 7) for i in range(count)]


async def test_pings_between_compressed_fragments(nursery: trio.Nursery) -> None:
    """wsproto alone resets the compression state on a control frame that
    arrives between two fragments of a compressed message."""
    recorder = Recorder()
    server = await start_server(nursery, recorder)
    async with trio_ws.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        remote = await recorder.connection()
        assert negotiated_deflate(remote) is not None

        async def parts() -> AsyncIterator[str]:
            for i in range(4):
                yield f"part {i} " * 20
                await ws.ping()  # its frame goes between the fragments
            await remote.ping()  # and one the other way, before the next message

        await ws.send_stream(parts())
        assert await remote.receive() == "".join(f"part {i} " * 20 for i in range(4))
        await ws.send("and the next compressed message " * 5)
        assert await remote.receive() == "and the next compressed message " * 5
