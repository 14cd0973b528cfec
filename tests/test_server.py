"""The server: handlers, shutdown, process_request, handshake defences."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing
from conftest import Recorder, all_tasks, echo, open_fds, start_server, url_of
from rawpeer import RawClient, frame
from server_helpers import http_exchange, upgrade_then_close

import trio_ws


async def test_port_zero_ports_and_connections(nursery: trio.Nursery) -> None:
    recorder = Recorder()
    server = await start_server(nursery, recorder)
    assert server.port > 0
    assert server.ports == [server.port]
    async with trio_ws.connect(url_of(server)), trio_ws.connect(url_of(server)):
        both = {await recorder.connection(), await recorder.connection()}
        assert server.connections == both
    await recorder.closed()
    await recorder.closed()


async def test_failing_handler_closes_1011_and_server_carries_on(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(ws: trio_ws.WebSocket) -> None:
        if ws.path == "/boom":
            await ws.receive()
            raise RuntimeError("handler bug")
        await echo(ws)

    server = await start_server(nursery, handler)
    async with trio_ws.connect(url_of(server, "/ok")) as healthy:
        with caplog.at_level(logging.ERROR, logger="trio_ws"):
            async with trio_ws.connect(url_of(server, "/boom")) as doomed:
                await doomed.send("trigger")
                with pytest.raises(trio_ws.ConnectionClosed) as info:
                    await doomed.receive()
        assert info.value.code == 1011
        assert info.value.by_peer
        failing_id = next(r for r in caplog.records if r.exc_info)
        assert "handler bug" in str(failing_id.exc_info[1])  # type: ignore[index]
        assert failing_id.getMessage().startswith("[conn ")
        # The other connection, and the server, are unaffected.
        await healthy.send("still here")
        assert await healthy.receive() == "still here"
        async with trio_ws.connect(url_of(server, "/ok")) as fresh:
            await fresh.send("new")
            assert await fresh.receive() == "new"


async def test_handler_returning_closes_1000(nursery: trio.Nursery) -> None:
    async def handler(ws: trio_ws.WebSocket) -> None:
        await ws.send("bye")

    server = await start_server(nursery, handler)
    async with trio_ws.connect(url_of(server)) as ws:
        assert [m async for m in ws] == ["bye"]
        assert ws.close_code == 1000


async def test_cancelling_the_nursery_sends_1001_to_everyone() -> None:
    closes: list[trio_ws.CloseInfo] = []

    async def client(url: str, ready: trio.Event) -> None:
        async with trio_ws.connect(url) as ws:
            ready.set()
            with pytest.raises(trio_ws.ConnectionClosed):
                await ws.receive()
            closes.append(await ws.wait_closed())

    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as server_nursery:
            server = await start_server(server_nursery, close_timeout=5)
            for _ in range(5):
                ready = trio.Event()
                outer.start_soon(client, url_of(server), ready)
                await ready.wait()
            start = trio.current_time()
            server_nursery.cancel_scope.cancel()
        assert trio.current_time() - start < 5
    assert len(closes) == 5
    for info in closes:
        assert info.code == 1001
        assert info.reason == "server shutting down"
        assert info.by_peer


async def test_server_aclose_is_bounded_by_close_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, close_timeout=2)
        # A peer that never answers the close frame.
        raw = await RawClient.connect(server.port)
        await raw.ping_pong()  # the server has finished the handshake
        async with trio_ws.connect(url_of(server)) as polite:
            start = trio.current_time()
            async with trio.open_nursery() as closer:
                closer.start_soon(server.aclose)
                assert await polite.wait_closed() == trio_ws.CloseInfo(
                    1001, "server shutting down", "peer"
                )
        assert trio.current_time() - start == pytest.approx(2, abs=0.1)
        assert await raw.until_close() == (1001, "server shutting down")
        await raw.aclose()
    assert not server.connections


async def test_no_tasks_or_fds_leak() -> None:
    async def handler(ws: trio_ws.WebSocket) -> None:
        if ws.path == "/raise":
            raise ValueError("expected")
        await echo(ws)

    tasks_before = all_tasks()
    fds_before = open_fds()
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, handler)
        for path in ["/", "/raise", "/"] * 5:
            try:
                async with trio_ws.connect(url_of(server, path)) as ws:
                    await ws.send("x")
                    await ws.receive()
            except trio_ws.ConnectionClosed:
                pass
        # A connection whose owner is cancelled, and one the peer abandons.
        with trio.move_on_after(0.05):
            async with trio_ws.connect(url_of(server)) as ws:
                await trio.sleep_forever()
        raw = await RawClient.connect(server.port)
        await raw.aclose()
        await server.aclose()
    assert all_tasks() == tasks_before
    assert open_fds() == fds_before


# -- process_request ---------------------------------------------------------


async def test_process_request_rejects_with_status_headers_body(nursery: trio.Nursery) -> None:
    def process_request(request: trio_ws.Request) -> trio_ws.Response | None:
        if request.headers.get("Authorization") != "Bearer good":
            return trio_ws.Response(401, [("WWW-Authenticate", "Bearer")], b"who are you?")
        return None

    server = await start_server(nursery, process_request=process_request)
    with pytest.raises(trio_ws.ConnectionRejected) as info:
        async with trio_ws.connect(url_of(server)):
            pass  # pragma: no cover
    assert info.value.status_code == 401
    assert info.value.headers["www-authenticate"] == "Bearer"
    assert info.value.body == b"who are you?"
    assert isinstance(info.value, trio_ws.HandshakeError)
    async with trio_ws.connect(url_of(server), headers={"Authorization": "Bearer good"}) as ws:
        await ws.send("in")
        assert await ws.receive() == "in"


async def test_process_request_answers_plain_http(nursery: trio.Nursery) -> None:
    async def process_request(request: trio_ws.Request) -> trio_ws.Response | None:
        await trio.lowlevel.checkpoint()  # async process_request works too
        if request.path == "/healthz":
            return trio_ws.Response.text(200, "ok")
        return None

    server = await start_server(nursery, process_request=process_request)
    answer = await http_exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"\r\n\r\nok")
    # Other plain requests: 426 Upgrade Required.
    answer = await http_exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 426 ")
    assert b"upgrade: websocket" in answer.lower()
    # And WebSocket connections still work on the same port.
    async with trio_ws.connect(url_of(server, "/ws")) as ws:
        await ws.send("ws")
        assert await ws.receive() == "ws"


async def test_process_request_accepts_with_subprotocol_and_headers(
    nursery: trio.Nursery,
) -> None:
    def process_request(request: trio_ws.Request) -> trio_ws.Accept:
        assert request.subprotocols == ["v1", "v2"]
        return trio_ws.Accept(subprotocol="v2", headers=[("Set-Cookie", "session=abc")])

    seen = []

    async def handler(ws: trio_ws.WebSocket) -> None:
        seen.append(ws.subprotocol)

    server = await start_server(
        nursery, handler, process_request=process_request, subprotocols=["v1", "v2"]
    )
    async with trio_ws.connect(url_of(server), subprotocols=["v1", "v2"]) as ws:
        assert ws.subprotocol == "v2"
        assert ws.response is not None
        assert ws.response.headers["set-cookie"] == "session=abc"
        assert ws.request.subprotocols == ["v1", "v2"]
    assert seen == ["v2"]


async def test_process_request_errors_give_500(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    def process_request(request: trio_ws.Request) -> Any:
        if request.path == "/raise":
            raise KeyError("bug")
        if request.path == "/badtype":
            return "yes"
        return trio_ws.Accept(subprotocol="not-offered")

    server = await start_server(nursery, process_request=process_request)
    for path in ("/raise", "/badtype", "/unoffered"):
        with pytest.raises(trio_ws.ConnectionRejected) as info:
            async with trio_ws.connect(url_of(server, path)):
                pass  # pragma: no cover
        assert info.value.status_code == 500
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 3


async def test_subprotocol_chosen_by_server_preference(nursery: trio.Nursery) -> None:
    server = await start_server(nursery, subprotocols=["best", "ok"])
    async with trio_ws.connect(url_of(server), subprotocols=["ok", "best"]) as ws:
        assert ws.subprotocol == "best"
    async with trio_ws.connect(url_of(server), subprotocols=["other"]) as ws:
        assert ws.subprotocol is None


# -- handshake defences ------------------------------------------------------


async def test_silent_client_is_dropped_after_open_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(nursery, open_timeout=5)
    silent = await trio.open_tcp_stream("127.0.0.1", server.port)
    dribbler = await trio.open_tcp_stream("127.0.0.1", server.port)
    start = trio.current_time()
    dropped_at: list[float] = []

    async def dribble() -> None:
        # Sends a valid request one byte every half second: never finishes in time.
        try:
            for byte in b"GET / HTTP/1.1\r\nHost: x\r\n":
                await dribbler.send_all(bytes([byte]))
                await trio.sleep(0.5)
        except trio.BrokenResourceError:
            dropped_at.append(trio.current_time() - start)

    async with trio.open_nursery() as inner:
        inner.start_soon(dribble)
        assert await silent.receive_some(10) == b""
        assert trio.current_time() - start == pytest.approx(5, abs=0.1)
    assert dropped_at
    assert dropped_at[0] == pytest.approx(5, abs=0.6)
    await silent.aclose()
    await dribbler.aclose()
    # The server still serves everyone else.
    async with trio_ws.connect(url_of(server)) as ws:
        await ws.send("fine")
        assert await ws.receive() == "fine"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
            426,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Content-Length: 0\r\n\r\n",
            405,
        ),
        (
            b"GET / HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            400,
        ),
    ],
    ids=["garbage", "oversized", "bad-version", "no-key", "post", "http10"],
)
async def test_bad_handshakes_get_4xx(
    echo_server: trio_ws.Server, request_bytes: bytes, status: int
) -> None:
    answer = await http_exchange(echo_server.port, request_bytes)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode())
    # The server keeps serving.
    async with trio_ws.connect(url_of(echo_server)) as ws:
        await ws.send("ok")
        assert await ws.receive() == "ok"


async def test_frames_right_after_the_request_are_kept(echo_server: trio_ws.Server) -> None:
    from wsproto.utilities import generate_nonce

    request = (
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + generate_nonce() + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    stream = await trio.open_tcp_stream("127.0.0.1", echo_server.port)
    # The first frame travels in the same packet as the request.
    await stream.send_all(request + frame(0x1, b"early"))
    await upgrade_then_close(stream.receive_some, stream.send_all, until=b"\x81\x05early")
    await stream.aclose()


async def test_internal_error_in_one_connection_spares_the_server(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await start_server(nursery)
    original = server._handshake

    async def broken_once(stream: trio.SocketStream) -> trio_ws.WebSocket | None:
        monkeypatch.setattr(server, "_handshake", original)
        raise RuntimeError("simulated internal bug")

    monkeypatch.setattr(server, "_handshake", broken_once)
    with pytest.raises(trio_ws.ConnectFailed):
        async with trio_ws.connect(url_of(server)):
            pass  # pragma: no cover
    assert "simulated internal bug" in caplog.text
    async with trio_ws.connect(url_of(server)) as ws:
        await ws.send("still serving")
        assert await ws.receive() == "still serving"


async def test_peer_leaving_a_handler_with_a_nursery_is_no_error(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    async def ticker(ws: trio_ws.WebSocket) -> None:
        async with trio.open_nursery() as inner:

            async def read() -> None:
                async for _ in ws:
                    pass

            inner.start_soon(read)
            while True:
                await ws.send("tick")
                await trio.sleep(0.001)

    recorder = Recorder(ticker)
    server = await start_server(nursery, recorder)
    async with trio_ws.connect(url_of(server)) as ws:
        assert await ws.receive() == "tick"
    assert (await recorder.closed()).code == 1000
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_handler_error_during_shutdown_is_logged_and_shutdown_completes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fails_when_cancelled(ws: trio_ws.WebSocket) -> None:
        async with trio.open_nursery() as inner:

            async def cleanup_bug() -> None:
                try:
                    await trio.sleep_forever()
                finally:
                    raise ValueError("bug in cleanup")

            inner.start_soon(cleanup_bug)
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, fails_when_cancelled)
        async with trio_ws.connect(url_of(server)) as ws:
            await server.aclose()
            assert (await ws.wait_closed()).code == 1001
    assert "bug in cleanup" in caplog.text


async def test_wrong_version_message_is_ours(echo_server: trio_ws.Server) -> None:
    answer = await http_exchange(
        echo_server.port,
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
    )
    assert b"only 13" in answer
    assert b"sec-websocket-version: 13" in answer.lower()


async def test_serve_called_directly_serves_until_cancelled() -> None:
    import socket as socketlib

    with socketlib.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio_ws.serve, echo, "127.0.0.1", port)
        await trio.testing.wait_all_tasks_blocked()
        async with trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.send("direct")
            assert await ws.receive() == "direct"
        nursery.cancel_scope.cancel()


async def test_each_close_is_logged_once_at_info(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(echo)
    server = await start_server(nursery, recorder)
    with caplog.at_level(logging.INFO, logger="trio_ws"):
        async with trio_ws.connect(url_of(server)) as ws:
            remote = await recorder.connection()
            await ws.send("x")
            await ws.receive()
        await recorder.closed()
    lines = [r.getMessage() for r in caplog.records if "closed the connection" in r.getMessage()]
    assert sorted(lines) == sorted(
        [
            f"[conn {ws.id}] we closed the connection with 1000 (normal closure)",
            f"[conn {remote.id}] peer closed the connection with 1000 (normal closure)",
        ]
    )


async def test_reuse_port_lets_servers_share_a_port(nursery: trio.Nursery) -> None:
    """Two servers with reuse_port=True on one port: the kernel gives
    connections to both. Without it, the port is taken."""

    def saying(name: str) -> trio_ws.Handler:
        async def handler(ws: trio_ws.WebSocket) -> None:
            await ws.send(name)

        return handler

    first = await start_server(nursery, saying("first"), reuse_port=True)
    second: trio_ws.Server = await nursery.start(
        lambda task_status: trio_ws.serve(
            saying("second"), "127.0.0.1", first.port, reuse_port=True, task_status=task_status
        )
    )
    assert second.port == first.port
    heard: set[str | bytes] = set()
    with trio.fail_after(10):
        while heard != {"first", "second"}:
            async with trio_ws.connect(url_of(first)) as ws:
                heard.add(await ws.receive())
    with pytest.raises(OSError, match="in use"):
        await trio_ws.serve(echo, "127.0.0.1", first.port)


async def test_reuse_port_where_the_platform_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.delattr(socket, "SO_REUSEPORT")
    with pytest.raises(ValueError, match="no SO_REUSEPORT"):
        await trio_ws.serve(echo, "127.0.0.1", 0, reuse_port=True)


# -- serve_listeners: listeners the caller opened -----------------------------------


async def test_serve_listeners_on_a_listener_of_our_own(nursery: trio.Nursery) -> None:
    """A listener opened here, served; the server closes it when it stops."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    server: trio_ws.Server = await nursery.start(trio_ws.serve_listeners, echo, listeners)
    assert server.listeners == listeners
    assert server.port == port
    assert server.ports == [port]
    async with trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
        await ws.send("over a listener of ours")
        assert await ws.receive() == "over a listener of ours"
    await server.aclose()
    assert listeners[0].socket.fileno() == -1  # closed by the server
    with pytest.raises(trio_ws.ConnectFailed):
        async with trio_ws.connect(f"ws://127.0.0.1:{port}/"):
            pass  # pragma: no cover


async def test_serve_listeners_takes_the_arguments_of_serve(nursery: trio.Nursery) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    server: trio_ws.Server = await nursery.start(
        lambda task_status: trio_ws.serve_listeners(
            echo,
            listeners,
            subprotocols=["chat.v1"],
            max_message_size=10,
            task_status=task_status,
        )
    )
    assert server.options.max_message_size == 10
    async with trio_ws.connect(url_of(server), subprotocols=["chat.v1"]) as ws:
        assert ws.subprotocol == "chat.v1"
        await ws.send("x" * 11)
        with pytest.raises(trio_ws.ConnectionClosed) as closed:
            await ws.receive()
        assert closed.value.code == trio_ws.CloseCode.MESSAGE_TOO_BIG


async def test_serve_listeners_closes_the_listeners_when_it_refuses_its_arguments() -> None:
    bad: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"max_connections": 0}, ValueError, "max_connections must be a positive integer"),
        ({"max_message_size": -1}, ValueError, "max_message_size"),
        ({"no_such_option": 1}, TypeError, "no_such_option"),
    ]
    for arguments, error, message in bad:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        with pytest.raises(error, match=message):
            await trio_ws.serve_listeners(echo, listeners, **arguments)
        assert all(listener.socket.fileno() == -1 for listener in listeners)
    with pytest.raises(ValueError, match="at least one listener"):
        await trio_ws.serve_listeners(echo, [])
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    with pytest.raises(TypeError, match=r"trio\.SocketListener"):
        await trio_ws.serve_listeners(echo, [*listeners, listeners[0].socket])  # type: ignore[list-item]
    assert listeners[0].socket.fileno() == -1


async def test_serve_checks_its_arguments_before_binding(nursery: trio.Nursery) -> None:
    """A bad setting is named even on a busy port: serve() checks before it binds."""
    busy = await start_server(nursery)
    fds_before = open_fds()
    with pytest.raises(ValueError, match="max_connections must be a positive integer"):
        await trio_ws.serve(echo, "127.0.0.1", busy.port, max_connections=-1)
    with pytest.raises(TypeError):
        await trio_ws.serve(echo, "127.0.0.1", busy.port, no_such_option=1)
    assert open_fds() == fds_before


@pytest.mark.parametrize("port", [-1, 65536, 99999, "80", True])
async def test_a_port_out_of_range_is_refused_before_binding(port: object) -> None:
    with pytest.raises(ValueError, match="port must be an integer from 0 to 65535"):
        await trio_ws.serve(echo, "127.0.0.1", port)  # type: ignore[arg-type]
