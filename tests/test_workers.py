"""Worker processes (trio_ws._cluster.workers, the supervisor, and
trio_ws._cluster.worker, the worker's side): a supervisor and N worker
processes serving one port, over real processes and sockets. The workers are
the chat demo (``python -m trio_ws chat``), which tells in the ``X-Worker-Pid``
header of its 101 response which process took a connection."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from processes import Background
from redis_server import RedisServer

import trio_ws
from trio_ws import _cli
from trio_ws._cluster import worker as worker_module
from trio_ws._cluster import workers as workers_module
from trio_ws.demo.command_line import trio_ws_command

ROOT = Path(__file__).resolve().parent.parent
#: A worker: the chat demo, without Redis (each worker has rooms of its own).
CHAT_WORKER = [sys.executable, "-m", "trio_ws", "chat"]
#: Seconds any wait of these tests may take.
DEADLINE = 15
#: Restarts without the default waits, so that the tests are quick.
QUICK = trio_ws.Backoff(initial=0.01, max_delay=0.05)


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until it holds; fail after DEADLINE seconds. (What
    it watches, other processes, has no Trio event to wait for.)"""
    with trio.fail_after(DEADLINE):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.01)


async def pid_behind(port: int) -> int:
    """Connect once, return the pid of the worker that took the connection."""
    async with trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
        assert ws.response is not None
        return int(ws.response.headers["X-Worker-Pid"])


async def connect_until_seen(
    nursery: trio.Nursery, port: int, pids: set[int]
) -> dict[int, list[trio_ws.WebSocket]]:
    """Open connections, kept open, until every one of ``pids`` took one."""
    by_pid: dict[int, list[trio_ws.WebSocket]] = {}
    with trio.fail_after(DEADLINE):
        while not pids <= by_pid.keys():
            ws = await trio_ws.start_connection(nursery, f"ws://127.0.0.1:{port}/")
            assert ws.response is not None
            by_pid.setdefault(int(ws.response.headers["X-Worker-Pid"]), []).append(ws)
    assert by_pid.keys() == pids
    return by_pid


def gone(pid: int) -> bool:
    """True once process ``pid`` has exited (a zombie nobody reaped counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:  # no /proc
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


# -- in this process: open_workers ---------------------------------------------------


@pytest.mark.parametrize("share", ["reuse_port", "inherit"])
async def test_two_workers_serve_one_port(share: workers_module.Share) -> None:
    async with trio_ws.open_workers(
        CHAT_WORKER, workers=2, host="127.0.0.1", port=0, share=share
    ) as group:
        assert group.share == share
        assert group.count == 2
        pids = group.pids
        assert sorted(pids) == [0, 1]
        assert len(set(pids.values())) == 2
        assert os.getpid() not in pids.values()
        seen: set[int] = set()
        with trio.fail_after(DEADLINE):
            while seen != set(pids.values()):
                seen.add(await pid_behind(group.port))
    # Leaving the block stopped both.
    assert all(gone(pid) for pid in pids.values())


async def test_a_killed_worker_is_restarted_and_its_clients_reconnect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_ws")
    async with trio_ws.open_workers(
        CHAT_WORKER, workers=2, host="127.0.0.1", port=0, backoff=QUICK
    ) as group:
        url = f"ws://127.0.0.1:{group.port}/"
        first = dict(group.pids)
        async with trio_ws.reconnect(url, backoff=QUICK) as connections:
            turn, victim = 0, 0
            async for ws in connections:
                assert ws.response is not None
                pid = int(ws.response.headers["X-Worker-Pid"])
                turn += 1
                if turn == 2:
                    # The client is back, on the worker that was not killed.
                    assert pid != victim
                    await ws.send_json({"type": "join", "room": "lobby", "name": "ann"})
                    assert (await ws.receive_json())["type"] == "welcome"
                    break
                victim = pid
                os.kill(victim, signal.SIGKILL)
                with pytest.raises(trio_ws.ConnectionClosed) as closed:
                    with trio.fail_after(DEADLINE):
                        await ws.receive()
                assert closed.value.code == trio_ws.CloseCode.ABNORMAL_CLOSURE
        index = next(i for i, pid in first.items() if pid == victim)
        # The supervisor starts a new worker in its place, which serves the port.
        await until(lambda: group.pids.get(index) not in (None, victim))
        replacement = group.pids[index]
        assert group.pids == {**first, index: replacement}
        assert group.restarts == 1
        seen: set[int] = set()
        with trio.fail_after(DEADLINE):
            while replacement not in seen:
                seen.add(await pid_behind(group.port))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        f"worker {index} (pid {victim}) exited unexpectedly (killed by SIGKILL)" in message
        for message in warnings
    ), warnings


async def test_a_worker_that_keeps_exiting_is_a_crash_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    crashing = [sys.executable, "-c", "raise SystemExit(3)"]
    with pytest.raises(trio_ws.WorkerCrashLoop) as crash:
        async with trio_ws.open_workers(
            crashing, workers=2, host="127.0.0.1", port=0, backoff=QUICK, max_restarts=2
        ):
            pytest.fail("the workers never served")
    assert str(crash.value) == (
        f"worker {crash.value.index} exited 3 times within 60 s (the last time: exit status 3, "
        "before it was serving); gave up and stopped every worker"
    )
    assert crash.value.exits == 3
    restarts = [
        r for r in caplog.records if "exited unexpectedly (exit status 3" in r.getMessage()
    ]
    assert len(restarts) >= 2


async def test_a_worker_that_never_serves_is_stopped() -> None:
    silent = [sys.executable, "-c", "import time; time.sleep(60)"]
    with trio.fail_after(DEADLINE):
        with pytest.raises(trio_ws.WorkerCrashLoop, match=r"not serving within 0\.5 s"):
            async with trio_ws.open_workers(
                silent, workers=1, host="127.0.0.1", port=0, ready_timeout=0.5, max_restarts=0
            ):
                pass  # pragma: no cover


@pytest.mark.parametrize("share", ["reuse_port", "inherit"])
async def test_a_port_in_use_is_an_error_before_any_worker_starts(
    share: workers_module.Share,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="in use"):
            async with trio_ws.open_workers(
                CHAT_WORKER, workers=2, host="127.0.0.1", port=port, share=share
            ):
                pass  # pragma: no cover


async def test_open_workers_checks_its_arguments() -> None:
    bad: list[tuple[dict[str, object], type[Exception]]] = [
        ({"workers": 0}, ValueError),
        ({"share": "fork"}, ValueError),
        ({"max_restarts": -1}, ValueError),
        ({"stop_timeout": 0}, ValueError),
        ({"command": []}, TypeError),
    ]
    for change, error in bad:
        arguments: dict[str, object] = {
            "command": CHAT_WORKER,
            "workers": 1,
            "host": "127.0.0.1",
            "port": 0,
            **change,
        }
        with pytest.raises(error):
            async with trio_ws.open_workers(**arguments):  # type: ignore[arg-type]
                pass  # pragma: no cover


def test_current_worker_reads_and_removes_its_description(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_module, "_current", None)
    monkeypatch.delenv(worker_module.ENV_VAR, raising=False)
    assert trio_ws.current_worker() is None
    described = {"index": 1, "host": "127.0.0.1", "port": 8765, "fds": [5], "lifeline": 7}
    # What the supervisor writes is what the worker reads.
    assert json.loads(worker_module.describe(1, "127.0.0.1", 8765, [5], 7)) == described
    monkeypatch.setenv(worker_module.ENV_VAR, json.dumps(described))
    worker = trio_ws.current_worker()
    assert worker is not None
    assert (worker.index, worker.host, worker.port, worker.fds, worker.lifeline) == (
        1,
        "127.0.0.1",
        8765,
        (5,),
        7,
    )
    assert worker_module.ENV_VAR not in os.environ  # not for its own children
    assert trio_ws.current_worker() is worker
    monkeypatch.setattr(worker_module, "_current", None)
    monkeypatch.setenv(worker_module.ENV_VAR, "{")
    with pytest.raises(RuntimeError, match="malformed TRIO_WS_WORKER"):
        trio_ws.current_worker()


# -- the supervisor as a program: run_workers ---------------------------------------

SUPERVISOR = f"""
import sys
import trio_ws

def ready(group):
    print(group.port, *sorted(group.pids.values()), flush=True)

trio_ws.run_workers({CHAT_WORKER!r}, workers=2, host="127.0.0.1", port=0, on_ready=ready)
print("stopped", flush=True)
"""


def finish(supervisor: Background, pids: set[int]) -> None:
    """Whatever happened: no supervisor, no workers left, no pipes open."""
    for pid in pids:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)
    supervisor.kill()
    supervisor.proc.communicate(timeout=DEADLINE)


def start_supervisor() -> tuple[Background, int, set[int]]:
    """The supervisor program with two chat workers: (program, port, worker pids)."""
    supervisor = Background([sys.executable, "-c", SUPERVISOR], cwd=ROOT)
    port, *pids = (int(word) for word in supervisor.readline().split())
    assert len(set(pids)) == 2
    return supervisor, port, set(pids)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_stopping_the_supervisor_closes_every_connection_with_1001(
    nursery: trio.Nursery, signum: signal.Signals
) -> None:
    supervisor, port, pids = start_supervisor()
    try:
        by_pid = await connect_until_seen(nursery, port, pids)
        supervisor.proc.send_signal(signum)
        for connections in by_pid.values():
            for ws in connections:
                with trio.fail_after(DEADLINE):
                    info = await ws.wait_closed()
                assert (info.code, info.reason, info.by_peer) == (
                    1001,
                    "server shutting down",
                    True,
                )
        status, out, err = supervisor.wait()
        assert (status, out) == (0, "stopped\n"), err
        assert "Traceback" not in err
        assert all(gone(pid) for pid in pids)
    finally:
        finish(supervisor, pids)


async def test_workers_stop_when_the_supervisor_is_killed(nursery: trio.Nursery) -> None:
    supervisor, port, pids = start_supervisor()
    try:
        by_pid = await connect_until_seen(nursery, port, pids)
        supervisor.proc.kill()  # SIGKILL: no chance to stop the workers itself
        # (Its output stays open as long as the workers, which share it.)
        assert supervisor.proc.wait(timeout=DEADLINE) == -signal.SIGKILL
        for connections in by_pid.values():
            for ws in connections:
                with trio.fail_after(DEADLINE):
                    info = await ws.wait_closed()
                assert info.code == 1001  # each worker saw its lifeline close
        await until(lambda: all(gone(pid) for pid in pids))
    finally:
        finish(supervisor, pids)


# -- the command line: python -m trio_ws chat --workers N --redis URL ----------------


def test_workers_without_redis_are_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trio_ws", "chat", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        "python -m trio_ws chat: error: --workers 2 needs --redis URL "
        "(without Redis, each worker would have rooms of its own)\n"
    )


def test_the_chat_command_with_workers_and_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], dict[str, object]]] = []

    def fake_run_workers(command: list[str], **arguments: object) -> None:
        calls.append((command, arguments))

    monkeypatch.setattr(_cli, "run_workers", fake_run_workers)
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: None)  # -v
    url = "redis://127.0.0.1:6379/0"
    assert _cli.main(["-v", "chat", "--workers", "3", "--redis", url, "--port", "0"]) == 0
    [(command, arguments)] = calls
    assert command == [
        sys.executable,
        *("-m", "trio_ws", "-v", "chat"),
        *("--host", "127.0.0.1", "--port", "0", "--redis", url),
    ]
    assert (arguments["workers"], arguments["host"], arguments["port"]) == (3, "127.0.0.1", 0)

    def crash_loop(command: list[str], **arguments: object) -> None:
        raise trio_ws.WorkerCrashLoop(1, 6, 60.0, "exit status 1")

    monkeypatch.setattr(_cli, "run_workers", crash_loop)
    assert _cli.main(["chat", "--workers", "2", "--redis", url]) == 1


def test_redis_alone_is_one_process_with_a_backplane(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    class Chat:
        def run(self, argv: list[str], **kwargs: str) -> int:
            calls.append(argv)
            return 0

    monkeypatch.setattr(_cli, "chat_module", lambda name: Chat())
    url = "redis://127.0.0.1:6379/0"
    assert _cli.main(["chat", "--redis", url]) == 0
    assert _cli.main(["chat", "--redis", url, "--workers", "1"]) == 0
    assert calls == [["--host", "127.0.0.1", "--port", "8765", "--redis", url]] * 2


# -- the chat demo with two workers, rooms shared through a real Redis ---------------


@pytest.mark.slow
async def test_the_chat_with_two_workers_on_redis(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    """Two clients on two workers chat in one room, each seeing the other in
    the member list and the other's name taken; a worker killed with
    SIGKILL is replaced, its member leaves the cluster presence within the
    TTL, and its client comes back on a worker that is up; SIGTERM to the
    supervisor closes everyone with 1001."""
    argv = [*CHAT_WORKER, "--workers", "2", "--redis", redis_server.url, "--port", "0"]
    chat = Background(argv, cwd=ROOT)
    pids: set[int] = set()
    try:
        banner = re.fullmatch(
            r"chat server on http://127\.0\.0\.1:(\d+)/ with 2 workers \(Ctrl-C to stop\)\n",
            chat.readline(),
        )
        assert banner
        url = f"ws://127.0.0.1:{banner[1]}/"
        assert chat.readline() == "open that page in a browser, or join from a terminal:\n"
        command = trio_ws_command("chat-client", url, "--name", "YOUR_NAME")
        assert chat.readline() == f"  {command}\n"

        async def connect_to(pid: int) -> trio_ws.WebSocket:
            """A connection that worker ``pid`` took."""
            with trio.fail_after(DEADLINE):
                while True:
                    ws = await trio_ws.start_connection(nursery, url)
                    assert ws.response is not None
                    if int(ws.response.headers["X-Worker-Pid"]) == pid:
                        return ws
                    await ws.aclose()

        def in_redis(subscribed: int) -> bool:
            """Whether ``subscribed`` workers have told Redis of their
            members in the lobby: subscribed to it, in its presence."""
            presence = redis_server.command("KEYS", "chat:pres:*:lobby")
            return redis_server.subscribers(b"chat:r:lobby") == len(presence) == subscribed

        # Two users, on two different workers.
        users: dict[int, trio_ws.WebSocket] = {}
        with trio.fail_after(DEADLINE):
            while len(users) < 2:
                ws = await trio_ws.start_connection(nursery, url)
                assert ws.response is not None
                pid = int(ws.response.headers["X-Worker-Pid"])
                if pid in users:
                    await ws.aclose()
                else:
                    users[pid] = ws
        (ann_pid, ann), (bob_pid, bob) = users.items()
        pids = {ann_pid, bob_pid}

        async def next_of(ws: trio_ws.WebSocket) -> dict[str, object]:
            with trio.fail_after(DEADLINE):
                message: dict[str, object] = await ws.receive_json()
            return message

        await ann.send_json({"type": "join", "room": "lobby", "name": "ann"})
        assert (await next_of(ann))["members"] == ["ann"]
        await until(lambda: in_redis(1))
        # Bob, on the other worker, finds Ann in the room...
        await bob.send_json({"type": "join", "room": "lobby", "name": "bob"})
        assert await next_of(bob) == {
            "type": "welcome",
            "room": "lobby",
            "you": "bob",
            "members": ["ann", "bob"],
        }
        assert await next_of(ann) == {"type": "joined", "room": "lobby", "name": "bob"}
        await until(lambda: in_redis(2))
        # ... and on Ann's worker, Bob's name is taken, and Ann's too.
        cid = await connect_to(ann_pid)
        for name in ("bob", "ann"):
            await cid.send_json({"type": "join", "room": "lobby", "name": name})
            assert await next_of(cid) == {
                "type": "error",
                "error": f"the name {name!r} is taken in 'lobby'",
            }
        await cid.aclose()
        await bob.send_json({"type": "chat", "room": "lobby", "text": "hi ann"})
        said = {"type": "message", "room": "lobby", "name": "bob", "text": "hi ann"}
        assert await next_of(ann) == said
        assert await next_of(bob) == said

        backplane = trio_ws.RedisBackplane(redis_server.url, prefix="chat")
        async with trio_ws.open_hub(backplane=backplane) as observer:
            with trio.fail_after(DEADLINE):
                while await observer.cluster_room_size("lobby") != 2:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            os.kill(ann_pid, signal.SIGKILL)
            info = await ann.wait_closed()
            assert info.code == trio_ws.CloseCode.ABNORMAL_CLOSURE
            # Ann leaves the cluster's presence within its TTL...
            with trio.fail_after(backplane.presence_ttl + 5):
                while await observer.cluster_room_size("lobby") != 1:  # noqa: ASYNC110
                    await trio.sleep(0.1)
        # ... and comes back, on a worker that is up.
        async with trio_ws.reconnect(url, backoff=QUICK) as connections:
            async for ws in connections:
                assert ws.response is not None
                pid = int(ws.response.headers["X-Worker-Pid"])
                assert pid != ann_pid
                pids.add(pid)
                await ws.send_json({"type": "join", "room": "lobby", "name": "ann"})
                assert (await next_of(ws))["type"] == "welcome"
                assert await next_of(bob) == {"type": "joined", "room": "lobby", "name": "ann"}
                break

        chat.proc.send_signal(signal.SIGTERM)
        info = await bob.wait_closed()
        assert (info.code, info.reason) == (1001, "server shutting down")
        status, out, err = chat.wait()
        assert (status, out) == (0, "stopped\n"), err
        assert f"(pid {ann_pid}) exited unexpectedly (killed by SIGKILL)" in err
        assert "Traceback" not in err
    finally:
        finish(chat, pids)


def test_an_unreachable_redis_is_one_line_of_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nothing = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    done = subprocess.run(
        [*CHAT_WORKER, "--redis", nothing, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        cwd=ROOT,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("python -m trio_ws chat: error: ")
    assert nothing in done.stderr
    assert done.stderr.count("\n") == 1


async def test_worker_serve_listens_only_where_the_supervisor_says() -> None:
    worker = trio_ws.Worker(index=0, host="127.0.0.1", port=8765, fds=(), lifeline=-1)

    async def handler(ws: trio_ws.WebSocket) -> None:
        pass  # pragma: no cover

    with pytest.raises(TypeError, match="no port="):
        await worker.serve(handler, port=9000)
