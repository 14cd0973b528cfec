"""Every program in examples/ runs, exits by itself and prints what it claims.

Each example runs as a subprocess of ``sys.executable`` on 127.0.0.1.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from processes import ENV, TIMEOUT, Background

import trio_ws
from trio_ws.demo.command_line import trio_ws_command

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

TESTED = {
    "echo_server.py",
    "echo_client.py",
    "timeout_receive_loop.py",
    "health_check.py",
    "background_connection.py",
    "tls_echo.py",
    "reconnecting_client.py",
    "unix_socket_echo.py",
    "client_via_proxy.py",
    "asgi_app.py",  # run, and served by the hypercorn command, in test_asgi.py
}


def run(
    name: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env or ENV,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The output of a run that must have succeeded."""
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def start_example(name: str, *args: str, stdin: bool = False) -> Background:
    """An example started in the background (see tests/processes.py)."""
    return Background([sys.executable, str(EXAMPLES / name), *args], stdin=stdin)


@pytest.fixture
def background() -> Iterator[list[Background]]:
    started: list[Background] = []
    yield started
    for process in started:
        process.kill()


def refused_port() -> tuple[socket.socket, int]:
    """A bound socket that does not listen: connecting to its port is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


#: The chat demo's programs (examples/chat/), which run its code in the
#: package (trio_ws/demo/chat/, tested in test_chat.py: the protocol with
#: real clients, the terminal client in-process and from the command line,
#: the page over HTTP and in a headless browser).
CHAT_TESTED = {"server.py", "client.py"}


def test_every_example_is_tested() -> None:
    assert {path.name for path in EXAMPLES.glob("*.py")} == TESTED
    assert {path.name for path in (EXAMPLES / "chat").iterdir()} == CHAT_TESTED
    assert {path.name for path in EXAMPLES.iterdir() if path.is_dir()} == {"chat"}


# -- echo_server.py and echo_client.py ---------------------------------------


def test_echo_server_and_client_as_two_programs(background: list[Background]) -> None:
    server = start_example("echo_server.py", "--port", "0", "--once")
    background.append(server)
    first = server.readline()
    match = re.fullmatch(r"listening on (ws://127\.0\.0\.1:\d+/)\n", first)
    assert match, first
    url = match[1]

    client_out = ok(run("echo_client.py", url, "one", "twö"))
    assert f"connected to {url}" in client_out
    assert "> 'one'\n< 'one'\n> 'twö'\n< 'twö'\n" in client_out
    assert "closed: we closed the connection with 1000 (normal closure)" in client_out

    # --once: the server stops by itself after its first client.
    status, out, err = server.wait()
    assert status == 0, err
    assert re.search(r"connection \d+: 127\.0\.0\.1 opened /\n", out)
    assert "peer closed the connection with 1000 (normal closure)" in out
    assert out.endswith("stopping\n")


def test_echo_server_stops_cleanly_on_ctrl_c(background: list[Background]) -> None:
    server = start_example("echo_server.py", "--port", "0")
    background.append(server)
    match = re.fullmatch(r"listening on (ws://\S+)\n", server.readline())
    assert match

    async def client() -> trio_ws.CloseInfo:
        async with trio_ws.connect(match[1]) as ws:
            await ws.send("before Ctrl-C")
            assert await ws.receive() == "before Ctrl-C"
            server.proc.send_signal(signal.SIGINT)
            with trio.fail_after(TIMEOUT):
                return await ws.wait_closed()

    # The open connection is closed with 1001 before the server exits.
    info = trio.run(client)
    assert (info.code, info.reason, info.by_peer) == (1001, "server shutting down", True)
    status, out, err = server.wait()
    assert status == 0, err
    assert "stopping\n" in out
    assert "Traceback" not in err


def test_echo_server_duration() -> None:
    out = ok(run("echo_server.py", "--port", "0", "--duration", "0.1"))
    assert re.fullmatch(r"listening on ws://127\.0\.0\.1:\d+/\nstopping\n", out), out


def test_echo_client_starts_its_own_server() -> None:
    out = ok(run("echo_client.py"))
    assert re.match(r"no URL given: started an echo server on port \d+\n", out)
    assert "< 'hello'" in out
    assert "< 'wörld, in UTF-8'" in out
    assert "< b'\\x00\\x01\\x02 binary'" in out
    assert out.endswith("closed: we closed the connection with 1000 (normal closure)\n")


def test_echo_client_reports_a_refused_connection() -> None:
    sock, port = refused_port()
    with sock:
        result = run("echo_client.py", f"ws://127.0.0.1:{port}/", "x")
    assert result.returncode == 1
    assert "could not connect: cannot connect to 127.0.0.1" in result.stderr
    assert "Traceback" not in result.stderr


# -- timeout_receive_loop.py -------------------------------------------------


def test_timeout_receive_loop_loses_nothing() -> None:
    out = ok(run("timeout_receive_loop.py", "--count", "300", "--tick", "0.005"))
    assert "received all 300 messages exactly once, in order" in out
    match = re.search(r"woke up (\d+) times", out)
    assert match
    assert int(match[1]) >= 10  # the receive really was interrupted, many times


# -- health_check.py ---------------------------------------------------------


def test_health_check_self_check() -> None:
    out = ok(run("health_check.py"))
    lines = out.splitlines()
    assert re.fullmatch(r"serving on port \d+: .*", lines[0])
    checks = lines[1:]
    assert len(checks) == 6
    assert all(line.startswith("ok ") for line in checks), out
    assert "GET /healthz       -> HTTP/1.1 200 OK | ok" in out
    assert "rejected 401 | missing or wrong token" in out
    assert "open | authenticated echo: hi" in out


def http_get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = b""
        while data := sock.recv(4096):
            answer += data
    return answer


def test_health_check_serve_mode_answers_http_and_stops_on_ctrl_c(
    background: list[Background],
) -> None:
    server = start_example("health_check.py", "--serve", "--port", "0")
    background.append(server)
    match = re.match(r"serving on port (\d+):", server.readline())
    assert match
    port = int(match[1])
    answer = http_get(port, "/healthz")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\nok\n")
    assert http_get(port, "/nope").startswith(b"HTTP/1.1 426 ")
    server.proc.send_signal(signal.SIGINT)
    status, _, err = server.wait()
    assert status == 0, err
    assert "Traceback" not in err


# -- background_connection.py ------------------------------------------------


def test_background_connection() -> None:
    out = ok(run("background_connection.py"))
    assert re.match(r"connected to ws://127\.0\.0\.1:\d+/ \(connection \d+\)\n", out)
    for command in ("hello", "how are you", "still there?", "quit"):
        assert f"  writer: sending {command!r}\n" in out
    for reply in ("HELLO", "HOW ARE YOU", "STILL THERE?", "bye"):
        assert f"  reader: {reply!r}\n" in out
    assert "  reader: 'notification 1'\n" in out
    # The reader saw the replies in the order the writer sent the commands.
    positions = [out.index(f"reader: {r!r}") for r in ("HELLO", "HOW ARE YOU", "bye")]
    assert positions == sorted(positions)
    assert out.endswith(
        "  reader: connection closed: peer closed the connection with 1000 (normal closure)\n"
        "done: closed with 1000, by the peer: True\n"
    )


# -- tls_echo.py -------------------------------------------------------------


def test_tls_echo() -> None:
    pytest.importorskip("trustme")
    out = ok(run("tls_echo.py"))
    assert re.match(r"TLS echo server on wss://localhost:\d+/secure\n", out)
    assert "echoed over TLS: 'encrypted hello', intact: True" in out
    assert "echoed over TLS: <100000 bytes>, intact: True" in out
    assert re.search(r"ping over TLS: \d+\.\d\d ms", out)
    assert "closed: we closed the connection with 1000 (normal closure)" in out
    assert "without the CA: TLSError: TLS handshake with localhost:" in out
    assert "CERTIFICATE_VERIFY_FAILED" in out


def test_tls_echo_without_trustme(tmp_path: Path) -> None:
    # A trustme module that cannot be imported, found before the real one.
    (tmp_path / "trustme.py").write_text("raise ImportError('hidden for this test')\n")
    env = {**ENV, "PYTHONPATH": str(tmp_path)}
    out = ok(run("tls_echo.py", env=env))
    assert out == "this example needs trustme for a throwaway certificate: pip install trustme\n"


# -- reconnecting_client.py --------------------------------------------------


def test_reconnecting_client_carries_on_across_a_restart() -> None:
    out = ok(run("reconnecting_client.py"))
    match = re.match(r"no URL given: started an echo server on port (\d+)\n", out)
    assert match, out
    port = match[1]
    before, restart, after = out.partition("server: stopping\n")
    assert restart, out
    assert f"connected to ws://127.0.0.1:{port}/ (connection #1)\n" in before
    for n in (1, 2, 3):
        assert f"  echoed: 'message {n}'\n" in before
    # The server went away; the client noticed, retried, and went on counting.
    assert after.startswith(
        "connection lost: peer closed the connection with 1001 (going away) "
        "'server shutting down'\n"
    )
    assert re.search(r"attempt 1 failed: ConnectFailed; retrying in \d+\.\d\d s\n", after)
    assert f"server: started again on port {port}\n" in after
    resumed = after.split(f"connected to ws://127.0.0.1:{port}/ (connection #2)\n")[1]
    assert resumed == (
        "  echoed: 'message 4'\n"
        "  echoed: 'message 5'\n"
        "  echoed: 'message 6'\n"
        "done: 6 messages echoed over 2 connections\n"
    )
    # Given a URL where nothing listens, it gives up after --max-attempts.
    sock, refused = refused_port()
    with sock:
        result = run("reconnecting_client.py", f"ws://127.0.0.1:{refused}/", "--max-attempts", "2")
    assert result.returncode == 1
    assert result.stdout.startswith("attempt 1 failed: ConnectFailed; retrying in ")
    assert "gave up after 2 failed attempts" in result.stderr
    assert "Traceback" not in result.stderr


# -- client_via_proxy.py -----------------------------------------------------


def test_client_via_proxy() -> None:
    out = ok(run("client_via_proxy.py"))
    match = re.match(
        r"echo server on ws://127\.0\.0\.1:\d+/, HTTP proxy on 127\.0\.0\.1:(\d+)\n", out
    )
    assert match, out
    proxy = f"http://demo@127.0.0.1:{match[1]}"
    assert "  sent 'hello', got back 'hello'\n  sent 'wörld', got back 'wörld'\n" in out
    assert out.endswith(
        "with a wrong password:\n"
        f"  ProxyError: proxy {proxy} refused CONNECT: HTTP 407 Proxy Authentication Required"
        " (the credentials in the proxy URL were refused)\n"
        f"  proxy='{proxy}' status_code=407\n"
    )
    # Given a URL and a proxy where nothing listens: one line, naming the proxy.
    sock, refused = refused_port()
    with sock:
        result = run("client_via_proxy.py", "ws://ws.example/", "--proxy", f"127.0.0.1:{refused}")
    assert result.returncode == 1
    assert result.stderr.startswith(
        "could not connect: ConnectFailed: "
        f"cannot connect to the proxy http://127.0.0.1:{refused}: "
    )
    assert "Traceback" not in result.stderr


# -- chat/server.py and chat/client.py ----------------------------------------


def test_chat_server_and_client_run_as_programs(background: list[Background]) -> None:
    server = start_example("chat/server.py", "--port", "0")
    background.append(server)
    banner = re.fullmatch(
        r"chat server on http://127\.0\.0\.1:(\d+)/ \(Ctrl-C to stop\)\n", server.readline()
    )
    assert banner
    assert server.readline() == "open that page in a browser, or join from a terminal:\n"
    url = f"ws://127.0.0.1:{banner[1]}/"
    join = trio_ws_command("chat-client", url, "--name", "YOUR_NAME")
    assert server.readline() == f"  {join}\n"
    assert http_get(int(banner[1]), "/").startswith(b"HTTP/1.1 200 OK\r\n")

    client = start_example("chat/client.py", url, "--name", "zed", "--room", "den", stdin=True)
    background.append(client)
    assert client.readline() == "* you joined #den as zed; here: zed\n"
    client.write("hello\n/join games\n")
    assert client.readline() == "[#den] zed: hello\n"
    assert client.readline() == "* you joined #games as zed; here: zed\n"
    status, out, err = client.wait()  # end of input: the client leaves
    assert status == 0, err
    assert out == "closed: we closed the connection with 1000 (normal closure)\n"

    server.proc.send_signal(signal.SIGINT)
    status, out, err = server.wait()
    assert status == 0, err
    assert out == "stopped\n"

    # The same one-line errors as python -m trio_ws chat and chat-client.
    sock, refused = refused_port()
    with sock:
        result = run("chat/client.py", f"ws://127.0.0.1:{refused}/", "--name", "zed")
    assert result.returncode == 4
    assert result.stderr.startswith("python -m trio_ws chat-client: error: cannot connect to ")
    assert result.stderr.count("\n") == 1


# -- unix_socket_echo.py -------------------------------------------------------


def test_unix_socket_echo(tmp_path: Path, background: list[Background]) -> None:
    out = ok(run("unix_socket_echo.py"))
    assert re.match(r"serving on /\S+/echo\.sock\n", out), out
    assert "sent 'hello', got 'hello'\n" in out
    assert out.endswith("socket file removed: True\n")

    path = tmp_path / "echo.sock"
    server = start_example("unix_socket_echo.py", "--serve", str(path), "--mode", "600")
    background.append(server)
    assert server.readline() == f"listening on {path} (Ctrl-C to stop)\n"
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    async def client() -> trio_ws.CloseInfo:
        async with trio_ws.connect("ws://localhost/", unix_path=path) as ws:
            await ws.send("over a Unix socket")
            assert await ws.receive() == "over a Unix socket"
            server.proc.send_signal(signal.SIGINT)
            with trio.fail_after(TIMEOUT):
                return await ws.wait_closed()

    assert trio.run(client).code == 1001
    status, out, err = server.wait()
    assert (status, out) == (0, "stopped\n"), err
    assert not path.exists()
    # A second server on a live socket is refused (here: a regular file).
    path.write_text("not a socket")
    result = run("unix_socket_echo.py", "--serve", str(path))
    assert result.returncode == 1
    assert "is not a socket" in result.stderr
