"""trio_ws.asgi: trio_ws handlers and routers under a real Hypercorn (Trio
worker), alone, mounted in Starlette and beside Quart-Trio, with the real
trio_ws client on 127.0.0.1."""

from __future__ import annotations

import contextlib
import functools
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
import trio.testing
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from processes import ENV

import trio_ws
import trio_ws.asgi
from trio_ws.asgi import App, dispatch
from trio_ws.asgi._bridge import request_head
from trio_ws.asgi._stream import AsgiStream

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@contextlib.asynccontextmanager
async def hypercorn(app: Any, graceful_timeout: float = 5.0) -> AsyncIterator[str]:
    """``app`` served by Hypercorn's Trio worker on a free port: its ws:// base URL."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = graceful_timeout
    config.errorlog = None  # type: ignore[assignment]
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            functools.partial(hypercorn_serve, app, config, shutdown_trigger=stop.wait)
        )
        yield binds[0].replace("http://", "ws://")
        stop.set()


async def http_get(
    url: str, path: str, method: str = "GET", body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP/1.1 request: status, headers, body."""
    host, port = url.removeprefix("ws://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        fields = [("Host", host), ("Content-Length", str(len(body)))]
        request = h11.Request(method=method, target=path, headers=fields)
        data = conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        await stream.send_all(data)
        status, headers, body = 0, {}, b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some())
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {n.decode(): v.decode() for n, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, headers, body


async def echo(ws: trio_ws.WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


# -- the WebSocket API under Hypercorn -------------------------------------------


async def test_handler_sees_the_websocket_api() -> None:
    seen: dict[str, Any] = {}
    closed = trio.Event()
    router = trio_ws.Router()

    @router.websocket("/rooms/{room}/{n:int}")
    async def room(ws: trio_ws.WebSocket, room: str, n: int) -> None:
        seen.update(
            room=room,
            n=n,
            params=dict(ws.path_params),
            target=ws.request.target,
            agent=ws.request.headers.get("User-Agent"),
            subprotocol=ws.subprotocol,
            remote=ws.remote_address,
            local=ws.local_address,
            is_websocket=isinstance(ws, trio_ws.WebSocket),
        )
        with pytest.raises(RuntimeError, match="ASGI server owns"):
            await ws.ping()
        await ws.send(await ws.receive())  # text
        await ws.send(await ws.receive())  # binary
        async with ws.receive_stream() as message:
            await ws.send_stream([chunk async for chunk in message])
        await ws.send_json({"room": room})
        await ws.aclose(4001, "bye now")
        seen["close"] = (ws.close_code, ws.close_reason)
        closed.set()

    def set_cookie(request: trio_ws.Request) -> trio_ws.Accept:
        return trio_ws.Accept(headers={"Set-Cookie": "seen=1"})

    app = App(router, subprotocols=["chat.v2", "chat.v1"], process_request=set_cookie)
    async with hypercorn(app) as url:
        async with trio_ws.connect(
            f"{url}/rooms/a%20b/7?x=1",
            subprotocols=["chat.v1", "chat.v2"],
            headers={"User-Agent": "test-asgi"},
        ) as ws:
            assert ws.subprotocol == "chat.v2"
            assert ws.response is not None
            assert ws.response.headers.get("Set-Cookie") == "seen=1"
            local = ws.local_address
            await ws.send("hello")
            assert await ws.receive() == "hello"
            await ws.send(b"\x00bin")
            assert await ws.receive() == b"\x00bin"
            await ws.send_stream([b"piece 1 ", b"piece 2"])
            assert await ws.receive() == b"piece 1 piece 2"
            assert await ws.receive_json() == {"room": "a b"}
            with pytest.raises(trio_ws.ConnectionClosed) as caught:
                await ws.receive()
            assert (caught.value.info.code, caught.value.info.reason) == (4001, "bye now")
        await closed.wait()
    assert seen == {
        "room": "a b",
        "n": 7,
        "params": {"room": "a b", "n": 7},
        "target": "/rooms/a%20b/7?x=1",
        "agent": "test-asgi",
        "subprotocol": "chat.v2",
        "remote": local,
        "local": ("127.0.0.1", int(url.rsplit(":", 1)[1])),
        "is_websocket": True,
        "close": (4001, "bye now"),
    }


async def test_trusted_proxies_name_the_client() -> None:
    """``trusted_proxies`` as natively: the scope's client is the peer, and a
    trusted peer's X-Forwarded-For names the client, read from the right;
    an untrusted peer's header is ignored."""

    async def who(ws: trio_ws.WebSocket) -> None:
        await ws.send_json([ws.remote_address, ws.peer_address])

    forwarded = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7"}
    with pytest.raises(ValueError, match="not an IP address"):
        App(who, trusted_proxies=["proxy.example"])
    for trusted, expected in ((["127.0.0.0/8"], ["203.0.113.7", 0]), (["10.0.0.1"], None)):
        async with (
            hypercorn(App(who, trusted_proxies=trusted)) as url,
            trio_ws.connect(f"{url}/", headers=forwarded) as ws,
        ):
            remote, peer = await ws.receive_json()
            local = list(ws.local_address)
        assert peer == local  # the scope's client: this connection's socket
        assert remote == (expected if expected is not None else local)


async def test_closes_by_either_side_and_by_failure() -> None:
    connections: list[trio_ws.WebSocket] = []

    async def handler(ws: trio_ws.WebSocket) -> None:
        connections.append(ws)
        if await ws.receive() == "fail":
            raise ValueError("handler bug")
        await ws.receive()  # until the client closes

    async with hypercorn(App(handler)) as url:
        async with trio_ws.connect(url) as ws:
            await ws.send("fail")
            with pytest.raises(trio_ws.ConnectionClosed) as caught:
                await ws.receive()
            assert caught.value.info.code == 1011
            assert caught.value.info.reason == "internal server error"
        assert (await connections[0].wait_closed()).code == 1011
        async with trio_ws.connect(url) as ws:
            await ws.send("wait")
        assert ws.close_code == 1000
        ended = await connections[1].wait_closed()
    # Hypercorn reports every close by the client as 1006
    # (pgjones/hypercorn#127): the handler sees what the ASGI server says.
    assert (ended.code, ended.by_peer) == (1006, True)


async def test_limits_apply() -> None:
    async with hypercorn(App(echo, max_message_size=1000)) as url, trio_ws.connect(url) as ws:
        await ws.send("x" * 1000)
        assert await ws.receive() == "x" * 1000
        await ws.send("x" * 1001)
        with pytest.raises(trio_ws.ConnectionClosed) as caught:
            await ws.receive()
        assert caught.value.info.code == 1009


async def test_large_messages_both_ways() -> None:
    big = bytes(range(256)) * 4096  # 1 MiB
    async with (
        hypercorn(App(echo, max_message_size=None)) as url,
        trio_ws.connect(url, max_message_size=None) as ws,
    ):
        await ws.send(big)
        assert await ws.receive() == big
        await ws.send("é" * 100_000)
        assert await ws.receive() == "é" * 100_000


async def test_server_shutdown_closes_with_1001() -> None:
    opened = trio.Event()

    async def handler(ws: trio_ws.WebSocket) -> None:
        opened.set()
        await ws.receive()

    stop = trio.Event()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 0.01
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            functools.partial(hypercorn_serve, App(handler), config, shutdown_trigger=stop.wait)
        )
        async with trio_ws.connect(binds[0].replace("http", "ws")) as ws:
            await opened.wait()
            stop.set()
            with pytest.raises(trio_ws.ConnectionClosed) as caught:
                await ws.receive()
    assert (caught.value.info.code, caught.value.info.reason) == (1001, "server shutting down")


# -- how requests are decided ---------------------------------------------------


async def test_refusals_use_the_denial_response() -> None:
    router = trio_ws.Router()

    def members_only(request: trio_ws.Request) -> trio_ws.Response | None:
        if request.headers.get("Cookie") != "member=1":
            return trio_ws.Response.text(403, "members only")
        return None

    router.add_websocket("/members", echo, guard=members_only)
    router.add_websocket("/echo", echo)

    @router.http("/health")
    def health(request: trio_ws.Request) -> trio_ws.Response:
        return trio_ws.Response.text(200, "ok")

    def process_request(request: trio_ws.Request) -> trio_ws.Response | None:
        if request.query == "teapot":
            return trio_ws.Response.text(418, "I'm a teapot")
        return None

    app = App(router, process_request=process_request, origins=["https://good.example", None])
    async with hypercorn(app) as url:

        async def status(path: str, **kwargs: Any) -> tuple[int, bytes]:
            with pytest.raises(trio_ws.ConnectionRejected) as caught:
                async with trio_ws.connect(url + path, **kwargs):
                    pass
            return caught.value.status_code, caught.value.body

        assert await status("/nowhere") == (404, b"404 Not Found: no route for /nowhere\n")
        assert await status("/members") == (403, b"members only")
        assert await status("/echo?teapot") == (418, b"I'm a teapot")
        assert (await status("/echo", headers={"Origin": "https://evil.example"}))[0] == 403
        async with trio_ws.connect(url + "/members", headers={"Cookie": "member=1"}) as ws:
            await ws.send("in")
            assert await ws.receive() == "in"
        # Plain HTTP gets what the native server answers.
        assert (await http_get(url, "/health"))[::2] == (200, b"ok")
        code, headers, _ = await http_get(url, "/echo")
        assert (code, headers["upgrade"]) == (426, "websocket")
        code, headers, _ = await http_get(url, "/health", "POST", b"a body")
        assert (code, headers["allow"]) == (405, "GET, HEAD")
    stats = app.stats()
    assert stats.accepted == 1
    assert stats.rejected == {
        "not_found": 1,
        "rejected": 2,
        "origin": 1,
        "http": 2,
        "bad_request": 1,
    }


async def test_max_connections_answers_503() -> None:
    async def handler(ws: trio_ws.WebSocket) -> None:
        await ws.receive()

    app = App(handler, max_connections=1)
    async with hypercorn(app) as url, trio_ws.connect(url):
        with pytest.raises(trio_ws.ConnectionRejected) as caught:
            async with trio_ws.connect(url):
                pass
        assert caught.value.status_code == 503
        assert len(app.connections) == 1


async def test_without_the_denial_extension_a_refusal_is_a_close() -> None:
    """An ASGI server without the denial-response extension: websocket.close."""
    sent: list[MutableMapping[str, Any]] = []
    messages = [{"type": "websocket.connect"}]

    async def receive() -> MutableMapping[str, Any]:
        return messages.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/",
        "query_string": b"",
        "headers": [(b"host", b"example"), (b"sec-websocket-version", b"13")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    await App(echo, origins=["https://good.example"])(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]


def test_settings_the_asgi_server_owns_are_refused() -> None:
    for name, value in [
        ("ping_interval", 5.0),
        ("ping_timeout", None),
        ("compression", None),
        ("frame_size", 1024),
    ]:
        with pytest.raises(TypeError, match=f"does not take '{name}'"):
            App(echo, **{name: value})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="did you mean 'max_queue'"):
        App(echo, max_queu=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="max_connections"):
        App(echo, max_connections=0)
    options = App(echo, max_queue=3).options
    assert (options.max_queue, options.ping_interval, options.compression) == (3, None, None)
    assert options.frame_size is None


async def test_route_settings_the_asgi_server_owns_are_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = trio_ws.Router()
    router.add_websocket("/", echo, ping_interval=0.01, max_queue=2)
    async with hypercorn(App(router)) as url:
        for _ in range(2):
            async with trio_ws.connect(url) as ws:
                await ws.send("hi")
                assert await ws.receive() == "hi"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "ASGI" in r.message]
    assert len(warnings) == 1
    assert "ping_interval ignored under ASGI" in warnings[0].message


async def test_lifespan_alone() -> None:
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return messages.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await App(echo)({"type": "lifespan"}, receive, send)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


# -- hubs -------------------------------------------------------------------


async def test_hub_mixes_asgi_and_native_connections() -> None:
    async with trio_ws.open_hub() as hub, trio.open_nursery() as nursery:
        registered = trio.Semaphore(0)

        async def member(ws: trio_ws.WebSocket) -> None:
            async with hub.register(ws):
                hub.join(ws, "lobby")
                registered.release()
                async for message in ws:
                    hub.broadcast(message, room="lobby")

        native = await nursery.start(functools.partial(trio_ws.serve, member, "127.0.0.1", 0))
        async with (
            hypercorn(App(member)) as url,
            trio_ws.connect(url) as via_asgi,
            trio_ws.connect(f"ws://127.0.0.1:{native.port}") as via_native,
        ):
            await registered.acquire()
            await registered.acquire()
            await via_asgi.send("from asgi")
            assert await via_asgi.receive() == "from asgi"
            assert await via_native.receive() == "from asgi"
            await via_native.send(b"from native")
            assert await via_asgi.receive() == b"from native"
            assert await via_native.receive() == b"from native"
        nursery.cancel_scope.cancel()


async def test_hub_closes_an_asgi_client_that_does_not_read() -> None:
    big = "x" * 65536
    async with trio_ws.open_hub(max_pending_bytes=4 * len(big)) as hub:
        joined, member_closed = trio.Event(), trio.Event()
        info: list[trio_ws.CloseInfo] = []

        async def member(ws: trio_ws.WebSocket) -> None:
            async with hub.register(ws):
                hub.join(ws, "room")
                joined.set()
                info.append(await ws.wait_closed())
                member_closed.set()

        app = App(member, close_timeout=0.2)
        async with (
            hypercorn(app) as url,
            trio_ws.connect(url, max_queue=1, max_message_size=None) as client,
        ):
            with trio.fail_after(10):
                await joined.wait()
                sent = 0
                while not member_closed.is_set():
                    if hub.members("room"):
                        hub.broadcast(big, room="room")
                        sent += 1
                    await trio.lowlevel.checkpoint()
            assert sent > 4
            assert hub.stats().slow_closes == 1
            await client.aclose()
    assert info[0].code == 1013
    assert info[0].reason == "client fell behind"


# -- mounted beside HTTP applications -------------------------------------------------


async def test_mounted_in_starlette() -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route, WebSocketRoute

    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    async def homepage(request: Request) -> PlainTextResponse:
        return PlainTextResponse("home")

    router = trio_ws.Router()

    @router.websocket("/chat/{room}")
    async def chat(ws: trio_ws.WebSocket, room: str) -> None:
        await ws.send(f"{ws.path} {room}")

    app = Starlette(
        routes=[
            Route("/", homepage),
            WebSocketRoute("/echo", App(echo)),
            Mount("/ws", App(router)),
        ],
        lifespan=lifespan,
    )
    async with hypercorn(app) as url:
        assert events == ["startup"]
        assert (await http_get(url, "/"))[::2] == (200, b"home")
        async with trio_ws.connect(url + "/echo") as ws:
            await ws.send("echo")
            assert await ws.receive() == "echo"
        async with trio_ws.connect(url + "/ws/chat/blue") as ws:
            assert await ws.receive() == "/chat/blue blue"
        async with trio_ws.connect(url + "/ws/chat/a%20b") as ws:
            assert await ws.receive() == "/chat/a%20b a b"
        with pytest.raises(trio_ws.ConnectionRejected) as caught:
            async with trio_ws.connect(url + "/ws/other"):
                pass
        assert caught.value.status_code == 404
    assert events == ["startup", "shutdown"]


async def test_dispatched_beside_quart_trio() -> None:
    from quart_trio import QuartTrio

    quart = QuartTrio(__name__)
    events: list[str] = []

    @quart.before_serving
    async def startup() -> None:
        events.append("startup")

    @quart.after_serving
    async def shutdown() -> None:
        events.append("shutdown")

    @quart.route("/")
    async def index() -> str:
        return "quart home"

    quart.asgi_app = dispatch(quart.asgi_app, App(echo))  # type: ignore[method-assign]
    async with hypercorn(quart) as url:
        assert events == ["startup"]
        assert (await http_get(url, "/"))[::2] == (200, b"quart home")
        async with trio_ws.connect(url + "/anything") as ws:
            await ws.send("via quart")
            assert await ws.receive() == "via quart"
    assert events == ["startup", "shutdown"]


# -- the example, the command line, the package ---------------------------------


def test_example_runs_as_a_program() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "asgi_app.py")],
        capture_output=True,
        text=True,
        timeout=15,
        env=ENV,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "GET / -> 200 trio_ws chat: connect to /ws/chat/{room}",
        "bob got: ann: hello, room blue",
        "ann got: bob: hi ann",
    ]


async def test_hypercorn_command_line_serves_the_example() -> None:
    argv = [sys.executable, "-m", "hypercorn", "--worker-class", "trio"]
    process = await trio.lowlevel.open_process(
        [*argv, "--bind", "127.0.0.1:0", "asgi_app:app"],
        cwd=EXAMPLES,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    try:
        output = b""
        with trio.fail_after(10):
            while b"Running on " not in output or not output.endswith(b"\n"):
                data = await process.stdout.receive_some()
                assert data, f"hypercorn exited: {output!r}"
                output += data
        line = output.decode().split("Running on ", 1)[1]
        base = line.split()[0].replace("http://", "ws://")
        async with (
            trio_ws.connect(base + "/ws/chat/red") as ann,
            trio_ws.connect(base + "/ws/chat/red") as bob,
        ):
            await ann.send_json({"name": "ann", "text": "hi"})
            assert await ann.receive() == "ann: hi"
            assert await bob.receive() == "ann: hi"
    finally:
        process.kill()
        await process.wait()
        await process.stdout.aclose()


def test_importing_trio_ws_imports_no_asgi_framework() -> None:
    code = (
        "import sys, trio_ws, trio_ws.asgi; "
        "print(sorted(m for m in ('hypercorn', 'starlette', 'quart', 'quart_trio') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=15, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_request_target_is_relative_to_the_mount_point() -> None:
    def target(**scope: Any) -> bytes:
        _, head = request_head({"type": "websocket", "headers": [(b"host", b"h")], **scope})
        return head.split(b" ")[1]

    assert target(path="/a b", query_string=b"x=1") == b"/a%20b?x=1"
    assert target(path="/ws/a b", raw_path=b"/ws/a%20b", root_path="/ws") == b"/a%20b"
    assert target(path="/ws", raw_path=b"/ws", root_path="/ws") == b"/"
    # A root_path the path does not start with (a server that leaves it out).
    assert target(path="/x", raw_path=b"/x", root_path="/api") == b"/x"
    # raw_path that does not spell root_path: the decoded path, quoted again.
    assert target(path="/w s/x", raw_path=b"/w+s/x", root_path="/w s") == b"/x"


# -- the stream -------------------------------------------------------------------


async def test_send_all_returns_once_the_asgi_server_sent() -> None:
    """Backpressure: the connection's writes wait for the ASGI server's send."""
    release = trio.Event()
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "websocket.send":
            await release.wait()
        sent.append(message)

    async def receive() -> MutableMapping[str, Any]:
        raise AssertionError("nothing is read here")

    conn, head = request_head(
        {"type": "websocket", "path": "/", "headers": [(b"host", b"h")], "server": None}
    )
    stream = AsgiStream({"type": "websocket"}, receive, send, head, conn)
    assert stream.sockname is None
    assert await stream.receive_some(5) == head[:5]
    assert await stream.receive_some() == head[5:]
    await stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n")
    await stream.send_all(b"Connection: Upgrade\r\nX-Extra: 1\r\n\r\n")
    assert sent == [
        {"type": "websocket.accept", "subprotocol": None, "headers": [(b"x-extra", b"1")]}
    ]
    done = trio.Event()

    async def write() -> None:
        await stream.send_all(b"\x81\x02hi")  # an unmasked text frame: "hi"
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()
        release.set()
    assert sent[-1] == {"type": "websocket.send", "text": "hi"}
    await stream.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await stream.send_all(b"x")
