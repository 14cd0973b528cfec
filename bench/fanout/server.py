"""A fan-out benchmark server: ``python bench/fanout/server.py IMPL [deflate]``.

Started by ``bench/fanout.py``, not by hand. IMPL is ``trio_ws`` (a hub),
``trio_ws_takeover`` (a hub whose connections keep their compression context),
``websockets_trio`` (``websockets.trio``'s ``broadcast()``) or
``websockets_asyncio`` (``websockets.asyncio``'s ``broadcast()``); every one
runs without keepalive pings, on 127.0.0.1, and without compression unless
``deflate`` is given (then each with its default permessage-deflate settings;
``trio_ws_takeover`` with ``server_no_context_takeover=False``).

It prints ``{"port": N}`` once listening, then obeys one JSON command per
line on stdin, answering each with one JSON line on stdout:

- ``{"cmd": "clients", "n": N}``: wait until N connections are open.
- ``{"cmd": "broadcast", "size": S, "count": C}``: broadcast C text messages
  of S bytes to every connection, one after the other, giving the event loop
  a turn after each (as a producer that awaits something between messages
  would); answers ``{"t0": ..., "t1": ...}``, ``time.monotonic()`` before the
  first and after the last.
- ``{"cmd": "quit"}`` or end of input: quit.
"""

from __future__ import annotations

import functools
import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

Send = Callable[[str], Awaitable[None]]


def answer(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def read_command() -> dict[str, Any] | None:
    """The next command; None at the end of input or on ``{"cmd": "quit"}``."""
    line = sys.stdin.readline()
    command: dict[str, Any] | None = json.loads(line) if line.strip() else None
    return None if command is None or command["cmd"] == "quit" else command


def message(size: int) -> str:
    return ("fan-out " * (size // 8 + 1))[:size]


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


# -- trio servers ----------------------------------------------------------------


async def obey(
    count: Callable[[], int], changed: Callable[[], Awaitable[None]], send: Send
) -> None:
    """The command loop of a trio server (``changed()`` waits for a new connection)."""
    import trio

    while (command := await trio.to_thread.run_sync(read_command)) is not None:
        if command["cmd"] == "clients":
            while count() < int(command["n"]):
                await changed()
            answer({"ok": True})
        elif command["cmd"] == "broadcast":
            text = message(int(command["size"]))
            t0 = time.monotonic()
            for _ in range(int(command["count"])):
                await send(text)
            answer({"t0": t0, "t1": time.monotonic()})


DEFLATE = sys.argv[2:] == ["deflate"]


def run_trio_ws(takeover: bool = False) -> None:
    import trio

    import trio_ws

    compression = None
    if DEFLATE:
        compression = trio_ws.Deflate(server_no_context_takeover=not takeover)

    async def main() -> None:
        arrived = trio.Event()

        async def changed() -> None:
            nonlocal arrived
            arrived = trio.Event()
            await arrived.wait()

        async with trio_ws.open_hub() as hub, trio.open_nursery() as nursery:

            async def handler(ws: trio_ws.WebSocket) -> None:
                async with hub.register(ws):
                    arrived.set()
                    await ws.wait_closed()

            async def send(text: str) -> None:
                hub.broadcast(text)
                await trio.lowlevel.checkpoint()

            server = await nursery.start(
                functools.partial(
                    trio_ws.serve,
                    handler,
                    "127.0.0.1",
                    0,
                    ping_interval=None,
                    backlog=4096,
                    compression=compression,
                )
            )
            answer({"port": server.port})
            await obey(lambda: len(hub.connections), changed, send)
            nursery.cancel_scope.cancel()

    trio.run(main)


def run_websockets_trio() -> None:
    import trio
    from websockets.trio.server import ServerConnection, broadcast, serve

    async def main() -> None:
        connections: set[ServerConnection] = set()
        arrived = trio.Event()

        async def changed() -> None:
            nonlocal arrived
            arrived = trio.Event()
            await arrived.wait()

        async def handler(ws: ServerConnection) -> None:
            connections.add(ws)
            arrived.set()
            try:
                await ws.wait_closed()
            finally:
                connections.discard(ws)

        async def send(text: str) -> None:
            await broadcast(connections, text)

        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    serve,
                    handler,
                    0,
                    host="127.0.0.1",
                    compression="deflate" if DEFLATE else None,
                    ping_interval=None,
                    backlog=4096,
                )
            )
            answer({"port": server.listeners[0].socket.getsockname()[1]})
            await obey(lambda: len(connections), changed, send)
            nursery.cancel_scope.cancel()

    trio.run(main)


# -- the asyncio server ------------------------------------------------------------


def run_asyncio() -> None:
    import asyncio

    from websockets.asyncio.server import broadcast, serve

    async def main() -> None:
        connections: set[object] = set()
        changed = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def handler(ws: object) -> None:
            connections.add(ws)
            changed.set()
            try:
                await ws.wait_closed()
            finally:
                connections.discard(ws)

        async with serve(
            handler,
            "127.0.0.1",
            0,
            compression="deflate" if DEFLATE else None,
            ping_interval=None,
            backlog=4096,
        ) as server:
            answer({"port": next(iter(server.sockets)).getsockname()[1]})
            while (command := await loop.run_in_executor(None, read_command)) is not None:
                if command["cmd"] == "clients":
                    while len(connections) < int(command["n"]):
                        changed.clear()
                        await changed.wait()
                    answer({"ok": True})
                elif command["cmd"] == "broadcast":
                    text = message(int(command["size"]))
                    t0 = time.monotonic()
                    for _ in range(int(command["count"])):
                        broadcast(connections, text)
                        await asyncio.sleep(0)
                    answer({"t0": t0, "t1": time.monotonic()})
            server.close()

    asyncio.run(main())


RUNNERS: dict[str, Callable[[], None]] = {
    "trio_ws": run_trio_ws,
    "trio_ws_takeover": functools.partial(run_trio_ws, takeover=True),
    "websockets_trio": run_websockets_trio,
    "websockets_asyncio": run_asyncio,
}


if __name__ == "__main__":
    raise_open_files_limit()
    RUNNERS[sys.argv[1]]()
