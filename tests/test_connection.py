"""WebSocket connections: messages, cancellation, backpressure, ping, close."""

from __future__ import annotations

import functools
import gc
import random
import socket
import sys
import tracemalloc
from typing import Any

import pytest
import trio
import trio.testing
from conftest import Firehose, Pair, Recorder, echo, start_server, url_of
from rawpeer import TEXT, RawClient, frame, raw_answer
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, TextMessage

import trio_ws
from trio_ws._conn.reader import READ_SIZE
from trio_ws._test_hooks import pings_waiting, set_socket_buffers, socket_of


async def test_echo_text_and_binary(echo_server: trio_ws.Server) -> None:
    async with trio_ws.connect(url_of(echo_server)) as ws:
        await ws.send("héllo")
        assert await ws.receive() == "héllo"
        await ws.send(b"\x00\xff")
        assert await ws.receive() == b"\x00\xff"
        await ws.send(bytearray(b"ba"))
        assert await ws.receive() == b"ba"
        await ws.send(memoryview(b"memview")[3:])
        assert await ws.receive() == b"view"
        await ws.send("")
        assert await ws.receive() == ""


async def test_send_rejects_other_types(echo_server: trio_ws.Server) -> None:
    async with trio_ws.connect(url_of(echo_server)) as ws:
        with pytest.raises(TypeError, match="not int"):
            await ws.send(42)  # type: ignore[arg-type]
        # The connection is still usable afterwards.
        await ws.send("ok")
        assert await ws.receive() == "ok"


async def test_json(echo_server: trio_ws.Server) -> None:
    async with trio_ws.connect(url_of(echo_server)) as ws:
        await ws.send_json({"a": [1, 2, "ü"]})
        assert await ws.receive_json() == {"a": [1, 2, "ü"]}
        await ws.send("not json")
        with pytest.raises(ValueError, match="Expecting value"):
            await ws.receive_json()


async def test_async_for_ends_quietly_on_normal_close(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()
    for i in range(3):
        await pair.server.send(str(i))
    await pair.server.aclose(1001, "bye")
    got = [message async for message in pair.client]
    assert got == ["0", "1", "2"]
    assert pair.client.close_code == 1001
    assert pair.client.close_reason == "bye"
    assert pair.client.close_info is not None
    assert pair.client.close_info.by_peer


async def test_async_for_raises_on_error_close(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()
    await pair.server.send("last")
    await pair.server.aclose(4000, "custom")
    assert await pair.client.receive() == "last"
    with pytest.raises(trio_ws.ConnectionClosed) as info:
        await pair.client.receive()
    assert info.value.code == 4000
    assert info.value.reason == "custom"
    assert info.value.by_peer
    assert not pair.server.close_info.by_peer  # type: ignore[union-attr]


async def test_concurrent_sends_never_interleave(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()
    size = 200_000
    senders = 8

    async def sender(i: int) -> None:
        for j in range(5):
            await pair.client.send(bytes([i]) * size + bytes([j]))

    async with trio.open_nursery() as nursery:
        for i in range(senders):
            nursery.start_soon(sender, i)
        received = [await pair.server.receive() for _ in range(senders * 5)]
    per_sender: dict[int, list[int]] = {}
    for message in received:
        assert isinstance(message, bytes)
        assert len(message) == size + 1
        assert message[:size] == bytes([message[0]]) * size
        per_sender.setdefault(message[0], []).append(message[-1])
    assert per_sender == {i: [0, 1, 2, 3, 4] for i in range(senders)}


async def test_concurrent_receivers_share_messages(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()
    got: list[str] = []

    async def receiver() -> None:
        async for message in pair.server:
            assert isinstance(message, str)
            got.append(message)

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(receiver)
        for i in range(200):
            await pair.client.send(str(i))
        await pair.client.aclose()
    assert sorted(got, key=int) == [str(i) for i in range(200)]


# -- cancellation ------------------------------------------------------------


async def test_cancelled_receives_lose_nothing(
    pair_factory: Any, autojump_clock: trio.testing.MockClock
) -> None:
    pair: Pair = await pair_factory()
    count = 3000
    got: list[str] = []
    cancelled = 0

    async def steady_sender() -> None:
        for i in range(count):
            await pair.server.send(str(i))
            await trio.sleep(0.001 if i % 3 else 0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(steady_sender)
        while len(got) < count:
            with trio.move_on_after(0.0003) as scope:
                message = await pair.client.receive()
                assert isinstance(message, str)
                got.append(message)
            cancelled += scope.cancelled_caught
    assert got == [str(i) for i in range(count)]
    assert cancelled > 1500  # thousands of receives really were cancelled


async def test_cancelled_receive_loop_over_tls_loses_nothing(
    nursery: trio.Nursery, tls: Any, autojump_clock: trio.testing.MockClock
) -> None:
    count = 500

    async def sender(ws: trio_ws.WebSocket) -> None:
        for i in range(count):
            await ws.send(str(i))
            if i % 5 == 0:
                await trio.sleep(0.001)
        await ws.receive()

    server = await start_server(nursery, sender, ssl_context=tls.server_context)
    got = []
    async with trio_ws.connect(
        f"wss://127.0.0.1:{server.port}/", ssl_context=tls.client_context
    ) as ws:
        while len(got) < count:
            with trio.move_on_after(0.0005):
                got.append(await ws.receive())
    assert got == [str(i) for i in range(count)]


def _shrink_buffers(ws: trio_ws.WebSocket, size: int = 16384) -> None:
    set_socket_buffers(ws, send=size, receive=size)


async def _cancelled_big_send(pair: Pair) -> None:
    """Start a big send that blocks (the server does not read), cancel it, then
    send more; the server must see whole messages only, in order."""
    _shrink_buffers(pair.client)
    _shrink_buffers(pair.server)
    # The server's queue holds one message (max_queue=1): once "fill" is in
    # it, the server stops reading and the big send must block.
    await pair.client.send("fill")
    big = random.Random(1).randbytes(4 * 2**20)  # incompressible: it must fill the socket
    with trio.move_on_after(0.2) as scope:
        await pair.client.send(big)
    assert scope.cancelled_caught, "the big send should have blocked"
    sent_after = []
    async with trio.open_nursery() as nursery:

        async def more() -> None:
            for i in range(3):
                await pair.client.send(f"after {i}")
                sent_after.append(i)

        nursery.start_soon(more)
        assert await pair.server.receive() == "fill"
        first = await pair.server.receive()
        # The cancelled send had started, so the connection finished it.
        assert first == big
        assert [await pair.server.receive() for _ in range(3)] == [
            "after 0",
            "after 1",
            "after 2",
        ]
    await pair.client.aclose()
    assert pair.client.close_code == 1000


async def test_cancelled_send_finishes_its_frame(pair_factory: Any) -> None:
    options = {"max_message_size": None, "max_queue": 1}
    await _cancelled_big_send(await pair_factory(server_options=options))


async def test_cancelled_send_over_tls_finishes_its_frame(nursery: trio.Nursery, tls: Any) -> None:
    send, receive = trio.open_memory_channel[trio_ws.WebSocket](1)

    async def handler(ws: trio_ws.WebSocket) -> None:
        await send.send(ws)
        await ws.wait_closed()

    server = await start_server(
        nursery, handler, ssl_context=tls.server_context, max_message_size=None, max_queue=1
    )
    client = await trio_ws.start_connection(
        nursery, f"wss://127.0.0.1:{server.port}/", ssl_context=tls.client_context
    )
    await _cancelled_big_send(Pair(client, await receive.receive()))


async def test_send_cancelled_before_writing_sends_nothing(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()
    with trio.CancelScope() as scope:
        scope.cancel()
        await pair.client.send("never")
    await pair.client.send("first")
    assert await pair.server.receive() == "first"


class _Steps(trio.abc.Instrument):
    """Counts the times one task is resumed by the scheduler."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.count = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.count += 1


async def test_send_right_after_receive_yields_once_not_twice(
    echo_server: trio_ws.Server,
) -> None:
    async with trio_ws.connect(url_of(echo_server)) as ws:
        steps = _Steps(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(steps)
        try:
            await ws.send("a")
            assert await ws.receive() == "a"  # waited: other tasks ran
            before = steps.count
            await ws.send("b")  # so this send does not yield again
            assert steps.count == before
            await ws.send("c")  # a send after a send does
            assert steps.count == before + 1
            with trio.testing.assert_checkpoints():
                await ws.send("d")
            assert [await ws.receive() for _ in "bcd"] == ["b", "c", "d"]
            # Right after a receive, send() is still a cancellation point.
            with trio.CancelScope() as scope:
                scope.cancel()
                await ws.send("never")
            assert scope.cancelled_caught
            await ws.send("e")
            assert await ws.receive() == "e"
        finally:
            trio.lowlevel.remove_instrument(steps)


# -- backpressure ------------------------------------------------------------


async def test_backpressure_stops_reading_when_queue_is_full(pair_factory: Any) -> None:
    pair: Pair = await pair_factory(server_options={"max_queue": 4})
    _shrink_buffers(pair.client, 8192)
    _shrink_buffers(pair.server, 8192)
    message = random.Random(2).randbytes(4096)  # incompressible
    sent = 0
    # The server application does not read: the client's sends must block
    # once the server's queue and both socket buffers are full.
    with trio.move_on_after(1) as scope:
        while True:
            await pair.client.send(message)
            sent += 1
    assert scope.cancelled_caught
    # At most max_queue messages, plus what the last read (64 KiB) carried.
    assert pair.server.stats().pending_in <= 4 + READ_SIZE // len(message)
    # Memory stays bounded: a few hundred KiB at most, not everything sent.
    assert sent < 200
    # Reading again resumes the flow; every message arrives, in order.
    count = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pair.client.send, b"end")
        while (got := await pair.server.receive()) != b"end":
            assert got == message
            count += 1
    assert count in (sent, sent + 1)  # the cancelled send may have gone out


# -- ping --------------------------------------------------------------------


async def test_ping_waits_for_pong(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()
    rtt = await pair.client.ping()
    assert 0 <= rtt < 1
    assert await pair.server.ping(b"payload") >= 0


async def test_ping_rejects_bad_payloads(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()
    with pytest.raises(ValueError, match="125"):
        await pair.client.ping(b"x" * 126)


async def test_ping_on_closed_connection_raises(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()
    await pair.client.aclose()
    with pytest.raises(trio_ws.ConnectionClosed):
        await pair.client.ping()


# -- closing -----------------------------------------------------------------


async def test_aclose_is_idempotent_and_concurrent(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(pair.client.aclose)
    await pair.client.aclose()
    assert pair.client.closed
    info = await pair.server.wait_closed()
    assert info.code == 1000
    assert info.by_peer
    assert pair.client.close_info == trio_ws.CloseInfo(1000, "", "local")


async def test_aclose_validates_code_and_reason(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()
    for code in (999, 1004, 1005, 1006, 1015, 2000, 5000):
        with pytest.raises(ValueError, match="cannot be sent"):
            await pair.client.aclose(code)
    with pytest.raises(ValueError, match="123"):
        await pair.client.aclose(1000, "é" * 62)
    await pair.client.aclose(3000, "é" * 61)
    assert (await pair.server.wait_closed()).code == 3000


async def test_send_and_receive_after_close_raise(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()
    await pair.server.send("queued")
    await pair.client.ping()  # the message is certainly queued at the client now
    await pair.server.aclose(1000)
    # A message that arrived before the close is still delivered.
    assert await pair.client.receive() == "queued"
    with pytest.raises(trio_ws.ConnectionClosed) as info:
        await pair.client.receive()
    assert info.value.code == 1000
    with pytest.raises(trio_ws.ConnectionClosed):
        await pair.client.send("late")


async def test_close_waits_at_most_close_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # A raw peer that completes the handshake but never answers the close.
    recorder = Recorder()
    server = await start_server(nursery, recorder, close_timeout=3)
    raw = await RawClient.connect(server.port)
    server_side = await recorder.connection()
    start = trio.current_time()
    await server_side.aclose()
    assert trio.current_time() - start == pytest.approx(3, abs=0.1)
    info = server_side.close_info
    assert info is not None
    assert info.code == 1006
    assert info.cause == "closing handshake timed out"
    await raw.aclose()


async def test_peer_vanishing_gives_1006(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()
    sock = socket_of(pair.client)
    assert sock is not None
    sock.close()  # the TCP connection just ends
    with pytest.raises(trio_ws.ConnectionClosed) as info:
        await pair.server.receive()
    assert info.value.code == 1006
    assert info.value.by_peer
    assert "without a close frame" in (info.value.info.cause or "")


async def test_peer_reset_gives_1006(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()
    sock = socket_of(pair.client)
    assert sock is not None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # RST
    with pytest.raises(trio_ws.ConnectionClosed) as info:
        async for _ in pair.server:
            pass
    assert info.value.code == 1006


async def test_cancelled_aclose_aborts(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()
    with trio.CancelScope() as scope:
        scope.cancel()
        await pair.client.aclose()
    assert pair.client.closed
    assert pair.client.close_code == 1006


# -- attributes --------------------------------------------------------------


async def test_attributes(nursery: trio.Nursery) -> None:
    seen: list[trio_ws.WebSocket] = []

    async def handler(ws: trio_ws.WebSocket) -> None:
        seen.append(ws)
        await echo(ws)

    server = await start_server(nursery, handler)
    headers = {"Origin": "https://example.com", "Cookie": "a=1"}
    async with trio_ws.connect(url_of(server, "/chat?room=7"), headers=headers) as ws:
        await ws.send("x")
        await ws.receive()
        remote = seen[0]
        assert remote.path == "/chat"
        assert remote.request.query == "room=7"
        assert remote.request.method == "GET"
        assert remote.request.headers["host"] == f"127.0.0.1:{server.port}"
        assert remote.request.origin == "https://example.com"
        assert remote.request.headers.get_all("Cookie") == ["a=1"]
        assert ws.path == "/chat"
        assert ws.is_client
        assert not remote.is_client
        assert ws.id != remote.id
        assert ws.remote_address == ("127.0.0.1", server.port)
        assert remote.local_address == ("127.0.0.1", server.port)
        assert remote.remote_address == ws.local_address
        assert ws.subprotocol is None
        assert not ws.closed
        assert ws.close_code is None
        assert ws.close_info is None
        assert "open" in repr(ws)
    assert ws.closed
    assert "closed" in repr(ws)


async def test_deadline_per_conversation(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def three_parts(ws: trio_ws.WebSocket) -> None:
        async for request in ws:
            for part in range(3):
                await trio.sleep(1)
                await ws.send(f"{request} {part}")

    server = await start_server(nursery, three_parts)
    async with trio_ws.connect(url_of(server)) as ws:
        replies = []
        with trio.move_on_after(2.5) as scope:
            await ws.send("a")
            while len(replies) < 3:
                replies.append(await ws.receive())
        assert scope.cancelled_caught
        assert replies == ["a 0", "a 1"]
        # Nothing was lost: the late reply is the next message.
        assert await ws.receive() == "a 2"
        with trio.fail_after(3.5):
            await ws.send("b")
            assert [await ws.receive() for _ in range(3)] == ["b 0", "b 1", "b 2"]


async def test_queued_sends_fail_cleanly_when_the_close_starts(pair_factory: Any) -> None:
    pair: Pair = await pair_factory(server_options={"max_queue": 1})
    _shrink_buffers(pair.client)
    _shrink_buffers(pair.server)
    outcomes: list[str] = []

    async def sender(i: int) -> None:
        try:
            await pair.client.send(random.Random(i).randbytes(100_000))
            outcomes.append("sent")
        except trio_ws.ConnectionClosed as exc:
            outcomes.append(f"closed {exc.code}")

    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(sender, i)
        # The server reads nothing, so most sends are queued behind a blocked
        # one when the server closes the connection.
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(pair.server.aclose, 1001, "bye")
        while True:  # drain, so that the close frame can get through
            try:
                await pair.server.receive()
            except trio_ws.ConnectionClosed:
                break
    assert len(outcomes) == 10
    assert "closed 1001" in outcomes
    assert set(outcomes) <= {"sent", "closed 1001"}


async def test_tls_peer_reset_during_a_blocked_send(nursery: trio.Nursery, tls: Any) -> None:
    firehose = Firehose()
    recorder = Recorder(firehose)
    server = await start_server(nursery, recorder, ssl_context=tls.server_context)
    client = await trio_ws.start_connection(
        nursery, f"wss://127.0.0.1:{server.port}/", ssl_context=tls.client_context
    )
    await client.receive()  # the server is sending; it will soon block
    raw = socket_of(client)  # under the TLS stream
    assert raw is not None
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01" + b"\x00" * 7)
    raw.close()  # RST under the TLS stream
    info = await recorder.closed()
    assert info.code == 1006
    assert firehose.stopped_by is not None
    assert firehose.stopped_by.code == 1006


async def test_ping_payloads_cannot_be_shared(nursery: trio.Nursery) -> None:
    recorder = Recorder()
    server = await start_server(nursery, recorder)
    raw = await RawClient.connect(server.port)  # never reads: pings go unanswered
    ws = await recorder.connection()
    async with trio.open_nursery() as pinging:
        pinging.start_soon(ws.ping, b"same")
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(ValueError, match="already waiting"):
            await ws.ping(b"same")
        pinging.cancel_scope.cancel()
    assert pings_waiting(ws) == 0  # the cancelled ping left nothing behind
    await raw.aclose()


@pytest.mark.parametrize(
    ("compression", "bound"), [(None, 30), (trio_ws.Deflate(), 96)], ids=["off", "deflate"]
)
async def test_idle_connections_stay_small(
    nursery: trio.Nursery, compression: trio_ws.Deflate | None, bound: float
) -> None:
    """Memory per idle connection, both sides in this process, after one
    exchange (bench/memory.py measures each side on its own, against other
    libraries: 14.8 and 11.8 KiB without compression, 28.6 and 51.3 with).
    The bounds leave room for other Python versions; what they catch is an
    idle connection growing by a task, an event per wait or an exception
    kept alive, each of which would cost a tenth or more."""
    server = await start_server(nursery, compression=compression)  # an echo server

    async def open_some(count: int) -> list[trio_ws.WebSocket]:
        clients = []
        for _ in range(count):
            url = url_of(server)
            ws = await trio_ws.start_connection(nursery, url, compression=compression)
            await ws.send("x" * 100)
            assert await ws.receive() == "x" * 100
            clients.append(ws)
        await trio.testing.wait_all_tasks_blocked()
        return clients

    count = 50
    warm = await open_some(2)
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.take_snapshot()
        clients = await open_some(count)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    per_pair = grown / count / 1024
    if sys.gettrace() is not None:
        bound *= 1.2  # coverage's tracer keeps data for each suspended frame
    if sys.version_info < (3, 11):
        bound *= 1.3  # 3.10's suspended frames are whole frame objects: 35 KiB here, not 26
    assert per_pair < bound, f"{per_pair:.1f} KiB per idle connection (client and server)"
    for ws in warm + clients:
        await ws.aclose()


async def test_a_message_before_a_protocol_error_can_still_be_answered(
    nursery: trio.Nursery,
) -> None:
    """A valid message and a broken frame arrive together (here with the
    server's handshake answer): the connection fails with 1002, but the
    message is delivered first, and an answer sent at once goes out before
    the close frame (Autobahn's "strict" behaviour, cases 3.2 to 5.15)."""
    seen: list[Any] = []

    async def raw_server(stream: trio.SocketStream) -> None:
        bad = frame(TEXT, b"bad", rsv=2, mask=False)  # no extension allows RSV2
        await raw_answer(stream, then=frame(TEXT, b"hello", mask=False) + bad)
        parser = Connection(ConnectionType.SERVER)
        while not any(isinstance(event, CloseConnection) for event in seen):
            data = await stream.receive_some(65536)
            if not data:
                break
            parser.receive_data(data)
            seen.extend(parser.events())

    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, raw_server, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    async with trio_ws.connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
        message = await ws.receive()
        await ws.send(message.upper())
        with pytest.raises(trio_ws.ConnectionClosed) as closed:
            await ws.receive()
    assert closed.value.info.code == 1002
    assert [type(event) for event in seen] == [TextMessage, CloseConnection]
    assert seen[0].data == "HELLO"
    assert seen[1].code == 1002
