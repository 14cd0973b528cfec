"""serve_unix: serving on a Unix socket, its file's life, TLS over it."""

from __future__ import annotations

import errno
import functools
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from processes import ENV, TIMEOUT, Background

import trio_ws
from trio_ws._endpoints.unix import bind_unix

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets here")


async def report(ws: trio_ws.WebSocket) -> None:
    await ws.send_json({"path": ws.path, "host": ws.request.host, "remote": ws.remote_address})
    async for message in ws:
        await ws.send(message)


async def start(nursery: trio.Nursery, path: str | Path, **kwargs: Any) -> trio_ws.Server:
    server: trio_ws.Server = await nursery.start(
        functools.partial(trio_ws.serve_unix, report, path, **kwargs)
    )
    return server


def left_behind(path: Path) -> None:
    """A socket file as a killed server leaves it: bound, then closed."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()


async def test_serve_and_connect(tmp_path: Path) -> None:
    path = tmp_path / "ws.sock"
    async with trio.open_nursery() as nursery:
        server = await start(nursery, path)
        assert server.unix_path == str(path)
        assert server.ports == []
        with pytest.raises(IndexError, match="no TCP listener"):
            _ = server.port
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        async with trio_ws.connect("ws://app.example/chat?x=1", unix_path=path) as ws:
            hello = await ws.receive_json()
            assert hello == {"path": "/chat", "host": "app.example", "remote": ""}
            await ws.send(b"x" * 100_000)
            assert await ws.receive() == b"x" * 100_000
        await server.aclose()
        assert not path.exists()  # removed on stop
        assert server.unix_path is None
        nursery.cancel_scope.cancel()


async def test_mode_is_set_before_anyone_connects(tmp_path: Path) -> None:
    path = tmp_path / "ws.sock"
    async with trio.open_nursery() as nursery:
        await start(nursery, path, mode=0o600)
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        nursery.cancel_scope.cancel()
    # bind_unix sets the mode between bind() and listen(): before listen(),
    # a connection is refused, so nobody gets in under the umask's mode.
    listener, identity = bind_unix(tmp_path / "b.sock", mode=0o660)
    with listener.socket:
        assert stat.S_IMODE(os.stat(tmp_path / "b.sock").st_mode) == 0o660
        found = os.stat(tmp_path / "b.sock")
        assert identity == (found.st_dev, found.st_ino)


async def test_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "ws.sock"
    left_behind(path)
    async with trio.open_nursery() as nursery:
        await start(nursery, path)
        async with trio_ws.connect("ws://localhost/", unix_path=path) as ws:
            assert (await ws.receive_json())["path"] == "/"
        nursery.cancel_scope.cancel()
    assert not path.exists()


async def test_live_socket_is_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "ws.sock"
    async with trio.open_nursery() as nursery:
        await start(nursery, path)
        with pytest.raises(OSError, match="another process is listening") as caught:
            await trio_ws.serve_unix(report, path)
        assert caught.value.errno == errno.EADDRINUSE
        # The first server still serves, on its file.
        async with trio_ws.connect("ws://localhost/", unix_path=path) as ws:
            assert (await ws.receive_json())["path"] == "/"
        nursery.cancel_scope.cancel()


async def test_a_file_that_is_not_a_socket_is_never_deleted(tmp_path: Path) -> None:
    path = tmp_path / "ws.sock"
    path.write_text("precious")
    with pytest.raises(FileExistsError, match="not a socket"):
        await trio_ws.serve_unix(report, path)
    assert path.read_text() == "precious"
    link = tmp_path / "link.sock"
    left_behind(tmp_path / "target.sock")
    link.symlink_to(tmp_path / "target.sock")
    with pytest.raises(FileExistsError):
        await trio_ws.serve_unix(report, link)
    assert link.is_symlink()


async def test_arguments_are_checked_before_the_path_is_touched(tmp_path: Path) -> None:
    path = tmp_path / "ws.sock"
    left_behind(path)
    with pytest.raises(ValueError, match="max_connections"):
        await trio_ws.serve_unix(report, path, max_connections=0)
    with pytest.raises(TypeError, match="ping_interval"):
        await trio_ws.serve_unix(report, path, ping_intervl=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="mode"):
        await trio_ws.serve_unix(report, path, mode=0o10000)
    assert stat.S_ISSOCK(os.lstat(path).st_mode)  # still there


async def test_a_file_replaced_meanwhile_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "ws.sock"
    async with trio.open_nursery() as nursery:
        await start(nursery, path)
        path.unlink()  # someone else's server takes the path over
        left_behind(path)
        theirs = os.lstat(path).st_ino
        nursery.cancel_scope.cancel()
    assert os.lstat(path).st_ino == theirs


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux's")
async def test_abstract_namespace() -> None:
    name = f"\0trio_ws-test-{os.getpid()}-{id(object())}"
    async with trio.open_nursery() as nursery:
        server = await start(nursery, name)
        assert server.unix_path == name
        async with trio_ws.connect("ws://localhost/abstract", unix_path=name) as ws:
            assert (await ws.receive_json())["path"] == "/abstract"
        nursery.cancel_scope.cancel()
    with pytest.raises(ValueError, match="no mode"):
        await trio_ws.serve_unix(report, name, mode=0o600)


async def test_tls_over_a_unix_socket(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("app.example").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    path = tmp_path / "wss.sock"
    async with trio.open_nursery() as nursery:
        await start(nursery, path, ssl_context=server_context)
        async with trio_ws.connect(
            "wss://app.example/secure", unix_path=path, ssl_context=client_context
        ) as ws:
            assert (await ws.receive_json())["host"] == "app.example"
            await ws.send("over TLS")
            assert await ws.receive() == "over TLS"
        with pytest.raises(trio_ws.TLSError):  # the name is checked, as over TCP
            async with trio_ws.connect(
                "wss://other.example/", unix_path=path, ssl_context=client_context
            ):
                pass
        nursery.cancel_scope.cancel()


async def test_trusted_unix_peer_names_the_client(tmp_path: Path) -> None:
    path = tmp_path / "ws.sock"
    async with trio.open_nursery() as nursery:
        await start(nursery, path, trusted_proxies=["unix"])
        headers = {"X-Forwarded-For": "198.51.100.4"}
        async with trio_ws.connect("ws://localhost/", unix_path=path, headers=headers) as ws:
            assert (await ws.receive_json())["remote"] == ["198.51.100.4", 0]
        nursery.cancel_scope.cancel()


# -- trio-ws serve --unix -------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trio_ws", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=ENV,
        check=False,
    )


def test_cli_serves_on_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "cli.sock"
    server = Background(
        [sys.executable, "-m", "trio_ws", "serve", "--unix", str(path), "--mode", "660"]
    )
    try:
        assert server.readline() == f"echo server listening on {path} (Ctrl-C to stop)\n"
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o660

        async def client() -> None:
            async with trio_ws.connect("ws://localhost/", unix_path=path) as ws:
                await ws.send("via the command line")
                assert await ws.receive() == "via the command line"

        trio.run(client)
        # trio-ws connect --unix: the URL gives the path, the socket the way there.
        typed = subprocess.run(
            [sys.executable, "-m", "trio_ws", "connect", "ws://localhost/x", "--unix", str(path)],
            input="over the socket\n",
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=ENV,
        )
        assert typed.returncode == 0, typed.stderr
        assert "< over the socket\n" in typed.stdout
        assert typed.stdout.splitlines()[-1] == (
            "closed: we closed the connection with 1000 (normal closure)"
        )
        assert (
            cli("connect", "ws://localhost/", "--unix", str(path), "--proxy", "none").returncode
            == 2
        )
        # A second one on the same path: in use (exit status 6).
        busy = cli("serve", "--unix", str(path))
        assert busy.returncode == 6
        assert "another process is listening on it" in busy.stderr
        server.proc.send_signal(signal.SIGINT)
        status, out, err = server.wait()
        assert (status, out) == (0, "stopped\n"), err
        assert not path.exists()
    finally:
        server.kill()
    path.write_text("a regular file")
    refused = cli("serve", "--unix", str(path))
    assert refused.returncode == 8
    assert refused.stderr.count("\n") == 1
    assert "exists and is not a socket" in refused.stderr
    for wrong in (
        ["--unix", str(path), "--port", "1"],
        ["--mode", "600"],
        ["--unix", "x", "--mode", "9"],
    ):
        assert cli("serve", *wrong).returncode == 2
