"""trio_ws behind Debian's nginx and HAProxy, started by the tests on
127.0.0.1 from the configurations shown in docs/deployment.md; and the
server's warning about a proxy's idle timeout.

The proxies' configurations are taken from the page (its ``nginx`` block,
and the ``text`` block that is a haproxy.cfg), with only the addresses, and
nginx's ``proxy_read_timeout``, replaced: what the page shows is what runs
here. The processes' own settings (pid file, logs, temporary files) are
added around it, in the test's temporary directory.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import Recorder

import trio_ws
from trio_ws._conn import idle_cut

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGE = (DOCS / "deployment.md").read_text(encoding="utf-8")
_FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)

#: Where Debian puts the proxies (not always on a user's PATH).
_SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
NGINX = shutil.which("nginx", path=_SEARCH)
HAPROXY = shutil.which("haproxy", path=_SEARCH)
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (apt install nginx)"
)
needs_haproxy = pytest.mark.skipif(
    HAPROXY is None, reason="haproxy is not installed (apt install haproxy)"
)

#: Seconds a proxy may take to start listening, and a connection to close.
WAIT = 5.0
BIG = 16 * 2**20
#: The address the proxies connect to trio_ws from (the client is on 127.0.0.1).
PROXY_ADDRESS = "127.0.0.2"


def page_block(info: str, starts: str) -> str:
    """The page's fenced block with this info string that starts so."""
    for fence in _FENCE.finditer(PAGE):
        if fence["info"].strip() == info and fence["body"].startswith(starts):
            return fence["body"]
    raise AssertionError(f"docs/deployment.md has no {info} block starting with {starts!r}")


def substituted(text: str, *replacements: tuple[str, str]) -> str:
    for old, new in replacements:
        assert text.count(old) == 1, f"the page's configuration lost {old!r}"
        text = text.replace(old, new)
    return text


def nginx_config(prefix: Path, port: int, upstream: str, read_timeout: str = "60s") -> str:
    """The page's configuration, in a complete nginx.conf for this test.
    nginx connects to TCP upstreams from PROXY_ADDRESS, so that the
    client (on 127.0.0.1) and the proxy have addresses of their own."""
    block = substituted(
        page_block("nginx", "map $http_upgrade"),
        ("listen 80;", f"listen 127.0.0.1:{port};"),
        ("server 127.0.0.1:8765;", f"server {upstream};"),
        ("proxy_read_timeout 60s;", f"proxy_read_timeout {read_timeout};"),
    )
    if not upstream.startswith("unix:"):
        block = block.replace("proxy_pass ", f"proxy_bind {PROXY_ADDRESS};\n        proxy_pass ")
    # As root, nginx's workers would run as nobody, who cannot reach a Unix
    # socket in the test's private temporary directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}worker_processes 1;\npid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log info;\nevents {{ worker_connections 64; }}\n"
        f"http {{\n    access_log off;\n{temp}\n{block}}}\n"
    )


def haproxy_config(port: int, backend_port: int) -> str:
    return substituted(
        page_block("text", "defaults"),
        ("bind :80", f"bind 127.0.0.1:{port}"),
        ("127.0.0.1:8765", f"127.0.0.1:{backend_port} source {PROXY_ADDRESS}"),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def running(argv: list[str], port: int, log: Path) -> AsyncIterator[int]:
    """``argv`` (a proxy in the foreground) running until the block ends,
    once it accepts connections on ``port``."""
    output = await trio.open_file(log, "wb")
    proc = await trio.lowlevel.open_process(argv, stdout=output.fileno(), stderr=subprocess.STDOUT)
    await output.aclose()
    try:
        with trio.fail_after(WAIT):
            while True:  # poll until it listens (or fails)
                if proc.poll() is not None:
                    raise AssertionError(f"{argv[0]} exited: {await trio.Path(log).read_text()}")
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    await trio.sleep(0.01)
                    continue
                await stream.aclose()
                break
        yield port
    finally:
        proc.terminate()
        with trio.CancelScope(shield=True):
            await proc.wait()


@contextlib.asynccontextmanager
async def nginx(tmp_path: Path, upstream: str, read_timeout: str = "60s") -> AsyncIterator[str]:
    """nginx in front of ``upstream``; yields the ws:// URL to connect to."""
    assert NGINX is not None
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_config(tmp_path, port, upstream, read_timeout))
    argv = [NGINX, "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")]
    async with running([*argv, "-g", "daemon off;"], port, tmp_path / "nginx.out"):
        yield f"ws://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def haproxy(tmp_path: Path, backend_port: int) -> AsyncIterator[str]:
    assert HAPROXY is not None
    port = free_port()
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(haproxy_config(port, backend_port))
    async with running([HAPROXY, "-db", "-f", str(conf)], port, tmp_path / "haproxy.out"):
        yield f"ws://127.0.0.1:{port}"


async def start(nursery: trio.Nursery, handler: Any, **kwargs: Any) -> trio_ws.Server:
    server: trio_ws.Server = await nursery.start(
        functools.partial(trio_ws.serve, handler, "127.0.0.1", 0, **kwargs)
    )
    return server


async def report(ws: trio_ws.WebSocket) -> None:
    """Say who the client is, then echo."""
    await ws.send_json(
        {
            "remote": ws.remote_address[:2],
            "peer": ws.peer_address[:2] if ws.peer_address else ws.peer_address,
            "host": ws.request.host,
            "extensions": ws.request.headers.get("Sec-WebSocket-Extensions", ""),
            "x-forwarded-for": ws.request.headers.get_all("X-Forwarded-For"),
        }
    )
    async for message in ws:
        await ws.send(message)


@pytest.fixture(autouse=True)
def fresh_warnings() -> None:
    idle_cut.reset_warnings()


def idle_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "idle timeout" in r.getMessage()]


# -- nginx --------------------------------------------------------------------


@needs_nginx
class TestNginx:
    async def test_messages_large_and_compressed(self, tmp_path: Path) -> None:
        async with trio.open_nursery() as nursery:
            server = await start(nursery, report, max_message_size=BIG)
            async with (
                nginx(tmp_path, f"127.0.0.1:{server.port}") as url,
                trio_ws.connect(f"{url}/chat", max_message_size=BIG) as ws,
            ):
                hello = await ws.receive_json()
                assert hello["host"] == url.removeprefix("ws://")
                assert hello["extensions"].startswith("permessage-deflate")  # passed on
                # 8 MiB that compress well, each way: compression was agreed.
                before = ws.stats().traffic
                await ws.send("ab" * 2**22)
                assert await ws.receive() == "ab" * 2**22
                after = ws.stats().traffic
                assert after.bytes_out - before.bytes_out < 2**20
                assert after.bytes_in - before.bytes_in < 2**20
                for message in ("text", b"\x00binary", os.urandom(6 * 2**20)):
                    await ws.send(message)
                    assert await ws.receive() == message
            nursery.cancel_scope.cancel()

    async def test_pings_both_ways(self, tmp_path: Path) -> None:
        recorder = Recorder()
        async with trio.open_nursery() as nursery:
            server = await start(nursery, recorder)
            async with (
                nginx(tmp_path, f"127.0.0.1:{server.port}") as url,
                trio_ws.connect(url) as ws,
            ):
                assert await ws.ping() >= 0
                served = await recorder.connection()
                assert await served.ping(b"from the server") >= 0
                assert served.latency is not None
                assert ws.latency is not None
            nursery.cancel_scope.cancel()

    async def test_close_codes_and_reasons_both_ways(self, tmp_path: Path) -> None:
        recorder = Recorder()
        async with trio.open_nursery() as nursery:
            server = await start(nursery, recorder)
            async with nginx(tmp_path, f"127.0.0.1:{server.port}") as url:
                async with trio_ws.connect(url) as ws:
                    await recorder.connection()
                    await ws.aclose(4001, "client says bye")
                info = await recorder.closed()
                assert (info.code, info.reason, info.by_peer) == (4001, "client says bye", True)

                async with trio_ws.connect(url) as ws:
                    served = await recorder.connection()
                    await served.aclose(4002, "server says bye")
                    with trio.fail_after(WAIT):
                        info = await ws.wait_closed()
                assert (info.code, info.reason, info.by_peer) == (4002, "server says bye", True)
            nursery.cancel_scope.cancel()

    async def test_trusted_proxies_give_the_client_address(self, tmp_path: Path) -> None:
        async with trio.open_nursery() as nursery:
            trusting = await start(nursery, report, trusted_proxies=[PROXY_ADDRESS])
            async with nginx(tmp_path, f"127.0.0.1:{trusting.port}") as url:
                spoof = {"X-Forwarded-For": "6.6.6.6"}
                async with trio_ws.connect(url, headers=spoof) as ws:
                    hello = await ws.receive_json()
            nursery.cancel_scope.cancel()
        # nginx appended the address it saw; the client's own claim is ignored.
        assert hello["x-forwarded-for"] == ["6.6.6.6, 127.0.0.1"]
        assert hello["remote"] == ["127.0.0.1", 0]
        assert hello["peer"][0] == PROXY_ADDRESS  # nginx

    async def test_unix_socket_upstream(self, tmp_path: Path) -> None:
        path = tmp_path / "ws.sock"
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(trio_ws.serve_unix, report, path, trusted_proxies=["unix"])
            )
            async with (
                nginx(tmp_path, f"unix:{path}") as url,
                trio_ws.connect(f"{url}/over-unix") as ws,
            ):
                hello = await ws.receive_json()
                await ws.send("through nginx")
                assert await ws.receive() == "through nginx"
            nursery.cancel_scope.cancel()
        assert hello["remote"] == ["127.0.0.1", 0]
        assert hello["peer"] == ""

    async def test_read_timeout_below_ping_interval_cuts_and_is_reported(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # nginx's timers may fire up to 300 ms early (NGX_TIMER_LAZY_DELAY):
        # with a 1 s timeout the silence seen can be 0.7 s.
        monkeypatch.setattr(idle_cut, "IDLE_CUT_SECONDS", 0.5)
        caplog.set_level(logging.INFO, logger="trio_ws")
        recorder = Recorder()
        async with trio.open_nursery() as nursery:
            quiet = await start(nursery, recorder, ping_interval=None)
            async with nginx(tmp_path, f"127.0.0.1:{quiet.port}", read_timeout="1s") as url:
                start_time = trio.current_time()
                async with trio_ws.connect(url, ping_interval=None) as ws:
                    await recorder.connection()
                    with trio.fail_after(WAIT):
                        info = await ws.wait_closed()
                assert info.code == 1006  # cut by nginx: no close frame
                assert 0.6 < trio.current_time() - start_time < 3
                assert (await recorder.closed()).code == 1006
            nursery.cancel_scope.cancel()
        (warning,) = idle_warnings(caplog)
        assert warning.levelno == logging.WARNING
        assert re.match(
            r"\[conn \d+\] connection lost without a close frame after \d\.\d s with no data "
            r"either way: a proxy's idle timeout \(nginx proxy_read_timeout, 60 s by default; "
            r"HAProxy timeout tunnel\) shorter than ping_interval \(off\)\?",
            warning.getMessage(),
        )

    async def test_ping_interval_below_read_timeout_keeps_the_connection(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="trio_ws")
        async with trio.open_nursery() as nursery:
            server = await start(nursery, report, ping_interval=0.3)
            async with (
                nginx(tmp_path, f"127.0.0.1:{server.port}", read_timeout="1s") as url,
                trio_ws.connect(url, ping_interval=None) as ws,
            ):
                await ws.receive_json()
                await trio.sleep(2.0)  # twice the proxy's timeout, idle but for pings
                await ws.send("still here")
                assert await ws.receive() == "still here"
                assert ws.close_info is None
            nursery.cancel_scope.cancel()
        assert idle_warnings(caplog) == []


# -- HAProxy -------------------------------------------------------------------


@needs_haproxy
class TestHAProxy:
    async def test_messages_close_code_and_forwarded_for(self, tmp_path: Path) -> None:
        recorder = Recorder(report)
        async with trio.open_nursery() as nursery:
            server = await start(nursery, recorder, trusted_proxies=[PROXY_ADDRESS])
            async with haproxy(tmp_path, server.port) as url:
                spoof = {"X-Forwarded-For": "6.6.6.6"}
                async with trio_ws.connect(f"{url}/via-haproxy", headers=spoof) as ws:
                    await recorder.connection()
                    hello = await ws.receive_json()
                    for message in ("text", b"\x01binary", b"z" * (3 * 2**20 // 4)):
                        await ws.send(message)
                        assert await ws.receive() == message
                    await ws.aclose(4003, "bye through haproxy")
                info = await recorder.closed()
                assert (info.code, info.reason) == (4003, "bye through haproxy")

                async with trio_ws.connect(url) as ws:
                    await ws.receive_json()
                    served = await recorder.connection()
                    await served.aclose(4004, "server bye")
                    with trio.fail_after(WAIT):
                        closed = await ws.wait_closed()
                assert (closed.code, closed.reason) == (4004, "server bye")
            nursery.cancel_scope.cancel()
        # option forwardfor adds a header of its own after the client's.
        assert hello["x-forwarded-for"] == ["6.6.6.6", "127.0.0.1"]
        assert hello["remote"] == ["127.0.0.1", 0]
        assert hello["peer"][0] == PROXY_ADDRESS


# -- the idle-timeout warning, without a proxy ------------------------------------------

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
HELLO = b"\x81\x82\x00\x00\x00\x00hi"  # a masked text frame, "hi" (mask 0)


async def raw_client(port: int) -> trio.SocketStream:
    """A client that upgrades, says "hi" and reads the echo."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(UPGRADE + HELLO)
    received = b""
    while not received.endswith(b"\x81\x02hi"):
        data = await stream.receive_some()
        assert data
        received += data
    return stream


def reset(stream: trio.SocketStream) -> None:
    """Close with a reset, as a crashed host's kernel (or a proxy) may."""
    stream.socket.setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
    )
    stream.socket.close()


async def echo_with(recorder: Recorder, ws: trio_ws.WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


@pytest.mark.parametrize("ending", ["eof", "reset"])
async def test_abrupt_disconnect_after_activity_is_not_blamed_on_a_proxy(
    caplog: pytest.LogCaptureFixture, ending: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_ws")
    recorder = Recorder(lambda ws: echo_with(recorder, ws))
    async with trio.open_nursery() as nursery:
        server = await start(nursery, recorder, ping_interval=None)
        stream = await raw_client(server.port)
        if ending == "eof":
            await stream.aclose()
        else:
            reset(stream)
        assert (await recorder.closed()).code == 1006
        nursery.cancel_scope.cancel()
    assert idle_warnings(caplog) == []


async def test_a_silent_client_that_vanishes_is_reported_once_a_minute(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idle_cut, "IDLE_CUT_SECONDS", 0.2)
    caplog.set_level(logging.DEBUG, logger="trio_ws")
    recorder = Recorder(lambda ws: echo_with(recorder, ws))
    async with trio.open_nursery() as nursery:
        server = await start(nursery, recorder, ping_interval=30)
        for _ in range(3):
            stream = await raw_client(server.port)
            await trio.sleep(0.3)  # the silence itself, not a synchronisation
            await stream.aclose()
            assert (await recorder.closed()).code == 1006
        nursery.cancel_scope.cancel()
    first, *others = idle_warnings(caplog)
    assert first.levelno == logging.WARNING
    assert "ping_interval (30 s)?" in first.getMessage()
    assert [r.levelno for r in others] == [logging.DEBUG, logging.DEBUG]


async def test_a_closing_handshake_is_never_reported(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idle_cut, "IDLE_CUT_SECONDS", 0.0)
    caplog.set_level(logging.DEBUG, logger="trio_ws")
    async with trio.open_nursery() as nursery:
        server = await start(nursery, report)
        async with trio_ws.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            await ws.receive_json()
        nursery.cancel_scope.cancel()
    assert idle_warnings(caplog) == []


async def test_no_idle_time_on_a_unix_socket(tmp_path: Path) -> None:
    left, right = socket.socketpair()
    with left, right:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(left))
        assert idle_cut.idle_cut_seconds(stream) is None
    assert idle_cut.idle_cut_seconds(trio.testing.memory_stream_pair()[0]) is None
