"""``python -m trio_ws``: demo, echo server and interactive client."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import threading

import pytest
import trio
from conftest import start_server, url_of

import trio_ws
from trio_ws import Server
from trio_ws._cli import run_client


def test_demo_runs_and_exits() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trio_ws", "demo"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 9
    assert "text echo: 'hello, trio_ws'" in lines[2]
    assert "got every message: ['message 0'" in lines[6]
    assert "1000 (normal closure)" in lines[7]


def test_serve_and_connect_subprocesses() -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "trio_ws", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        banner = server.stdout.readline()
        assert "listening on ws://127.0.0.1:" in banner
        url = banner.split()[4]
        client = subprocess.run(
            [sys.executable, "-m", "trio_ws", "connect", url],
            input="first line\nsecond\n",
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert "closed: we closed the connection with 1000" in client.stdout
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()


def test_connect_to_nothing_fails_cleanly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-m", "trio_ws", "connect", f"ws://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=30,
        input="",
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot connect")
    assert "Traceback" not in done.stderr


async def test_run_client_prints_what_arrives(echo_server: Server) -> None:
    echoes_back = threading.Event()

    class Output(io.StringIO):
        def write(self, text: str) -> int:
            written = super().write(text)
            if "< world" in self.getvalue():
                echoes_back.set()
            return written

    out = Output()
    lines = iter(["hello\n", "world\n"])

    def read_line() -> str:
        line = next(lines, "")
        if not line:
            echoes_back.wait(10)  # end of input only once both echoes are printed
        return line

    status = await run_client(url_of(echo_server), read_line, out)
    assert status == 0
    text = out.getvalue()
    assert "< hello\n< world\n" in text
    assert text.rstrip().endswith("with 1000 (normal closure)")


async def test_run_client_stops_when_the_server_closes(nursery: trio.Nursery) -> None:
    async def greeter(ws: trio_ws.WebSocket) -> None:
        await ws.send(b"\x00" * 40)
        await ws.aclose(1001, "bye")

    server = await start_server(nursery, greeter)
    out = io.StringIO()
    no_input = threading.Event()

    def read_line() -> str:
        no_input.wait(5)  # a user who types nothing
        return ""

    status = await run_client(url_of(server), read_line, out)
    no_input.set()
    assert status == 0
    assert "< <40 bytes: " in out.getvalue()
    assert "peer closed the connection with 1001" in out.getvalue()


async def test_run_demo_in_process() -> None:
    from trio_ws._cli import run_demo

    out = io.StringIO()
    await run_demo(out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("1. echo server started: ws://127.0.0.1:")
    assert lines[-1].startswith("9. server stopped")


async def test_run_server_in_process() -> None:
    from trio_ws._cli import run_server

    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(run_server, "127.0.0.1", 0, out)
        url = out.getvalue().split()[4]
        assert url == f"ws://127.0.0.1:{server.port}/"
        async with trio_ws.connect(url) as ws:
            await ws.send("cli echo")
            assert await ws.receive() == "cli echo"
        nursery.cancel_scope.cancel()


def test_main_parses_and_dispatches(monkeypatch: pytest.MonkeyPatch) -> None:
    from trio_ws import _cli

    calls = []
    monkeypatch.setattr(_cli.trio, "run", lambda fn, *args: calls.append((fn.__name__, args)))
    assert _cli.main(["demo"]) == 0
    assert _cli.main(["serve", "--port", "9"]) == 0
    assert calls[0][0] == "run_demo"
    assert calls[1][0] == "run_server"
    assert calls[1][1][:2] == ("127.0.0.1", 9)

    def interrupted(fn: object, *args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(_cli.trio, "run", interrupted)
    assert _cli.main(["demo"]) == 130
    with pytest.raises(SystemExit):
        _cli.main([])
