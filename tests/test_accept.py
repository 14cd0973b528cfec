"""Accepting connections: max_connections under concurrent handshakes, and
accept() failing for lack of file descriptors."""

from __future__ import annotations

import errno
import logging
import os
import re
import resource
import socket
import struct
from collections import Counter
from collections.abc import Callable

import pytest
import trio
import trio.testing
from conftest import start_server, url_of
from server_helpers import http_exchange, upgrade_then_close

import trio_ws

UPGRADE = (
    b"GET /%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def upgrade(path: str = "") -> bytes:
    return UPGRADE.replace(b"%s", path.encode())


class Crowd:
    """``size`` trio_ws clients connecting at once. ``statuses`` counts the
    answers (101 for an open connection); ``answered`` is set once all have
    one. Open clients stay open until ``leave`` is set."""

    def __init__(self, url: str, size: int, on_answer: Callable[[], None] = lambda: None) -> None:
        self.url = url
        self.size = size
        self.statuses: Counter[int] = Counter()
        self.answered = trio.Event()
        self.leave = trio.Event()
        self._on_answer = on_answer

    def start(self, nursery: trio.Nursery) -> None:
        for _ in range(self.size):
            nursery.start_soon(self._client)

    def _got(self, status: int) -> None:
        self.statuses[status] += 1
        self._on_answer()
        if self.statuses.total() == self.size:
            self.answered.set()

    async def _client(self) -> None:
        try:
            async with trio_ws.connect(self.url):
                self._got(101)
                await self.leave.wait()
        except trio_ws.ConnectionRejected as exc:
            self._got(exc.status_code)


# -- max_connections under concurrent handshakes -------------------------------

MAX = 50
CLIENTS = 120


async def _status_of(client: trio.socket.SocketType) -> int:
    """The status code of the answer the server sends on ``client``."""
    head = b""
    while b"\r\n" not in head:
        data = await client.recv(65536)
        assert data, "closed without an answer"
        head += data
    return int(head.split()[1])


async def test_concurrent_upgrades_never_exceed_max_connections(nursery: trio.Nursery) -> None:
    release = trio.Event()

    async def hold(ws: trio_ws.WebSocket) -> None:
        await release.wait()

    server = await start_server(nursery, hold, max_connections=MAX)
    plain = [socket.socket() for _ in range(CLIENTS)]
    clients = [trio.socket.from_stdlib_socket(sock) for sock in plain]
    try:
        for client in clients:
            await client.connect(("127.0.0.1", server.port))
        await trio.testing.wait_all_tasks_blocked()  # all accepted, awaiting their request
        for sock in plain:
            sock.send(upgrade())  # all at once: no checkpoint in between
        statuses = Counter([await _status_of(client) for client in clients])
        assert statuses == {101: MAX, 503: CLIENTS - MAX}
        stats = server.stats()
        assert stats.open_connections == len(server.connections) == MAX
        assert stats.rejected == {"capacity": CLIENTS - MAX}
    finally:
        release.set()
        for client in clients:
            client.close()


async def test_slots_are_reserved_before_a_slow_process_request(nursery: trio.Nursery) -> None:
    # Every upgrade that passes the capacity check waits in process_request
    # until all clients have either got there or been refused: on a server
    # that counted only open connections, all of them would get in.
    gate = trio.Event()
    deciding = 0
    open_at_gate: list[int] = []

    def check_gate() -> None:
        if deciding + crowd.statuses.total() == CLIENTS:
            open_at_gate.append(server.stats().open_connections)
            gate.set()

    async def process_request(request: trio_ws.Request) -> None:
        nonlocal deciding
        deciding += 1
        check_gate()
        await gate.wait()

    async def hold(ws: trio_ws.WebSocket) -> None:
        await ws.wait_closed()

    server = await start_server(
        nursery, hold, max_connections=MAX, process_request=process_request
    )
    crowd = Crowd(url_of(server), CLIENTS, check_gate)
    async with trio.open_nursery() as clients:
        crowd.start(clients)
        await crowd.answered.wait()
        assert deciding == MAX
        assert open_at_gate == [0]  # handshakes holding a slot are not open connections
        assert crowd.statuses == {101: MAX, 503: CLIENTS - MAX}
        assert server.stats().rejected == {"capacity": CLIENTS - MAX}
        assert len(server.connections) == MAX
        crowd.leave.set()


async def test_failed_handshakes_release_their_slots(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    entered = trio.Event()
    gate = trio.Event()

    async def process_request(request: trio_ws.Request) -> trio_ws.Response | None:
        if request.path == "/refuse":
            return trio_ws.Response(401, [], b"no")
        if request.path == "/raise":
            raise RuntimeError("process_request bug")
        if request.path == "/hang":
            await trio.sleep_forever()  # until open_timeout
        if request.path == "/gate":
            entered.set()
            await gate.wait()
        return None

    async def hold(ws: trio_ws.WebSocket) -> None:
        await ws.wait_closed()

    server = await start_server(
        nursery, hold, max_connections=2, open_timeout=1, process_request=process_request
    )
    for _ in range(2):
        assert (await http_exchange(server.port, upgrade("refuse"))).startswith(b"HTTP/1.1 401 ")
        assert (await http_exchange(server.port, upgrade("raise"))).startswith(b"HTTP/1.1 500 ")
        assert await http_exchange(server.port, upgrade("hang")) == b""
        # A client that resets the connection while process_request decides.
        entered, gate = trio.Event(), trio.Event()
        leaver = await trio.open_tcp_stream("127.0.0.1", server.port)
        await leaver.send_all(upgrade("gate"))
        await entered.wait()
        leaver.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await leaver.aclose()
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
    assert server.stats().rejected == {"rejected": 4, "handshake_failed": 4}
    # Every slot is free again: max_connections clients fit, one more does not.
    crowd = Crowd(url_of(server), 3)
    async with trio.open_nursery() as clients:
        crowd.start(clients)
        await crowd.answered.wait()
        assert crowd.statuses == {101: 2, 503: 1}
        crowd.leave.set()


# -- accept() failing for lack of resources ------------------------------------


class _Notify(logging.Handler):
    """Sets ``event`` on the first record of at least ``level``."""

    def __init__(self, level: int, event: trio.Event) -> None:
        super().__init__(level)
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        self.event.set()


def _use_up_fds() -> list[int]:
    """Open /dev/null until the process has no descriptor left."""
    taken: list[int] = []
    try:
        while True:
            taken.append(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        if exc.errno != errno.EMFILE:
            raise
    return taken


def _assert_quiet_recovery(caplog: pytest.LogCaptureFixture) -> list[str]:
    """No errors, no tracebacks, one INFO line for the recovery; the warnings."""
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if r.exc_info]
    assert "Traceback" not in caplog.text
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if m.startswith("accepting connections again")]) == 1
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
async def test_out_of_file_descriptors_waits_quietly_and_recovers(
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = await start_server(nursery)
    warned = trio.Event()
    notify = _Notify(logging.WARNING, warned)
    logging.getLogger("trio_ws").addHandler(notify)
    # The clients' sockets exist before the process runs out of descriptors.
    clients = [trio.socket.socket() for _ in range(3)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    taken: list[int] = []
    with caplog.at_level(logging.INFO, logger="trio_ws"):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, highest + 32), hard))
            taken = _use_up_fds()
            for client in clients:
                await client.connect(("127.0.0.1", server.port))
                await client.send(upgrade())
            with trio.fail_after(5):
                await warned.wait()
            await trio.sleep(3)  # virtual time: several more failed accepts
        finally:
            for fd in taken:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            logging.getLogger("trio_ws").removeHandler(notify)
        for client in clients:
            with client:
                await upgrade_then_close(client.recv, client.send)
        async with trio_ws.connect(url_of(server)) as ws:
            await ws.send("served")
            assert await ws.receive() == "served"
    warnings = _assert_quiet_recovery(caplog)
    assert len(warnings) == 1
    assert "EMFILE" in warnings[0]


async def test_accept_failures_are_logged_once_per_period(
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_accept = trio.SocketListener.accept
    failing = True

    async def accept(self: trio.SocketListener) -> trio.SocketStream:
        if failing:
            await trio.lowlevel.checkpoint()
            raise OSError(errno.ENFILE, os.strerror(errno.ENFILE))
        return await real_accept(self)

    monkeypatch.setattr(trio.SocketListener, "accept", accept)
    with caplog.at_level(logging.INFO, logger="trio_ws"):
        server = await start_server(nursery)
        await trio.sleep(35)  # virtual time: accept() fails about once a second
        failing = False
        async with trio_ws.connect(url_of(server)) as ws:
            await ws.send("served")
            assert await ws.receive() == "served"
    warnings = _assert_quiet_recovery(caplog)
    # One when it started, then one per 10 s with the count of failures.
    assert len(warnings) == 4
    assert warnings[0].startswith("accept() failed with ENFILE")
    for line in warnings[1:]:
        found = re.fullmatch(
            r"accept\(\) still failing with ENFILE \(.*\): (\d+) failed accepts in the last 1\d s",
            line,
        )
        assert found, line
        assert 10 <= int(found[1]) <= 14
