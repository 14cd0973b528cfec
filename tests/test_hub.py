"""The hub: registry, rooms, broadcasting, slow clients, limits, clean-up."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from conftest import all_tasks, open_fds, start_server, url_of
from rawpeer import RawClient

import trio_ws
from trio_ws._conn.delivery import Framings
from trio_ws._test_hooks import set_socket_buffers, socket_of

RST_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


class Registrar:
    """A handler that registers each connection with ``hub`` (metadata: the
    path), runs ``body`` (default: wait until closed), and reports how many
    are registered: ``await registrar.until(n)``."""

    def __init__(
        self,
        hub: trio_ws.Hub,
        body: Callable[[trio_ws.WebSocket, trio_ws.Member], Any] | None = None,
    ) -> None:
        self.hub = hub
        self.body = body
        self.members: dict[str, trio_ws.Member] = {}
        self._changed = trio.Event()

    async def __call__(self, ws: trio_ws.WebSocket) -> None:
        async with self.hub.register(ws, path=ws.path) as member:
            self.members[ws.path] = member
            self._changed.set()
            if self.body is not None:
                await self.body(ws, member)
            else:
                await ws.wait_closed()

    async def until(self, count: int) -> None:
        while len(self.members) < count:
            self._changed = trio.Event()
            await self._changed.wait()


async def receive_all(ws: trio_ws.WebSocket, count: int) -> list[str | bytes]:
    return [await ws.receive() for _ in range(count)]


# -- registry and rooms --------------------------------------------------------


async def test_rooms_exclude_and_registry(nursery: trio.Nursery) -> None:
    async with trio_ws.open_hub() as hub:
        registrar = Registrar(hub)
        server = await start_server(nursery, registrar)
        ann = await trio_ws.start_connection(nursery, url_of(server, "/ann"))
        bob = await trio_ws.start_connection(nursery, url_of(server, "/bob"))
        cid = await trio_ws.start_connection(nursery, url_of(server, "/cid"))
        await registrar.until(3)
        a, b, c = (registrar.members[p] for p in ("/ann", "/bob", "/cid"))
        assert hub.connections == (a.ws, b.ws, c.ws)
        assert hub.get(b.id) is b
        assert hub.get(-1) is None
        assert b.metadata == {"path": "/bob"}

        assert hub.join(a.ws, "lobby")
        assert hub.join(b.id, "lobby")  # by id
        assert hub.join(c, "lobby")  # by Member
        assert not hub.join(a.ws, "lobby")  # already in it
        assert hub.join(a.ws, "games")
        assert hub.rooms == ("lobby", "games")
        assert hub.rooms_of(a.ws) == ("lobby", "games")
        assert a.rooms == ("lobby", "games")
        assert hub.members("lobby") == (a, b, c)
        assert hub.members() == (a, b, c)
        assert hub.room_size("lobby") == 3
        assert hub.room_size("nowhere") == 0
        assert hub.members("nowhere") == ()
        assert hub.in_room(b.ws, "lobby")
        assert not hub.in_room(b.ws, "games")

        # To everyone, to a room, except one, except several.
        assert hub.broadcast("all") == 3
        assert hub.broadcast("games only", room="games") == 1
        assert hub.broadcast(b"not ann", room="lobby", exclude=a.ws) == 2
        assert hub.broadcast("only cid", exclude=[a.ws, b.id]) == 1
        assert hub.broadcast_json({"n": 1, "text": "é"}, room="lobby", exclude=c) == 2
        assert hub.broadcast("nobody", room="nowhere") == 0
        assert await receive_all(ann, 3) == ["all", "games only", '{"n":1,"text":"é"}']
        assert await receive_all(bob, 3) == ["all", b"not ann", '{"n":1,"text":"é"}']
        assert await receive_all(cid, 3) == ["all", b"not ann", "only cid"]

        # Leaving: a room without members ceases to exist.
        assert hub.leave(a.ws, "games")
        assert not hub.leave(a.ws, "games")
        assert hub.rooms == ("lobby",)
        assert hub.rooms_of(a.ws) == ("lobby",)
        assert hub.rooms_of(12345) == ()

        # When a register block ends the connection leaves the hub and its
        # rooms; its Member keeps the rooms it was in.
        await bob.aclose()
        with trio.fail_after(5):
            while b.active:
                await trio.testing.wait_all_tasks_blocked()
        assert hub.connections == (a.ws, c.ws)
        assert hub.members("lobby") == (a, c)
        assert b.rooms == ("lobby",)
        assert hub.get(b.id) is None
        assert not hub.leave(b.ws, "lobby")
        stats = hub.stats()
        assert (stats.connections, stats.rooms, stats.broadcasts) == (2, 1, 6)
        assert stats.deliveries == 3 + 1 + 2 + 1 + 2
        assert (stats.drops, stats.slow_closes, stats.queued_bytes) == (0, 0, 0)


async def test_direct_send(nursery: trio.Nursery) -> None:
    async with trio_ws.open_hub() as hub:
        registrar = Registrar(hub)
        server = await start_server(nursery, registrar)
        ann = await trio_ws.start_connection(nursery, url_of(server, "/ann"))
        await registrar.until(1)
        member = registrar.members["/ann"]
        assert hub.send_to(member.id, "by id")
        assert hub.send_to(member.ws, bytearray(b"by ws"))
        assert hub.send_json_to(member, ["by", "member"])
        assert not hub.send_to(98765, "nobody")
        assert await receive_all(ann, 3) == ["by id", b"by ws", '["by","member"]']
        stats = hub.stats()
        assert (stats.direct_sends, stats.deliveries, stats.broadcasts) == (4, 3, 0)


async def test_join_rules(nursery: trio.Nursery) -> None:
    async with trio_ws.open_hub() as hub:
        done = trio.Event()

        async def body(ws: trio_ws.WebSocket, member: trio_ws.Member) -> None:
            await done.wait()

        registrar = Registrar(hub, body)
        server = await start_server(nursery, registrar)
        client = await trio_ws.start_connection(nursery, url_of(server, "/x"))
        await registrar.until(1)
        member = registrar.members["/x"]
        with pytest.raises(TypeError):
            hub.join(member.ws, 7)  # type: ignore[arg-type]
        with pytest.raises(KeyError, match="not registered"):
            hub.join(424242, "lobby")
        with pytest.raises(TypeError):
            hub.join("x", "lobby")  # type: ignore[arg-type]
        with pytest.raises(RuntimeError, match="already registered"):
            async with hub.register(member.ws):
                pass  # pragma: no cover
        assert hub.join(member.ws, "lobby")
        await client.aclose()
        # A closing connection cannot join or be sent to; the hub takes it out.
        assert not hub.join(member.ws, "other")
        assert not member.active
        assert member.rooms == ("lobby",)
        assert not hub.join(member.ws, "other")  # still quiet once it has left
        assert not hub.send_to(member.ws, "too late")
        done.set()


async def test_hub_lifecycle_errors() -> None:
    hub = trio_ws.open_hub()
    with pytest.raises(RuntimeError, match="inside its block"):
        hub.broadcast("x")
    async with hub:
        assert "open" in repr(hub)
    with pytest.raises(trio.ClosedResourceError):
        hub.broadcast("x")
    with pytest.raises(trio.ClosedResourceError):
        hub.send_to(1, "x")
    with pytest.raises(RuntimeError, match="already entered"):
        async with hub:
            pass  # pragma: no cover
    for bad in (
        {"policy": "block"},
        {"max_pending": 0},
        {"max_pending_bytes": -1},
        {"max_pending": True},
        {"slow_close_code": 1006},
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - each names its argument
            trio_ws.open_hub(**bad)
    async with trio_ws.open_hub(max_pending=None, max_pending_bytes=None) as unlimited:
        with pytest.raises(TypeError):
            unlimited.broadcast(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            async with unlimited.register("not a websocket"):  # type: ignore[arg-type]
                pass  # pragma: no cover
        assert unlimited.broadcast("to nobody") == 0


# -- fan-out -------------------------------------------------------------------


async def test_message_is_framed_once_per_broadcast(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    framed: list[bytes] = []
    real = Framings.plain

    def counting(self: Framings, message: Any) -> bytes:
        framed.append(real(self, message))
        return framed[-1]

    monkeypatch.setattr(Framings, "plain", counting)
    async with trio_ws.open_hub() as hub:
        registrar = Registrar(hub)
        server = await start_server(nursery, registrar)
        clients = [
            await trio_ws.start_connection(nursery, url_of(server, f"/{i}")) for i in range(5)
        ]
        await registrar.until(5)
        assert hub.broadcast("x" * 1000) == 5
        assert hub.broadcast(memoryview(b"y" * 100)) == 5
        assert len(framed) == 2
        for client in clients:
            assert await receive_all(client, 2) == ["x" * 1000, b"y" * 100]


async def test_client_side_connections_are_framed_per_connection(nursery: trio.Nursery) -> None:
    # A client connection masks its frames, so it cannot share the server
    # framing: the hub still works, framing per connection.
    got = trio.open_memory_channel[str | bytes](10)

    async def collect(ws: trio_ws.WebSocket) -> None:
        async for message in ws:
            await got[0].send(message)

    server = await start_server(nursery, collect)
    async with trio_ws.open_hub() as hub:
        upstreams = [await trio_ws.start_connection(nursery, url_of(server)) for _ in range(2)]
        async with hub.register(upstreams[0]), hub.register(upstreams[1]):
            assert hub.broadcast("to both servers") == 2
            assert hub.send_to(upstreams[1], b"direct")
            received = sorted([await got[1].receive() for _ in range(3)], key=repr)
        assert received == ["to both servers", "to both servers", b"direct"]


async def test_send_and_broadcasts_keep_their_order(nursery: trio.Nursery) -> None:
    big = b"z" * 65536

    async def body(ws: trio_ws.WebSocket, member: trio_ws.Member) -> None:
        hub.broadcast("b1")
        await ws.send("d1")
        hub.broadcast("b2")
        hub.send_to(ws, "t1")
        await ws.send("d2")
        # A backlog of broadcasts: a send still waits its turn behind them.
        for _ in range(12):
            hub.broadcast(big)
        await ws.send("after the backlog")
        await ws.wait_closed()

    async with trio_ws.open_hub() as hub:
        server = await start_server(nursery, Registrar(hub, body))
        async with trio_ws.connect(url_of(server)) as client:
            assert await receive_all(client, 5) == ["b1", "d1", "b2", "t1", "d2"]
            assert await receive_all(client, 13) == [big] * 12 + ["after the backlog"]


# -- slow clients ----------------------------------------------------------------

SLOW_LIMIT = 32 * 1024
MESSAGES = 400


def numbered(i: int) -> bytes:
    return i.to_bytes(4, "big") + b"." * 1020  # 1 KiB


def break_sending(ws: trio_ws.WebSocket) -> None:
    """Shut ``ws``'s socket down for writing, under it: its next write
    fails (EPIPE), and it notices nothing until then."""
    sock = socket_of(ws)
    assert sock is not None
    sock.shutdown(socket.SHUT_WR)


async def stalled_client(port: int) -> RawClient:
    """A client that completed the handshake and will never read again."""
    raw = await RawClient.connect(port, "/stalled")
    raw.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return raw


@pytest.mark.parametrize("policy", ["close", "drop"])
async def test_slow_consumer_never_delays_the_others(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, policy: str
) -> None:
    async def body(ws: trio_ws.WebSocket, member: trio_ws.Member) -> None:
        if ws.path == "/stalled":
            # Small kernel buffers, so the hub's queue is what fills up.
            set_socket_buffers(ws, send=4096)
        await ws.wait_closed()

    received: dict[int, list[int]] = {}
    counted = trio.Event()

    async def healthy(i: int, task_status: trio.TaskStatus[None]) -> None:
        async with trio_ws.connect(url_of(server, f"/healthy{i}")) as ws:
            task_status.started()
            got = received[i] = []
            while len(got) < MESSAGES:
                message = await ws.receive()
                assert isinstance(message, bytes)
                got.append(int.from_bytes(message[:4], "big"))
            await counted.wait()

    async with trio_ws.open_hub(policy=policy, max_pending_bytes=SLOW_LIMIT) as hub:  # type: ignore[arg-type]
        registrar = Registrar(hub, body)
        server = await start_server(nursery, registrar, close_timeout=1)
        raw = await stalled_client(server.port)
        async with trio.open_nursery() as clients:
            for i in range(3):
                await clients.start(healthy, i)
            await registrar.until(4)
            stalled = registrar.members["/stalled"]
            start = trio.current_time()
            deepest = 0
            dealt_with_at = None
            for i in range(MESSAGES):  # 1 KiB every 5 ms
                hub.broadcast(numbered(i))
                deepest = max(deepest, stalled.ws.stats().pending_out_bytes)
                if dealt_with_at is None and (stalled.ws.closing or stalled.drops):
                    dealt_with_at = trio.current_time() - start
                await trio.sleep(0.005)
            stats = hub.stats()
            counted.set()
        # Every healthy client got every message, in order.
        for got in received.values():
            assert got == list(range(MESSAGES))
        # The stalled one was dealt with within bounded time, its queue bounded.
        assert dealt_with_at is not None
        assert dealt_with_at < 1.5
        assert 0 < deepest <= SLOW_LIMIT
        if policy == "close":
            assert stalled.ws.closing
            assert not stalled.active
            with trio.fail_after(1.5):  # close_timeout, then the connection is aborted
                info = await stalled.ws.wait_closed()
            assert (info.code, info.reason) == (1013, "client fell behind")
            assert info.cause is not None
            assert info.cause.startswith("slow client:")
            assert stats.slow_closes == 1
            assert stats.connections == 3
        else:
            assert not stalled.ws.closing
            assert stalled.active
            assert stats.slow_closes == 0
            assert stats.connections == 4
            assert stalled.drops > MESSAGES // 2
            assert stats.max_queued_bytes <= SLOW_LIMIT
        assert stats.drops == stalled.drops > 0
        if policy == "drop":
            assert stats.deliveries == 3 * MESSAGES + (MESSAGES - stalled.drops)
        else:  # the stalled client got messages until it was closed
            assert 3 * MESSAGES < stats.deliveries < 3 * MESSAGES + MESSAGES // 2
        await raw.aclose()


async def test_frame_limit_applies_too(nursery: trio.Nursery) -> None:
    async def body(ws: trio_ws.WebSocket, member: trio_ws.Member) -> None:
        set_socket_buffers(ws, send=4096)
        await ws.wait_closed()

    async with trio_ws.open_hub(max_pending=3, max_pending_bytes=None, policy="drop") as hub:
        registrar = Registrar(hub, body)
        server = await start_server(nursery, registrar)
        raw = await stalled_client(server.port)
        await registrar.until(1)
        member = registrar.members["/stalled"]
        for _ in range(40):
            hub.broadcast(b"\xff" * 65536)
            assert member.ws.stats().pending_out <= 3
        assert member.drops > 0
        assert not hub.send_to(member, "does not fit either")
        stats = hub.stats()
        assert stats.deliveries + stats.drops == 41
        assert stats.queued == 3
        await raw.aclose()


# -- connections that die --------------------------------------------------------


async def test_registry_cleaned_up_when_connections_die_mid_broadcast(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    release = trio.Event()

    async def body(ws: trio_ws.WebSocket, member: trio_ws.Member) -> None:
        hub.join(ws, "room")
        await release.wait()  # the handler does not notice the connection died

    async with trio_ws.open_hub() as hub:
        registrar = Registrar(hub, body)
        server = await start_server(nursery, registrar)
        healthy = [
            await trio_ws.start_connection(nursery, url_of(server, f"/ok{i}")) for i in range(3)
        ]
        vanishing = await RawClient.connect(server.port, "/vanishing")
        resetting = await RawClient.connect(server.port, "/resetting")
        await registrar.until(5)
        assert hub.room_size("room") == 5
        for i in range(40):
            assert hub.broadcast(str(i), room="room") >= 3
            if i == 10:
                await vanishing.aclose()  # FIN without a close frame
                resetting.stream.socket.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, RST_ON_CLOSE
                )
                await resetting.aclose()  # RST
            await trio.sleep(0.001)
        for name in ("/vanishing", "/resetting"):
            member = registrar.members[name]
            assert not member.active
            assert member.rooms == ("room",)
            assert member.ws not in hub.connections
        assert hub.room_size("room") == 3
        assert hub.stats().connections == 3
        for ws in healthy:
            assert await receive_all(ws, 40) == [str(i) for i in range(40)]
        release.set()


async def test_broken_stream_leaves_the_hub(nursery: trio.Nursery) -> None:
    async with trio_ws.open_hub() as hub:
        registrar = Registrar(hub)
        server = await start_server(nursery, registrar)
        await trio_ws.start_connection(nursery, url_of(server))
        await registrar.until(1)
        member = registrar.members["/"]

        # The stream breaks under the writer (its sending side is shut down
        # under it: the next write fails with EPIPE), and the connection has
        # not yet noticed.
        break_sending(member.ws)
        assert not hub.send_to(member, "x")
        assert not member.active
        assert hub.connections == ()

        other = await trio_ws.start_connection(nursery, url_of(server, "/other"))
        await registrar.until(2)
        member = registrar.members["/other"]
        break_sending(member.ws)
        assert hub.broadcast("x") == 0
        assert not member.active
        await other.aclose()


# -- the hub's block -------------------------------------------------------------


async def test_hub_exit_closes_registered_connections_and_leaks_nothing() -> None:
    tasks_before, fds_before = len(all_tasks()), open_fds()
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, lambda ws: registrar(ws))
        async with trio_ws.open_hub() as hub:

            async def body(ws: trio_ws.WebSocket, member: trio_ws.Member) -> None:
                hub.join(ws, "lobby")
                async for _ in ws:
                    pass

            registrar = Registrar(hub, body)
            clients = [
                await trio_ws.start_connection(nursery, url_of(server, f"/{i}")) for i in range(3)
            ]
            await registrar.until(3)
            hub.broadcast("bye soon")
        # Leaving the block closed what was still registered, with 1001.
        for client in clients:
            assert await client.receive() == "bye soon"
            info = await client.wait_closed()
            assert (info.code, info.reason, info.by_peer) == (1001, "hub closed", True)
        assert all(not member.active for member in registrar.members.values())
        assert hub.stats().connections == 0
        nursery.cancel_scope.cancel()
    assert len(all_tasks()) == tasks_before
    assert open_fds() == fds_before


async def test_limits_and_origins_through_a_hub_server(nursery: trio.Nursery) -> None:
    async with trio_ws.open_hub() as hub:

        async def body(ws: trio_ws.WebSocket, member: trio_ws.Member) -> None:
            hub.join(ws, "lobby")
            hub.broadcast(f"{hub.room_size('lobby')} here", room="lobby")
            await ws.wait_closed()

        registrar = Registrar(hub, body)
        server = await start_server(
            nursery, registrar, origins=["https://chat.example"], max_connections=2
        )
        url = url_of(server)
        good = {"Origin": "https://chat.example"}
        first = await trio_ws.start_connection(nursery, url, headers=good)
        assert await first.receive() == "1 here"
        second = await trio_ws.start_connection(nursery, url, headers=good)
        assert await first.receive() == "2 here"
        assert await second.receive() == "2 here"
        with pytest.raises(trio_ws.ConnectionRejected) as full:
            await trio_ws.start_connection(nursery, url, headers=good)
        assert full.value.status_code == 503
        assert full.value.headers["Retry-After"] == "5"
        with pytest.raises(trio_ws.ConnectionRejected) as foreign:
            await trio_ws.start_connection(
                nursery, url, headers={"Origin": "https://evil.example"}
            )
        assert foreign.value.status_code == 403
        assert hub.stats().connections == 2
        assert server.stats().rejected == {"capacity": 1, "origin": 1}
