"""``python -m trio_ws`` (the ``trio-ws`` command): the echo server, the
interactive client and the demo; for every command, a failure a user can
expect is one line on stderr with an exit status of its own, and Ctrl-C
stops it the same way. The chat commands' conversations are in test_chat.py."""

from __future__ import annotations

import ctypes
import io
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from conftest import start_server, url_of
from processes import ENV, TIMEOUT, Background

import trio_ws
from trio_ws import Server, _cli
from trio_ws._cli import EXIT_STATUS_MEANING, ExitStatus
from trio_ws.demo.command_line import port_number, trio_ws_command
from trio_ws.demo.echo import run_client, run_demo, run_server

ROOT = Path(__file__).resolve().parent.parent
TRIO_WS = [sys.executable, "-m", "trio_ws"]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m trio_ws ARGS`` to its end, with no input."""
    return subprocess.run(
        [*TRIO_WS, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 3,
        input="",
        env=ENV,
        cwd=cwd,
        check=False,
    )


def assert_one_line_error(
    done: subprocess.CompletedProcess[str], status: ExitStatus, start: str
) -> str:
    """The run failed with ``status`` and one line on stderr, starting with ``start``."""
    assert done.returncode == status, done.stderr
    assert done.stderr.startswith(start), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == ""
    return done.stderr


@pytest.fixture
def background() -> Iterator[list[Background]]:
    started: list[Background] = []
    yield started
    for process in started:
        process.kill()


def start(background: list[Background], *args: str, stdin: bool = False) -> Background:
    """``python -m trio_ws ARGS`` in the background, killed at the end of the test."""
    program = Background([*TRIO_WS, *args], stdin=stdin)
    background.append(program)
    return program


def refused_port() -> tuple[socket.socket, int]:
    """A bound socket that does not listen: connecting to its port is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


# -- the commands ----------------------------------------------------------------------


def test_demo_runs_and_exits(tmp_path: Path) -> None:
    done = cli("demo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 9
    assert lines[1] == (
        "2. connected: the server runs echo() for this connection, in a task of its own"
    )
    assert "text echo: 'hello, trio_ws'" in lines[2]
    assert "got every message: ['message 0'" in lines[6]
    assert "1000 (normal closure)" in lines[7]


def test_serve_and_connect_subprocesses(background: list[Background]) -> None:
    server = start(background, "serve", "--port", "0")
    banner = server.readline()
    assert "listening on ws://127.0.0.1:" in banner
    url = banner.split()[4]
    client = subprocess.run(
        [*TRIO_WS, "connect", url],
        input="first line\nsecond\n",
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    assert client.stdout.startswith(f"connected to {url}; type messages, Ctrl-D to close\n")
    assert client.stdout.endswith("closed: we closed the connection with 1000 (normal closure)\n")


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

    await run_client(url_of(echo_server), read_line, out)
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

    await run_client(url_of(server), read_line, out)
    no_input.set()
    assert "< <40 bytes: " in out.getvalue()
    assert "peer closed the connection with 1001" in out.getvalue()


async def test_run_demo_in_process() -> None:
    out = io.StringIO()
    await run_demo(out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("1. echo server started: ws://127.0.0.1:")
    assert lines[-1].startswith("9. server stopped")


async def test_run_server_in_process() -> None:
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(run_server, "127.0.0.1", 0, out)
        url = out.getvalue().split()[4]
        assert url == f"ws://127.0.0.1:{server.port}/"
        async with trio_ws.connect(url) as ws:
            await ws.send("cli echo")
            assert await ws.receive() == "cli echo"
        nursery.cancel_scope.cancel()


def test_main_parses_and_dispatches(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = []
    monkeypatch.setattr(_cli.trio, "run", lambda fn, *args: calls.append((fn, args)))
    assert _cli.main(["demo"]) == 0
    assert _cli.main(["serve", "--port", "9"]) == 0
    assert _cli.main(["serve", "-v", "--port", "65535"]) == 0  # -v after the command too
    assert [fn for fn, _ in calls] == [_cli.until_interrupted] * 3
    assert calls[0][1][0].func is run_demo
    assert calls[1][1][0].func is run_server
    assert calls[1][1][0].args[:2] == ("127.0.0.1", 9)

    def interrupted(fn: object, *args: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C before the command listens for it

    monkeypatch.setattr(_cli.trio, "run", interrupted)
    capsys.readouterr()
    assert _cli.main(["demo"]) == 0
    assert capsys.readouterr().out == "stopped\n"
    assert _cli.main([]) == ExitStatus.USAGE
    assert capsys.readouterr().err == (
        "python -m trio_ws: error: the following arguments are required: COMMAND; "
        "see python -m trio_ws --help\n"
    )


def test_a_bug_is_shown_with_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only expected failures become one line: anything else is a bug."""

    def broken(fn: object, *args: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(_cli.trio, "run", broken)
    with pytest.raises(ZeroDivisionError):
        _cli.main(["demo"])


# -- one line of error, and an exit status of its own -------------------------------------


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["serve", "--port", "99999"], "serve: error: argument --port: a port is 0 to 65535"),
        (["chat", "--port", "-1"], "chat: error: argument --port: a port is 0 to 65535"),
        (["serve", "--port", "http"], "serve: error: argument --port: not a port number: 'http'"),
        (["chat", "--workers", "0"], "chat: error: argument --workers: must be at least 1"),
        (["connect"], "connect: error: the following arguments are required: url"),
        (["chat-client", "ws://h/"], "chat-client: error: the following arguments are required"),
        (["serve", "--prot", "1"], "error: unrecognized arguments: --prot 1"),
        (["bogus"], ": error: argument COMMAND: invalid choice: 'bogus'"),
        ([], ": error: the following arguments are required: COMMAND"),
    ],
)
def test_bad_arguments(args: list[str], error: str) -> None:
    done = cli(*args)
    assert done.returncode == ExitStatus.USAGE
    assert done.stderr.startswith("python -m trio_ws")
    assert error in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr  # no usage, no traceback


@pytest.mark.parametrize("url", ["http://127.0.0.1/", "not a url", "ws://"])
@pytest.mark.parametrize("command", ["connect", "chat-client"])
def test_a_bad_url(command: str, url: str) -> None:
    args = [command, url] + (["--name", "ann"] if command == "chat-client" else [])
    message = assert_one_line_error(
        cli(*args), ExitStatus.INVALID_URL, f"python -m trio_ws {command}: error: "
    )
    assert repr(url) in message


@pytest.mark.parametrize("command", ["connect", "chat-client"])
def test_a_refused_connection(command: str) -> None:
    sock, port = refused_port()
    with sock:
        args = [command, f"ws://127.0.0.1:{port}/"]
        done = cli(*args, *(["--name", "ann"] if command == "chat-client" else []))
    assert_one_line_error(
        done,
        ExitStatus.CANNOT_CONNECT,
        f"python -m trio_ws {command}: error: cannot connect to 127.0.0.1:{port}: ",
    )


def test_a_refused_handshake() -> None:
    """A server that answers the upgrade with 404."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def answer_404() -> None:
            conn, _ = listener.accept()
            with conn:
                request = b""
                while b"\r\n\r\n" not in request and (data := conn.recv(4096)):
                    request += data
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

        thread = threading.Thread(target=answer_404)
        thread.start()
        done = cli("connect", f"ws://127.0.0.1:{port}/nothing-here")
        thread.join(TIMEOUT)
    message = assert_one_line_error(
        done, ExitStatus.REJECTED, "python -m trio_ws connect: error: "
    )
    assert "404" in message


@pytest.mark.parametrize("command", ["serve", "chat"])
def test_a_port_in_use(command: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        done = cli(command, "--port", str(port))
        verbose = cli(command, "--port", str(port), "-v")
    message = assert_one_line_error(
        done,
        ExitStatus.ADDRESS_IN_USE,
        f"python -m trio_ws {command}: error: cannot listen on 127.0.0.1:{port}: ",
    )
    assert "already in use" in message
    assert "--port 0" in message  # what to do about it
    # -v: the traceback, then the same line.
    assert verbose.returncode == ExitStatus.ADDRESS_IN_USE
    assert "Traceback" in verbose.stderr
    assert verbose.stderr.endswith(message)


def _without_cap_net_bind_service() -> None:
    """In the child, before exec: root without the right to bind ports < 1024."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_net_bind_service = 24, 10
    if libc.prctl(pr_capbset_drop, cap_net_bind_service, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_NET_BIND_SERVICE)")


def test_permission_denied() -> None:
    """Port 80 without the privilege: as a user, or as root without
    CAP_NET_BIND_SERVICE (dropped from the child's capability bounding set)."""
    unprivileged = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")
    if not sys.platform.startswith("linux") or not unprivileged.exists():
        pytest.skip("needs Linux, to know which ports need a privilege")
    if int(unprivileged.read_text()) <= 80:
        pytest.skip(
            f"port 80 needs no privilege here ({unprivileged} is {unprivileged.read_text()})"
        )
    as_root = os.geteuid() == 0
    try:
        done = subprocess.run(
            [*TRIO_WS, "serve", "--port", "80"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 3,
            env=ENV,
            preexec_fn=_without_cap_net_bind_service if as_root else None,
            check=False,
        )
    except subprocess.SubprocessError as exc:
        pytest.skip(f"root here, and it cannot drop CAP_NET_BIND_SERVICE: {exc}")
    message = assert_one_line_error(
        done,
        ExitStatus.PERMISSION_DENIED,
        "python -m trio_ws serve: error: cannot listen on 127.0.0.1:80: permission denied",
    )
    assert "1024" in message


def test_an_address_of_another_machine() -> None:
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never an address of this machine.
    done = cli("serve", "--host", "192.0.2.1", "--port", "0")
    if done.returncode == 0:  # pragma: no cover
        pytest.skip("this machine has 192.0.2.1")
    message = assert_one_line_error(
        done, ExitStatus.CANNOT_LISTEN, "python -m trio_ws serve: error: cannot listen on "
    )
    assert message.endswith(": 192.0.2.1 is not an address of this machine\n")


# -- Ctrl-C, the same in every command ----------------------------------------------------


def test_ctrl_c_stops_serve_and_connect(background: list[Background]) -> None:
    server = start(background, "serve", "--port", "0")
    url = server.readline().split()[4]
    client = start(background, "connect", url, stdin=True)
    assert client.readline() == f"connected to {url}; type messages, Ctrl-D to close\n"
    client.write("hello\n")
    assert client.readline() == "< hello\n"
    client.proc.send_signal(signal.SIGINT)
    client.proc.wait(TIMEOUT)  # with its input still open: Ctrl-C, not Ctrl-D, ends it
    status, out, err = client.wait()
    assert (status, err) == (0, "")
    assert re.fullmatch(
        r"closed: we closed the connection with 1001 \(going away\).*\nstopped\n", out
    )
    server.proc.send_signal(signal.SIGINT)
    assert server.wait() == (0, "stopped\n", "")


def test_ctrl_c_stops_chat_and_chat_client(background: list[Background]) -> None:
    server = start(background, "chat", "--port", "0")
    port = re.findall(r":(\d+)/", server.readline())[0]
    client = start(
        background, "chat-client", f"ws://127.0.0.1:{port}/", "--name", "ann", stdin=True
    )
    assert client.readline() == "* you joined #lobby as ann; here: ann\n"
    client.proc.send_signal(signal.SIGINT)
    client.proc.wait(TIMEOUT)  # with its input still open: Ctrl-C, not Ctrl-D, ends it
    status, out, err = client.wait()
    assert (status, err) == (0, "")
    assert re.fullmatch(
        r"closed: we closed the connection with 1001 \(going away\).*\nstopped\n", out
    )
    server.proc.send_signal(signal.SIGINT)
    status, out, err = server.wait()
    assert (status, out.splitlines()[-1], err) == (0, "stopped", "")


async def test_until_interrupted_cancels_the_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The demo ends by itself too quickly to be interrupted from outside
    reliably: the wrapper that every command but chat runs in, in-process."""
    cancelled = False

    async def command() -> None:
        nonlocal cancelled
        signal.raise_signal(signal.SIGINT)  # Ctrl-C
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled = True
            raise

    with trio.fail_after(TIMEOUT):
        await _cli.until_interrupted(command)
    assert cancelled
    assert capsys.readouterr().out == "stopped\n"

    async def quick() -> None:
        pass

    await _cli.until_interrupted(quick)  # a command that ends by itself: nothing said
    assert capsys.readouterr().out == ""


# -- help, version, and commands that work as printed ---------------------------------------


def test_help_is_plain_text_with_the_exit_statuses() -> None:
    done = cli("--help")
    assert done.returncode == 0
    text = done.stdout
    assert text.startswith("usage: python -m trio_ws [-h] [--version] [-v] COMMAND ...\n")
    for markup in ("``", ":func:", ":mod:", ".. "):
        assert markup not in text
    for command in ("chat", "chat-client", "serve", "connect", "demo"):
        assert re.search(rf"^    {command} +\S", text, re.MULTILINE), command
        sub = cli(command, "--help")
        assert sub.returncode == 0, sub.stderr
        assert sub.stdout.startswith(f"usage: python -m trio_ws {command} [-h] [-v]")
        assert "``" not in sub.stdout
    for status, meaning in EXIT_STATUS_MEANING.items():
        assert f"  {status.value:<3} {meaning}\n" in text
    assert "Ctrl-C" in text


def test_version() -> None:
    done = cli("--version")
    assert (done.returncode, done.stdout) == (0, f"trio_ws {trio_ws.__version__}\n")


def test_the_installed_script() -> None:
    script = Path(sys.executable).parent / "trio-ws"
    if not script.exists():
        pytest.skip(f"no trio-ws script beside {sys.executable} (not installed with pip?)")
    done = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=TIMEOUT, check=True
    )
    assert done.stdout.startswith("usage: trio-ws [-h]")
    failed = subprocess.run(
        [str(script), "serve", "--port", "99999"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert failed.returncode == ExitStatus.USAGE
    assert failed.stderr.startswith("trio-ws serve: error: ")


def test_printed_commands(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The command the chat prints to join: this Python's full path, or the
    trio-ws script where it is the shell's and beside this Python."""
    monkeypatch.setenv("PATH", str(tmp_path))
    command = trio_ws_command("chat-client", "ws://[::1]:8765/", "--name", "YOUR NAME")
    assert shlex.split(command) == [
        sys.executable,
        *("-m", "trio_ws", "chat-client", "ws://[::1]:8765/", "--name", "YOUR NAME"),
    ]
    # Another trio-ws on the PATH, of another Python: not that one.
    (tmp_path / "trio-ws").write_text("#!/bin/sh\n")
    (tmp_path / "trio-ws").chmod(0o755)
    assert trio_ws_command("demo") == shlex.join([sys.executable, "-m", "trio_ws", "demo"])
    # The one beside this Python (an active virtual environment).
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    if (Path(sys.executable).parent / "trio-ws").exists():
        assert trio_ws_command("demo") == "trio-ws demo"


def test_port_numbers() -> None:
    assert (port_number("0"), port_number("65535")) == (0, 65535)
    for bad in ("-1", "65536", "99999", "x", ""):
        with pytest.raises(Exception, match="port"):
            port_number(bad)


def test_the_exit_statuses_are_documented() -> None:
    """docs/cli.md's table is the code's."""
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| (.+?) \|$", text, re.MULTILINE)
    assert {int(status): meaning for status, meaning in rows} == {
        status.value: meaning for status, meaning in EXIT_STATUS_MEANING.items()
    }
    assert set(EXIT_STATUS_MEANING) == set(ExitStatus)
    assert len({status.value for status in ExitStatus}) == len(ExitStatus)


def test_redis_without_its_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "coredis", None)  # not installed
    status = _cli.main(["chat", "--port", "0", "--redis", "redis://127.0.0.1:1/0"])
    assert status == ExitStatus.FAILED
    error = capsys.readouterr().err
    assert error.startswith("python -m trio_ws chat: error: RedisBackplane needs the coredis")
    assert "pip install 'trio_ws[redis]'" in error
    assert error.count("\n") == 1


# -- connect --proxy ---------------------------------------------------------------------


def _one_answer_proxy(answer: bytes) -> tuple[socket.socket, threading.Thread]:
    """An HTTP proxy in a thread that reads one request and sends ``answer``."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request and (data := conn.recv(4096)):
                request += data
            conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_connect_through_a_proxy_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refusing proxy is exit status 4, like a refusing network; the error
    names the proxy (without its password), not the server."""
    listener, thread = _one_answer_proxy(b"HTTP/1.1 403 Forbidden\r\n\r\n")
    with listener:
        port = listener.getsockname()[1]
        proxy = f"http://ann:secret@127.0.0.1:{port}"
        assert _cli.main(["connect", "ws://ws.example/", "--proxy", proxy]) == 4
        thread.join(TIMEOUT)
    assert capsys.readouterr().err == (
        f"python -m trio_ws connect: error: proxy http://ann@127.0.0.1:{port} "
        "refused CONNECT: HTTP 403 Forbidden\n"
    )
    # An unknown scheme is a bad URL (3); a SOCKS proxy without python-socks, 1.
    assert _cli.main(["connect", "ws://ws.example/", "--proxy", "ftp://h"]) == 3
    assert "'ftp://h' is not a proxy URL" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "python_socks", None)  # not installed
    assert _cli.main(["connect", "ws://ws.example/", "--proxy", "socks5h://h"]) == 1
    assert capsys.readouterr().err == (
        "python -m trio_ws connect: error: the SOCKS proxy socks5h://h:1080 needs "
        "python-socks: pip install 'trio_ws[socks]'\n"
    )
    # --proxy none: directly, whatever the environment says.
    sock, refused = refused_port()
    with sock:
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
        monkeypatch.setenv("no_proxy", "")  # conftest.py's loopback entries
        assert _cli.main(["connect", f"ws://127.0.0.1:{refused}/", "--proxy", "none"]) == 4
        assert f"cannot connect to 127.0.0.1:{refused}: " in capsys.readouterr().err
        assert _cli.main(["connect", f"ws://127.0.0.1:{refused}/"]) == 4
        assert "cannot connect to the proxy http://127.0.0.1:9: " in capsys.readouterr().err
