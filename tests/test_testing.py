"""The test client (``trio_ws.testing``): handlers and routers served
in-process over memory streams, through the real server and client code,
checked against the behaviours it claims to reproduce (the same answers as
over a socket: tests/test_router.py has those), with Trio's clock."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

import trio_ws
from trio_ws.testing import TestClient

pytest_plugins = ["trio_ws.pytest_plugin"]


async def echo(ws: trio_ws.WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


def app() -> trio_ws.Router:
    router = trio_ws.Router()

    @router.websocket("/chat/{room}")
    async def chat(ws: trio_ws.WebSocket, room: str) -> None:
        async for message in ws:
            await ws.send(f"{room}: {message}")

    async def members(request: trio_ws.Request, room: str) -> trio_ws.Response | None:
        if request.headers.get("Authorization") == "Bearer ok":
            return None
        return trio_ws.Response(401, [("WWW-Authenticate", "Bearer")], "log in first")

    @router.websocket("/private/{room}", guard=members, max_message_size=10)
    async def private(ws: trio_ws.WebSocket, room: str) -> None:
        async for message in ws:
            await ws.send(json.dumps({"room": room, "message": message}))

    @router.websocket("/boom")
    async def boom(ws: trio_ws.WebSocket) -> None:
        raise RuntimeError("boom")

    return router


async def test_a_handler() -> None:
    async with TestClient(echo) as client, client.connect() as ws:
        await ws.send("hello")
        assert await ws.receive() == "hello"
        assert ws.request.host == "testserver"
        assert client.server.stats().open_connections == 1


async def test_a_router_and_its_answers() -> None:
    async with TestClient(app()) as client:
        async with client.connect("/chat/a%20b") as ws:
            await ws.send("hi")
            assert await ws.receive() == "a b: hi"
        with pytest.raises(trio_ws.ConnectionRejected) as info:
            async with client.connect("/nowhere"):
                pass  # pragma: no cover
        assert info.value.status_code == 404
        with pytest.raises(trio_ws.ConnectionRejected) as info:
            async with client.connect("/private/vault"):
                pass  # pragma: no cover
        assert info.value.status_code == 401
        assert info.value.headers.get("WWW-Authenticate") == "Bearer"
        assert info.value.body == b"log in first"
        async with client.connect("/private/vault", headers={"Authorization": "Bearer ok"}) as ws:
            await ws.send("x")
            assert json.loads(await ws.receive()) == {"room": "vault", "message": "x"}
            await ws.send("a message longer than the route allows")
            with pytest.raises(trio_ws.ConnectionClosed) as closed:
                await ws.receive()
            assert closed.value.code == 1009
        async with client.connect("/boom") as ws:
            with pytest.raises(trio_ws.ConnectionClosed) as closed:
                await ws.receive()
            assert closed.value.code == 1011
        await trio.testing.wait_all_tasks_blocked()
        stats = client.server.stats()
        assert stats.rejected["not_found"] == 1
        assert stats.rejected["rejected"] == 1
        assert stats.close_codes[1011] == 1


async def test_server_settings_apply() -> None:
    def only_v2(request: trio_ws.Request) -> trio_ws.Response | None:
        if request.query == "deny":
            return trio_ws.Response(403, [], "no")
        return None

    async with TestClient(echo, subprotocols=["v2"], process_request=only_v2) as client:
        async with client.connect(subprotocols=["v1", "v2"]) as ws:
            assert ws.subprotocol == "v2"
        with pytest.raises(trio_ws.ConnectionRejected) as info:
            async with client.connect("/?deny"):
                pass  # pragma: no cover
        assert info.value.status_code == 403


async def test_keepalive_on_trios_clock(autojump_clock: trio.testing.MockClock) -> None:
    """Minutes of keepalive in milliseconds of real time."""
    async with (
        TestClient(echo, ping_interval=20, ping_timeout=10) as client,
        client.connect(ping_interval=None) as ws,
    ):
        start = trio.current_time()
        await trio.sleep(300)
        assert trio.current_time() - start == pytest.approx(300)
        await ws.send("still there")
        assert await ws.receive() == "still there"
        (server_side,) = client.server.connections
        assert server_side.latency is not None  # the server's pings were answered


async def test_open_timeout_on_trios_clock(autojump_clock: trio.testing.MockClock) -> None:
    async def slow(request: trio_ws.Request) -> None:
        await trio.sleep(60)

    async with TestClient(echo, process_request=slow) as client:
        with pytest.raises(trio_ws.HandshakeTimeout):
            async with client.connect(open_timeout=5):
                pass  # pragma: no cover


async def test_leaving_closes_open_connections_with_1001() -> None:
    ended = trio.Event()
    codes: list[int] = []

    async def handler(ws: trio_ws.WebSocket) -> None:
        try:
            await trio.sleep_forever()
        finally:
            ended.set()

    async with trio.open_nursery() as nursery:
        async with TestClient(handler) as client:
            ws = await _open_in(nursery, client)
        assert ended.is_set()
        with pytest.raises(trio_ws.ConnectionClosed) as info:
            await ws.receive()
        codes.append(info.value.code)
        nursery.cancel_scope.cancel()
    assert codes == [1001]


async def _open_in(nursery: trio.Nursery, client: TestClient) -> trio_ws.WebSocket:
    """A client connection that outlives the block that opened it."""
    opened: trio.MemorySendChannel[trio_ws.WebSocket]
    opened, receive = trio.open_memory_channel[trio_ws.WebSocket](1)

    async def hold() -> None:
        async with client.connect() as ws:
            await opened.send(ws)
            await trio.sleep_forever()

    nursery.start_soon(hold)
    return await receive.receive()


async def test_a_hub_over_memory_streams() -> None:
    async with trio_ws.open_hub() as hub:
        joined = trio.Semaphore(0)

        async def handler(ws: trio_ws.WebSocket) -> None:
            async with hub.register(ws) as member:
                hub.join(member, "lobby")
                joined.release()
                async for _ in ws:
                    pass

        async with TestClient(handler) as client, client.connect() as a, client.connect() as b:
            await joined.acquire()
            await joined.acquire()
            assert hub.broadcast("news", room="lobby") == 2
            assert [await a.receive(), await b.receive()] == ["news", "news"]


async def test_misuse_is_refused() -> None:
    client = TestClient(echo)
    with pytest.raises(RuntimeError, match="async with"):
        client.connect()
    with pytest.raises(TypeError, match="did you mean 'ping_interval'"):
        TestClient(echo, ping_intervall=1)  # type: ignore[call-arg]
    async with client:
        with pytest.raises(ValueError, match="starts with '/'"):
            client.connect("chat")


# -- the pytest plugin ----------------------------------------------------------------


@pytest.fixture
def trio_ws_app() -> trio_ws.Router:
    return app()


async def test_the_plugins_client_fixture(trio_ws_client: TestClient) -> None:
    async with trio_ws_client.connect("/chat/lobby") as ws:
        await ws.send("hi")
        assert await ws.receive() == "lobby: hi"
