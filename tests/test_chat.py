"""The chat demo (trio_ws/demo/chat/, run by examples/chat/): its protocol
with real clients, its input checks, its page and metrics over plain HTTP,
the terminal client, the command line, the page in a real headless browser,
and the demo's files in the wheel."""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from processes import Background
from server_helpers import http_exchange

import trio_ws
from trio_ws._test_hooks import socket_of
from trio_ws.demo.chat import client as client_module
from trio_ws.demo.chat import server as chat
from trio_ws.demo.command_line import trio_ws_command

ROOT = Path(__file__).resolve().parent.parent
#: The chat demo's code and page, in the package.
DEMO = ROOT / "trio_ws" / "demo" / "chat"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


async def start_chat(nursery: trio.Nursery) -> trio_ws.Server:
    server: trio_ws.Server = await nursery.start(chat.serve_chat, "127.0.0.1", 0)
    return server


class User:
    """A chat client speaking the JSON protocol."""

    def __init__(self, ws: trio_ws.WebSocket) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, nursery: trio.Nursery, server: trio_ws.Server) -> User:
        return cls(await trio_ws.start_connection(nursery, f"ws://127.0.0.1:{server.port}/"))

    async def send(self, **message: Any) -> None:
        await self.ws.send_json(message)

    async def join(self, room: str, name: str) -> dict[str, Any]:
        await self.send(type="join", room=room, name=name)
        return await self.next()

    async def next(self) -> dict[str, Any]:
        with trio.fail_after(5):
            message: dict[str, Any] = await self.ws.receive_json()
        return message


async def test_rooms_through_the_protocol(nursery: trio.Nursery) -> None:
    server = await start_chat(nursery)
    ann, bob, cid = [await User.connect(nursery, server) for _ in range(3)]
    assert await ann.join("lobby", "ann") == {
        "type": "welcome",
        "room": "lobby",
        "you": "ann",
        "members": ["ann"],
    }
    welcome = await bob.join("lobby", "bob")
    assert welcome["members"] == ["ann", "bob"]
    assert await ann.next() == {"type": "joined", "room": "lobby", "name": "bob"}
    assert (await cid.join("games", "cid"))["members"] == ["cid"]

    await ann.send(type="chat", room="lobby", text="héllo <b>all</b>")
    said = {"type": "message", "room": "lobby", "name": "ann", "text": "héllo <b>all</b>"}
    assert await ann.next() == said  # the sender gets it too, in order
    assert await bob.next() == said

    await bob.send(type="leave", room="lobby")
    left = {"type": "left", "room": "lobby", "name": "bob"}
    assert await bob.next() == left
    assert await ann.next() == left

    # One connection in two rooms.
    assert (await ann.join("games", "ann"))["members"] == ["cid", "ann"]
    assert await cid.next() == {"type": "joined", "room": "games", "name": "ann"}
    await cid.send(type="chat", room="games", text="gg")
    assert (await ann.next())["text"] == "gg"
    assert (await cid.next())["text"] == "gg"

    # A connection that vanishes leaves every room it was in.
    sock = socket_of(ann.ws)
    assert sock is not None
    sock.close()
    assert await cid.next() == {"type": "left", "room": "games", "name": "ann"}
    assert (await bob.join("lobby", "bob"))["members"] == ["bob"]
    assert (await cid.join("lobby", "cid"))["members"] == ["bob", "cid"]
    assert await bob.next() == {"type": "joined", "room": "lobby", "name": "cid"}


async def test_bad_input_gets_an_error_or_a_close(nursery: trio.Nursery) -> None:
    server = await start_chat(nursery)
    eve, ann = await User.connect(nursery, server), await User.connect(nursery, server)
    await ann.join("lobby", "ann")

    async def error_for(raw: str | bytes) -> str:
        await eve.ws.send(raw)
        message = await eve.next()
        assert message["type"] == "error", message
        error: str = message["error"]
        return error

    assert (await error_for("{not json")).startswith("not JSON")
    assert await error_for("[1, 2]") == "expected a JSON object, not list"
    assert await error_for('{"type": "shout"}') == "unknown type 'shout'"
    assert await error_for('{"type": "chat", "room": "lobby", "text": 5}') == (
        "chat.text: expected str"
    )
    too_long = json.dumps({"type": "join", "room": "lobby", "name": "x" * 33})
    assert await error_for(too_long) == "a name is 1 to 32 characters"
    assert "control characters" in await error_for(
        json.dumps({"type": "join", "room": "lobby", "name": "a\nb"})
    )
    assert "room name" in await error_for(json.dumps({"type": "join", "room": "a b", "name": "e"}))
    assert "join 'lobby'" in await error_for(
        json.dumps({"type": "chat", "room": "lobby", "text": "hi"})
    )
    assert "taken" in await error_for(json.dumps({"type": "join", "room": "lobby", "name": "ann"}))
    assert (await eve.join("lobby", "eve"))["type"] == "welcome"
    assert await ann.next() == {"type": "joined", "room": "lobby", "name": "eve"}
    assert "already called 'eve'" in await error_for(
        json.dumps({"type": "join", "room": "games", "name": "evil"})
    )
    # Ten errors so far; the eleventh bad message closes the connection.
    await eve.ws.send("nope")
    with pytest.raises(trio_ws.ConnectionClosed) as closed:
        await eve.ws.receive()
    assert (closed.value.code, closed.value.reason) == (1008, "too many bad messages")
    assert await ann.next() == {"type": "left", "room": "lobby", "name": "eve"}

    async def error_for_ann(**message: Any) -> str:
        await ann.send(**message)
        answer = await ann.next()
        assert answer["type"] == "error", answer
        error: str = answer["error"]
        return error

    assert "already in" in await error_for_ann(type="join", room="lobby", name="ann")
    assert "chat.text: required field missing" in await error_for_ann(type="chat", room="lobby")
    assert "some 'text'" in await error_for_ann(type="chat", room="lobby", text=" ")
    assert "at most 2000" in await error_for_ann(type="chat", room="lobby", text="x" * 2001)
    assert "not in" in await error_for_ann(type="leave", room="games")
    for i in range(chat.MAX_ROOMS - 1):
        assert (await ann.join(f"room{i}", "ann"))["type"] == "welcome"
    assert "at most 10 rooms" in await error_for_ann(type="join", room="one-more", name="ann")

    # An oversized message is refused by the connection itself (1009).
    big = await User.connect(nursery, server)
    await big.ws.send("x" * (chat.MAX_MESSAGE_BYTES + 1))
    with pytest.raises(trio_ws.ConnectionClosed) as too_big:
        await big.ws.receive()
    assert too_big.value.code == 1009

    # The server is unharmed.
    await ann.send(type="chat", room="lobby", text="still here")
    assert (await ann.next())["text"] == "still here"


async def serve_rooms(nursery: trio.Nursery, hub: trio_ws.Hub) -> trio_ws.Server:
    """The chat's handler on a hub of the test's own."""
    server: trio_ws.Server = await nursery.start(
        trio_ws.serve, chat.ChatRooms(hub).handler, "127.0.0.1", 0
    )
    return server


async def test_without_an_answer_from_redis_the_names_are_this_process(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(room: str) -> tuple[trio_ws.ClusterMember, ...]:
        raise trio_ws.BackplaneError("Redis did not answer within 1 s")

    async with trio_ws.open_hub() as hub, trio.open_nursery() as nursery:
        monkeypatch.setattr(hub, "cluster_members", unreachable)
        server = await serve_rooms(nursery, hub)
        ann, bob = await User.connect(nursery, server), await User.connect(nursery, server)
        assert (await ann.join("lobby", "ann"))["members"] == ["ann"]
        taken = await bob.join("lobby", "ann")
        assert taken == {"type": "error", "error": "the name 'ann' is taken in 'lobby'"}
        assert (await bob.join("lobby", "bob"))["members"] == ["ann", "bob"]
        nursery.cancel_scope.cancel()
    warnings = [r.getMessage() for r in caplog.records if "Redis" in r.getMessage()]
    assert {r.name for r in caplog.records if "Redis" in r.getMessage()} == {"trio_ws"}
    said = (
        "no answer from Redis (Redis did not answer within 1 s): "
        "names in 'lobby' are this process's"
    )
    assert warnings == [said] * 3


async def test_one_name_once_per_room_while_redis_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two users of one process ask for the same name at once: while the
    member list comes from Redis, neither is in the room yet; the one who
    asked second is refused all the same."""
    async with trio_ws.open_hub() as hub, trio.open_nursery() as nursery:
        local_members = hub.cluster_members

        async def slow(room: str) -> tuple[trio_ws.ClusterMember, ...]:
            members = await local_members(room)
            await trio.sleep(0.1)  # a round trip to Redis
            return members

        monkeypatch.setattr(hub, "cluster_members", slow)
        server = await serve_rooms(nursery, hub)
        ann, twin = await User.connect(nursery, server), await User.connect(nursery, server)
        await ann.send(type="join", room="lobby", name="ann")
        await twin.send(type="join", room="lobby", name="ann")
        answers = sorted([(await ann.next())["type"], (await twin.next())["type"]])
        assert answers == ["error", "welcome"]
        assert [member.metadata["name"] for member in hub.members("lobby")] == ["ann"]
        nursery.cancel_scope.cancel()


def test_parse_checks_every_field() -> None:
    assert chat.parse('{"type": "leave", "room": "r-1_x"}') == chat.Leave("r-1_x")
    assert chat.parse('{"type": "join", "room": "été", "name": " ann "}') == chat.Join(
        "été", "ann"
    )
    for raw in (
        '{"type": "leave"}',
        '{"type": "leave", "room": 3}',
        '{"room": "x"}',
        '{"type": "leave", "room": "x", "extra": 1}',
        "null",
    ):
        with pytest.raises(chat.BadMessage):
            chat.parse(raw)


async def test_page_metrics_and_origins_over_http(nursery: trio.Nursery) -> None:
    server = await start_chat(nursery)
    port = server.port
    page = await http_exchange(port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head, _, body = page.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/html; charset=utf-8" in head
    assert body == (DEMO / "index.html").read_bytes()
    assert b"<script src" not in body  # one page, nothing loaded from elsewhere
    assert b"http" not in body.split(b"<script>")[1].replace(b"https:", b"")
    missing = await http_exchange(port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert missing.startswith(b"HTTP/1.1 404 ")

    own = {"Origin": f"http://127.0.0.1:{port}"}
    async with trio_ws.connect(f"ws://127.0.0.1:{port}/", headers=own) as ws:
        await ws.send_json({"type": "join", "room": "lobby", "name": "page"})
        assert (await ws.receive_json())["type"] == "welcome"
        with pytest.raises(trio_ws.ConnectionRejected) as foreign:
            await trio_ws.start_connection(
                nursery, f"ws://127.0.0.1:{port}/", headers={"Origin": "https://evil.example"}
            )
        assert foreign.value.status_code == 403

        if importlib.util.find_spec("prometheus_client") is not None:
            metrics = await http_exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert metrics.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"trio_ws_hub_connections 1.0" in metrics
            # The Origin check is the chat's own process_request: a "rejected".
            assert b'trio_ws_server_rejected_total{reason="rejected"} 1.0' in metrics


def test_without_prometheus_client_there_is_no_metrics_page(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    assert chat.metrics_for(trio_ws.open_hub()) is None


# -- the terminal client -----------------------------------------------------------


async def test_terminal_client_in_process(nursery: trio.Nursery) -> None:
    server = await start_chat(nursery)
    url = f"ws://127.0.0.1:{server.port}/"
    bob = await User.connect(nursery, server)
    await bob.join("lobby", "bob")
    lines: queue.Queue[str] = queue.Queue()

    class Output:
        def __init__(self) -> None:
            self.text = ""

        def write(self, text: str) -> int:
            self.text += text
            return len(text)

        def flush(self) -> None:
            pass

    out = Output()
    done = trio.Event()

    async def run_client() -> None:
        await client_module.chat(url, "zed", "lobby", lines.get, out)
        done.set()

    nursery.start_soon(run_client)
    assert await bob.next() == {"type": "joined", "room": "lobby", "name": "zed"}
    lines.put("hello from the terminal\n")
    assert (await bob.next())["text"] == "hello from the terminal"
    await bob.send(type="chat", room="lobby", text="hi zed")
    assert (await bob.next())["text"] == "hi zed"
    # Unknown commands, and commands without their room, are answered
    # locally: nothing is sent. "//" sends a message that starts with "/".
    lines.put("/shrug\n")
    lines.put("/join\n")
    lines.put("//shrug\n")
    assert (await bob.next())["text"] == "/shrug"
    lines.put("/join games\n")
    lines.put("/leave lobby\n")
    assert await bob.next() == {"type": "left", "room": "lobby", "name": "zed"}
    lines.put("in games\n")
    lines.put("/quit\n")
    with trio.fail_after(5):
        await done.wait()
    shown = out.text.splitlines()
    assert shown[0] == "* you joined #lobby as zed; here: bob, zed"
    assert "[#lobby] zed: hello from the terminal" in shown
    assert "[#lobby] bob: hi zed" in shown
    assert f"! unknown command /shrug; commands: {client_module.COMMANDS}" in shown
    assert "! /join needs a room: /join ROOM" in shown
    assert "[#lobby] zed: /shrug" in shown
    assert "* you joined #games as zed; here: zed" in shown
    assert "* zed left #lobby" in shown
    assert "[#games] zed: in games" in shown
    assert shown[-1] == "closed: we closed the connection with 1000 (normal closure)"


def test_describe_every_kind_of_message() -> None:
    describe = client_module.describe
    assert describe({"type": "error", "error": "nope"}) == "! nope"
    assert describe({"type": "left", "room": "r", "name": "n"}) == "* n left #r"
    assert describe({"type": "other"}) == "? {'type': 'other'}"


async def test_terminal_client_cannot_connect() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        url = f"ws://127.0.0.1:{port}/"
        with pytest.raises(trio_ws.ConnectFailed):
            await client_module.chat(url, "x", "lobby", lambda: "", sys.stdout)


# -- the command line --------------------------------------------------------------


def start_program(*args: str, cwd: Path) -> Background:
    """``python -m trio_ws ARGS`` in the background: lines in, lines out."""
    return Background([sys.executable, "-m", "trio_ws", *args], stdin=True, cwd=cwd)


def test_chat_and_chat_client_from_the_command_line(tmp_path: Path) -> None:
    """From a directory that is not the checkout: the demo is in the package.
    The command the server prints to join from a terminal works as printed."""
    programs: list[Background] = []
    try:
        server = start_program("chat", "--port", "0", cwd=tmp_path)
        programs.append(server)
        match = re.fullmatch(
            r"chat server on http://127\.0\.0\.1:(\d+)/ \(Ctrl-C to stop\)\n", server.readline()
        )
        assert match
        url = f"ws://127.0.0.1:{match[1]}/"
        assert server.readline() == "open that page in a browser, or join from a terminal:\n"
        join = trio_ws_command("chat-client", url, "--name", "YOUR_NAME")
        assert server.readline() == f"  {join}\n"
        assert " python " not in f" {join} "  # never a bare python: the venv may not be active

        # The printed command, as a shell would run it, from yet another directory.
        argv = shlex.split(join.replace("YOUR_NAME", "bob"))
        bob = Background(argv, stdin=True, cwd=Path("/"))
        programs.append(bob)
        assert bob.readline() == "* you joined #lobby as bob; here: bob\n"
        zed = start_program("chat-client", url, "--name", "zed", "--room", "lobby", cwd=tmp_path)
        programs.append(zed)
        assert zed.readline() == "* you joined #lobby as zed; here: bob, zed\n"
        assert bob.readline() == "* zed joined #lobby\n"
        zed.write("hello from zed\n")
        assert zed.readline() == "[#lobby] zed: hello from zed\n"
        assert bob.readline() == "[#lobby] zed: hello from zed\n"
        status, out, err = zed.wait()  # end of input: zed leaves
        assert (status, out, err) == (
            0,
            "closed: we closed the connection with 1000 (normal closure)\n",
            "",
        )
        assert bob.readline() == "* zed left #lobby\n"

        server.proc.send_signal(signal.SIGINT)  # Ctrl-C
        status, out, err = server.wait()
        assert (status, out, err) == (0, "stopped\n", "")
        # The server's shutdown closed bob's connection with 1001.
        status, out, err = bob.wait()
        assert status == 0, err
        assert (
            out
            == "closed: peer closed the connection with 1001 (going away) 'server shutting down'\n"
        )
    finally:
        for program in programs:
            program.kill()


def test_main_dispatches_chat_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    from trio_ws import _cli

    assert _cli.chat_module("server") is chat
    assert _cli.chat_module("client") is client_module
    calls: list[tuple[str, tuple[object, ...]]] = []

    class Fake:
        def __init__(self, name: str) -> None:
            self.name = name
            self.main = self

        def run(self, argv: list[str]) -> int:
            calls.append((self.name, tuple(argv)))
            return 0

    monkeypatch.setattr(_cli, "chat_module", Fake)
    monkeypatch.setattr(_cli.trio, "run", lambda fn, *args: calls.append((fn.name, args)))
    assert _cli.main(["chat", "--port", "0"]) == 0
    assert _cli.main(["chat-client", "ws://h:1/", "--name", "ann"]) == 0
    assert calls == [
        ("server", ("--host", "127.0.0.1", "--port", "0")),
        ("client", ("ws://h:1/", "ann", "lobby")),
    ]


def test_the_page_is_read_as_package_data() -> None:
    assert chat.PAGE.read_bytes() == (DEMO / "index.html").read_bytes()
    assert not (ROOT / "examples" / "chat" / "index.html").exists()  # one copy


@pytest.mark.slow
def test_the_wheel_holds_the_demo(tmp_path: Path) -> None:
    """A wheel built from the checkout holds the chat demo's modules and page,
    and the trio-ws script. (The nox packaging session installs the wheel in
    a fresh virtual environment and runs it.)"""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("trio_ws-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        [entry_points] = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
        page = archive.read("trio_ws/demo/chat/index.html")
    for path in (DEMO.parent.parent / "_cli.py", *DEMO.parent.rglob("*.py")):
        assert path.relative_to(ROOT).as_posix() in names
    assert page == (DEMO / "index.html").read_bytes()
    assert "trio-ws = trio_ws._cli:main" in scripts


def tutorial_program() -> str:
    """The complete program at the top of docs/chat.md."""
    text = (ROOT / "docs" / "chat.md").read_text(encoding="utf-8")
    [program] = [
        body
        for body in re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
        if "trio.run(" in body
    ]
    return program


def test_the_tutorial_program_fails_clearly_when_the_server_cannot_start(
    tmp_path: Path,
) -> None:
    """docs/chat.md's program runs in test_docs.py; here its server cannot
    start (a port out of range), and the program says so instead of
    waiting for a banner that never comes."""
    program = tutorial_program()
    assert '"--port", "0"' in program
    script = tmp_path / "program.py"
    script.write_text(program.replace('"--port", "0"', '"--port", "99999"'), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )
    assert done.returncode == 1
    assert "python -m trio_ws chat: error: argument --port: a port is 0 to 65535" in done.stderr
    assert "the chat server exited without printing its address" in done.stderr


# -- a real browser ----------------------------------------------------------------


def browser_or_skip() -> Any:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    return pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )


@pytest.mark.slow
async def test_the_page_in_a_headless_browser(nursery: trio.Nursery) -> None:
    sync_api = browser_or_skip()
    server = await start_chat(nursery)
    page_url = f"http://127.0.0.1:{server.port}/"
    bob = await User.connect(nursery, server)
    await bob.join("lobby", "bob")

    async def bob_says(text: str) -> None:
        await bob.send(type="chat", room="lobby", text=text)

    def in_the_browser() -> str:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            try:
                page = browser.new_page()
                page.set_default_timeout(15_000)
                page.goto(page_url)
                page.wait_for_selector("#status:has-text('connected')")
                page.fill("#name", "ann")
                page.click("#join")
                page.wait_for_selector("#log li:has-text('you joined #lobby as ann')")
                assert page.inner_text("#members").split() == ["bob", "ann"]
                page.fill("#text", "hello from the browser")
                page.press("#text", "Enter")
                page.wait_for_selector("#log li:has-text('hello from the browser')")
                trio.from_thread.run(bob_says, "hello from python")
                page.wait_for_selector("#log li:has-text('hello from python')")
                text: str = page.inner_text("#log")
                return text
            finally:
                browser.close()

    log = await trio.to_thread.run_sync(in_the_browser)
    assert log.splitlines() == [
        "you joined #lobby as ann",
        "[#lobby] ann: hello from the browser",
        "[#lobby] bob: hello from python",
    ]
    assert await bob.next() == {"type": "joined", "room": "lobby", "name": "ann"}
    assert (await bob.next())["text"] == "hello from the browser"
    assert (await bob.next())["text"] == "hello from python"
    # The page closed with the browser: ann left.
    assert await bob.next() == {"type": "left", "room": "lobby", "name": "ann"}


# -- the tutorial quotes the source ------------------------------------------------


def test_code_quoted_in_the_tutorial_is_the_real_code() -> None:
    """docs/chat.md walks through trio_ws/demo/chat/ in excerpts: every python
    block there that is not a complete program must appear verbatim in the
    demo's source."""
    text = (ROOT / "docs" / "chat.md").read_text(encoding="utf-8")
    source = "\n".join(
        path.read_text(encoding="utf-8")
        for path in sorted(DEMO.iterdir())
        if path.suffix in (".py", ".html")
    )
    excerpts = [
        body
        for info, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
        if info in ("python", "html", "javascript") and "trio.run(" not in body
    ]
    assert excerpts
    for excerpt in excerpts:
        assert excerpt in source, f"not in trio_ws/demo/chat/:\n{excerpt}"
