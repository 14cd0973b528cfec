"""Opening client connections: headers, ownership, and every way it can fail."""

from __future__ import annotations

import functools
import socket
from typing import Any

import pytest
import trio
import trio.testing
from conftest import echo, start_server, url_of
from rawpeer import raw_accept

import trio_ws


async def recording_server(nursery: trio.Nursery) -> tuple[trio_ws.Server, list[Any]]:
    seen: list[trio_ws.WebSocket] = []

    async def handler(ws: trio_ws.WebSocket) -> None:
        seen.append(ws)
        await echo(ws)

    return await start_server(nursery, handler), seen


async def test_request_headers(nursery: trio.Nursery) -> None:
    server, seen = await recording_server(nursery)
    url = f"ws://ann:pw@127.0.0.1:{server.port}/p?q=1"
    headers = [("Origin", "https://app.example"), ("Cookie", "a=1"), ("Cookie", "b=2")]
    async with trio_ws.connect(url, headers=headers, subprotocols=["x"]) as ws:
        await ws.send("hi")
        await ws.receive()
    request = seen[0].request
    assert request.host == f"127.0.0.1:{server.port}"
    assert request.headers["authorization"] == "Basic YW5uOnB3"
    assert request.origin == "https://app.example"
    assert request.headers.get_all("cookie") == ["a=1", "b=2"]
    assert request.headers["user-agent"].startswith("trio_ws/")
    assert request.subprotocols == ["x"]
    assert request.target == "/p?q=1"
    # The client records what it sent.
    assert ws.request.headers["origin"] == "https://app.example"
    assert ws.request.target == "/p?q=1"


async def test_ipv6_host_header(nursery: trio.Nursery) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    seen: list[trio_ws.WebSocket] = []

    async def handler(ws: trio_ws.WebSocket) -> None:
        seen.append(ws)

    try:
        server = await nursery.start(trio_ws.serve, handler, "::1", 0)
    except OSError:
        pytest.skip("IPv6 loopback unavailable")
    async with trio_ws.connect(f"ws://[::1]:{server.port}/") as ws:
        assert ws.remote_address[:2] == ("::1", server.port)
        await ws.wait_closed()
    assert seen[0].request.host == f"[::1]:{server.port}"


async def test_reserved_headers_are_refused(echo_server: trio_ws.Server) -> None:
    with pytest.raises(ValueError, match="Sec-WebSocket-Key"):
        async with trio_ws.connect(url_of(echo_server), headers={"Sec-WebSocket-Key": "x"}):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match="sequence"):
        async with trio_ws.connect(url_of(echo_server), subprotocols="chat"):
            pass  # pragma: no cover


async def test_invalid_url() -> None:
    with pytest.raises(trio_ws.InvalidURL):
        async with trio_ws.connect("http://127.0.0.1/"):
            pass  # pragma: no cover


async def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="max_queue"):
        trio_ws.connect("ws://h/", max_queue=0)
    with pytest.raises(ValueError, match="open_timeout"):
        trio_ws.connect("ws://h/", open_timeout=-1)
    with pytest.raises(TypeError):
        trio_ws.connect("ws://h/", no_such_option=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_refused_is_prompt_and_not_a_group() -> None:
    start = trio.current_time()
    with pytest.raises(trio_ws.ConnectFailed) as info:
        async with trio_ws.connect(f"ws://127.0.0.1:{_free_port()}/"):
            pass  # pragma: no cover
    assert trio.current_time() - start < 2
    assert isinstance(info.value, trio_ws.HandshakeError)
    assert isinstance(info.value.__cause__, OSError)


async def _tcp_server(nursery: trio.Nursery, handler: Any) -> int:
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
    )
    return int(listeners[0].socket.getsockname()[1])


async def test_server_that_closes_at_once_fails_promptly(nursery: trio.Nursery) -> None:
    async def closer(stream: trio.SocketStream) -> None:
        await stream.aclose()

    port = await _tcp_server(nursery, closer)
    start = trio.current_time()
    # Whether the request is written before the server's end-of-file
    # arrives (then the read finds a reset) is the kernel's timing.
    with pytest.raises(trio_ws.ConnectFailed, match=r"closed the connection|lost during the"):
        async with trio_ws.connect(f"ws://127.0.0.1:{port}/"):
            pass  # pragma: no cover
    assert trio.current_time() - start < 2


async def test_server_that_resets_fails_promptly(nursery: trio.Nursery) -> None:
    async def resetter(stream: trio.SocketStream) -> None:
        await stream.receive_some(100)
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01" + b"\x00" * 7)
        stream.socket.close()

    port = await _tcp_server(nursery, resetter)
    with pytest.raises(trio_ws.ConnectFailed):
        async with trio_ws.connect(f"ws://127.0.0.1:{port}/"):
            pass  # pragma: no cover


async def test_silent_server_times_out(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    port = await _tcp_server(nursery, silent)
    start = trio.current_time()
    with pytest.raises(trio_ws.HandshakeTimeout) as info:
        async with trio_ws.connect(f"ws://127.0.0.1:{port}/", open_timeout=4):
            pass  # pragma: no cover
    assert trio.current_time() - start == pytest.approx(4)
    assert isinstance(info.value, trio.TooSlowError)


async def test_non_101_answer_is_rejected(nursery: trio.Nursery) -> None:
    async def teapot(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(
            b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 5\r\nX-Why: tea\r\n\r\nshort"
        )
        await trio.sleep_forever()

    port = await _tcp_server(nursery, teapot)
    with pytest.raises(trio_ws.ConnectionRejected) as info:
        async with trio_ws.connect(f"ws://127.0.0.1:{port}/"):
            pass  # pragma: no cover
    assert info.value.status_code == 418
    assert info.value.headers["x-why"] == "tea"
    assert info.value.body == b"short"


async def test_body_until_eof_is_read(nursery: trio.Nursery) -> None:
    async def old_server(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 503 Busy\r\nConnection: close\r\n\r\ncome back later")
        await stream.aclose()

    port = await _tcp_server(nursery, old_server)
    with pytest.raises(trio_ws.ConnectionRejected) as info:
        async with trio_ws.connect(f"ws://127.0.0.1:{port}/"):
            pass  # pragma: no cover
    assert (info.value.status_code, info.value.body) == (503, b"come back later")


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: wrong\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n",
        b"this is not HTTP\r\n\r\n",
    ],
    ids=["bad-accept", "no-upgrade", "garbage"],
)
async def test_invalid_handshake_answers(nursery: trio.Nursery, answer: bytes) -> None:
    async def liar(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(answer)
        await trio.sleep_forever()

    port = await _tcp_server(nursery, liar)
    with pytest.raises(trio_ws.InvalidHandshake):
        async with trio_ws.connect(f"ws://127.0.0.1:{port}/"):
            pass  # pragma: no cover


async def test_unoffered_subprotocol_is_invalid(nursery: trio.Nursery) -> None:
    # A server that sends a subprotocol the client never offered.
    liar = functools.partial(raw_accept, extra=b"Sec-WebSocket-Protocol: surprise\r\n")

    port = await _tcp_server(nursery, liar)
    with pytest.raises(trio_ws.InvalidHandshake, match="surprise"):
        async with trio_ws.connect(f"ws://127.0.0.1:{port}/", subprotocols=["mine"]):
            pass  # pragma: no cover


@pytest.mark.parametrize(
    "extra",
    [
        b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=abc\r\n",
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=\r\n",
        b"Sec-WebSocket-Protocol: caf\xc3\xa9\r\n",
    ],
    ids=["window-not-a-number", "window-empty", "non-ascii-subprotocol"],
)
async def test_hostile_handshake_answers_are_invalid_handshakes(
    nursery: trio.Nursery, extra: bytes
) -> None:
    """A 101 whose headers wsproto cannot parse is an InvalidHandshake, not a
    ValueError from deep inside the parser."""
    port = await _tcp_server(nursery, functools.partial(raw_accept, extra=extra))
    with pytest.raises(trio_ws.InvalidHandshake, match="invalid handshake response"):
        async with trio_ws.connect(f"ws://127.0.0.1:{port}/", subprotocols=["mine"]):
            pass  # pragma: no cover


async def test_body_exceptions_come_out_unwrapped(echo_server: trio_ws.Server) -> None:
    with pytest.raises(KeyError, match="mine"):
        async with trio_ws.connect(url_of(echo_server)) as ws:
            raise KeyError("mine")
    assert ws.close_info == trio_ws.CloseInfo(
        1011, "client error", "local", "application error: KeyError('mine')"
    )


async def test_cancelled_block_closes_with_1001(nursery: trio.Nursery) -> None:
    server, seen = await recording_server(nursery)
    with trio.move_on_after(0.1):
        async with trio_ws.connect(url_of(server)) as ws:
            await trio.sleep_forever()
    assert ws.close_code == 1001
    assert (await seen[0].wait_closed()).code == 1001


async def test_start_connection_lives_in_the_given_nursery(nursery: trio.Nursery) -> None:
    server, seen = await recording_server(nursery)
    async with trio.open_nursery() as owner:
        ws = await trio_ws.start_connection(owner, url_of(server))
        await ws.send("outlives the call")
        assert await ws.receive() == "outlives the call"
        # Its tasks run in the owner nursery until the owner is cancelled.
        assert owner.child_tasks
        owner.cancel_scope.cancel()
    assert ws.close_code == 1001
    assert (await seen[0].wait_closed()).by_peer


async def test_start_connection_ends_when_closed(echo_server: trio_ws.Server) -> None:
    async with trio.open_nursery() as owner:
        ws = await trio_ws.start_connection(owner, url_of(echo_server))
        await ws.aclose()
    assert ws.close_code == 1000


async def test_start_connection_failures_are_not_groups() -> None:
    async with trio.open_nursery() as owner:
        with pytest.raises(trio_ws.ConnectFailed):
            await trio_ws.start_connection(owner, f"ws://127.0.0.1:{_free_port()}/")


async def test_connect_object_is_single_use(echo_server: trio_ws.Server) -> None:
    opener = trio_ws.connect(url_of(echo_server))
    async with opener:
        with pytest.raises(RuntimeError, match="already entered"):
            async with opener:
                pass  # pragma: no cover


async def test_frames_in_the_same_packet_as_the_101_are_kept(nursery: trio.Nursery) -> None:
    eager = functools.partial(raw_accept, then=b"\x81\x05hello\x82\x01!")

    port = await _tcp_server(nursery, eager)
    async with trio_ws.connect(f"ws://127.0.0.1:{port}/", close_timeout=0.1) as ws:
        assert await ws.receive() == "hello"
        assert await ws.receive() == b"!"


async def test_cancelled_block_with_inner_nursery_closes_with_1001(nursery: trio.Nursery) -> None:
    server, seen = await recording_server(nursery)
    with trio.move_on_after(0.1):
        async with trio_ws.connect(url_of(server)) as ws, trio.open_nursery() as inner:
            inner.start_soon(trio.sleep_forever)
            await trio.sleep_forever()
    assert ws.close_code == 1001
    assert (await seen[0].wait_closed()).code == 1001


async def test_operations_on_a_closing_connection_can_be_cancelled(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    silent = raw_accept  # completes the handshake, then never answers anything

    port = await _tcp_server(nursery, silent)
    ws = await trio_ws.start_connection(nursery, f"ws://127.0.0.1:{port}/", close_timeout=10)
    nursery.start_soon(ws.aclose)
    await trio.testing.wait_all_tasks_blocked()
    assert ws.closing
    for operation in (ws.send("x"), ws.receive(), ws.ping()):
        start = trio.current_time()
        with trio.move_on_after(0.5) as scope:
            await operation
        assert scope.cancelled_caught
        assert trio.current_time() - start == pytest.approx(0.5)
    with pytest.raises(trio_ws.ConnectionClosed):
        await ws.send("after the close timeout")
    assert ws.close_info is not None
    assert ws.close_info.cause == "closing handshake timed out"
