"""One cluster node for ``bench/backplane.py``: ``python bench/backplane_node.py IMPL REDIS_URL``.

Started by ``bench/backplane.py``, not by hand. IMPL is ``trio_ws`` (a hub
with a ``RedisBackplane``, prefix ``bench``) or ``socketio`` (a
python-socketio ``AsyncServer`` with an ``AsyncRedisManager``, on aiohttp).
It serves on 127.0.0.1 (a free port) and prints ``{"port": P}`` once
listening. Every connection joins the room named by its path (``/ROOM``; for
socketio the query ``?room=ROOM``) and only reads. Commands, one JSON line
each on stdin, each answered with one JSON line (marked, see control.py):

- ``{"cmd": "publish", "n": N, "size": S, "room": R, "yield_every": K}``:
  broadcast N messages of S bytes to room R as fast as a loop can (trio_ws:
  ``hub.broadcast``, giving the event loop a turn after every K messages, or
  never with K = 0; socketio: ``await sio.emit``); answers ``t0`` (before the
  first), ``t_loop`` (after the last call), ``t_done`` (when all N were
  written to Redis: trio_ws's ``stats().backplane.published``; socketio's
  emit returns after its PUBLISH) and ``cpu`` (process CPU seconds).
- ``{"cmd": "paced", "rate": R, "seconds": T, "size": S, "room": R}``: the
  same at R messages per second for T seconds, each message starting with
  ``@<time.monotonic()>|`` (taken just before its broadcast).
- ``{"cmd": "arm", "n": N}``: count the next N messages that come from
  another node and are handed to local connections; answers at once.
- ``{"cmd": "armed", "timeout": T}``: wait (up to T s) for those N; answers
  ``t_first``, ``t_last`` (``time.monotonic()`` after handing the first and
  the N-th to local connections), ``count`` and ``cpu`` (CPU seconds since arm).
- ``{"cmd": "rooms", "n": N}`` (trio_ws): put the local connections in rooms
  ``r0`` .. ``r<N-1>`` (shared out among them).
- ``{"cmd": "stats"}``: ``hub.stats().backplane`` (trio_ws) as a dict.
- ``{"cmd": "quit"}`` or end of input: quit.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from control import answer

#: Backplane settings of the trio_ws nodes (everything else: the defaults).
#: The outbox holds a whole burst: the publish rate is measured without drops.
OUTBOX = 1_000_000
#: The receive test stops a node (SIGSTOP) while the other publishes, then
#: measures how fast it drains what Redis kept for it; its probe must not take
#: that pause for a stalled link.
PROBE_TIMEOUT = 30.0


def text(size: int, stamp: float | None = None) -> str:
    head = "" if stamp is None else f"@{stamp:.9f}|"
    return head + "x" * max(0, size - len(head))


def pick_room(target: str) -> str:
    return target.lstrip("/").split("?")[0] or "bench"


class Counter:
    """Counts the messages from other nodes handed to local connections."""

    def __init__(self) -> None:
        self.target = 0
        self.count = 0
        self.t_first: float | None = None
        self.t_last: float | None = None
        self.cpu0 = 0.0
        self.done: Callable[[], None] = lambda: None

    def arm(self, n: int) -> None:
        self.target, self.count, self.t_first, self.t_last = n, 0, None, None
        self.cpu0 = time.process_time()

    def hit(self) -> None:
        self.count += 1
        if self.count == 1:
            self.t_first = time.monotonic()
        if self.count == self.target:
            self.t_last = time.monotonic()
            self.done()

    def result(self) -> dict[str, Any]:
        return {
            "t_first": self.t_first,
            "t_last": self.t_last,
            "count": self.count,
            "cpu": time.process_time() - self.cpu0,
        }


# -- trio_ws -------------------------------------------------------------------------


def run_trio_ws(url: str) -> None:
    import attrs
    import trio

    import trio_ws

    counter = Counter()

    def published(hub: trio_ws.Hub) -> int:
        stats = hub.stats().backplane
        assert stats is not None
        return stats.published

    async def commands() -> AsyncIterator[dict[str, Any]]:
        stream = trio.lowlevel.FdStream(os.dup(0))
        buffer = b""
        while True:
            while b"\n" not in buffer:
                data = await stream.receive_some()
                if not data:
                    return
                buffer += data
            line, buffer = buffer.split(b"\n", 1)
            command = json.loads(line)
            if command["cmd"] == "quit":
                return
            yield command

    async def main() -> None:
        backplane = trio_ws.RedisBackplane(
            url, prefix="bench", outbox_size=OUTBOX, probe_timeout=PROBE_TIMEOUT
        )
        async with (
            trio_ws.open_hub(backplane=backplane, max_pending=None, max_pending_bytes=None) as hub,
            trio.open_nursery() as nursery,
        ):
            # Count what the node hands to the local fan-out (Local.deliver_remote).
            deliver = hub.deliver_remote

            def counted(room: str | None, message: str | bytes, excluded: frozenset[int]) -> None:
                deliver(room, message, excluded)
                counter.hit()

            hub.deliver_remote = counted  # type: ignore[method-assign]

            async def handler(ws: trio_ws.WebSocket) -> None:
                async with hub.register(ws):
                    hub.join(ws, pick_room(ws.request.target))
                    await ws.wait_closed()

            server = await nursery.start(
                lambda task_status: trio_ws.serve(
                    handler,
                    "127.0.0.1",
                    0,
                    ping_interval=None,
                    backlog=4096,
                    task_status=task_status,
                )
            )
            answer({"port": server.port, "node": hub.node})
            done = trio.Event()

            def finished() -> None:
                done.set()

            counter.done = finished
            async for command in commands():
                cmd = command["cmd"]
                if cmd == "publish":
                    n, every = int(command["n"]), int(command.get("yield_every", 0))
                    message, room = text(int(command["size"])), command["room"]
                    base = published(hub)
                    cpu0 = time.process_time()
                    t0 = time.monotonic()
                    for i in range(n):
                        hub.broadcast(message, room=room)
                        if every and i % every == every - 1:
                            await trio.lowlevel.checkpoint()
                    t_loop = time.monotonic()
                    while published(hub) < base + n:  # noqa: ASYNC110 - a counter, no event
                        await trio.sleep(0.0005)
                    t_done = time.monotonic()
                    stats = hub.stats().backplane
                    assert stats is not None
                    answer(
                        {
                            "t0": t0,
                            "t_loop": t_loop,
                            "t_done": t_done,
                            "cpu": time.process_time() - cpu0,
                            "dropped": stats.outbox_dropped,
                        }
                    )
                elif cmd == "paced":
                    rate, size = float(command["rate"]), int(command["size"])
                    room = command["room"]
                    total = int(rate * float(command["seconds"]))
                    t0 = trio.current_time()
                    start = time.monotonic()
                    sent = 0
                    while sent < total:
                        due = min(total, int((trio.current_time() - t0) * rate) + 1)
                        while sent < due:
                            hub.broadcast(text(size, time.monotonic()), room=room)
                            sent += 1
                        if sent < total:
                            await trio.sleep_until(t0 + sent / rate)
                    answer({"sent": sent, "t0": start, "t1": time.monotonic()})
                elif cmd == "arm":
                    done = trio.Event()
                    counter.arm(int(command["n"]))
                    answer({"ok": True})
                elif cmd == "armed":
                    with trio.move_on_after(float(command["timeout"])):
                        await done.wait()
                    answer(counter.result())
                elif cmd == "rooms":
                    members = hub.members()
                    for i in range(int(command["n"])):
                        hub.join(members[i % len(members)].ws, f"r{i}")
                    answer({"rooms": len(hub.rooms)})
                elif cmd == "stats":
                    answer(attrs.asdict(hub.stats().backplane))  # type: ignore[arg-type]
                else:
                    raise ValueError(f"unknown command {command!r}")
            nursery.cancel_scope.cancel()

    trio.run(main)


# -- python-socketio ---------------------------------------------------------------


def run_socketio(url: str) -> None:
    import asyncio
    import logging
    import urllib.parse

    import socketio
    from aiohttp import web

    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    counter = Counter()

    class CountingManager(socketio.AsyncRedisManager):  # type: ignore[misc]
        """AsyncRedisManager, counting what comes from another node once it
        has been handed to the local connections."""

        async def _handle_emit(self, message: dict[str, Any]) -> None:
            await super()._handle_emit(message)
            if message.get("host_id") != self.host_id:
                counter.hit()

    async def main() -> None:
        manager = CountingManager(url, channel="bench")
        # No pings in a benchmark (the trio_ws nodes send none either).
        sio = socketio.AsyncServer(
            client_manager=manager, async_mode="aiohttp", ping_interval=3600, ping_timeout=3600
        )
        app = web.Application()
        sio.attach(app)

        @sio.event  # type: ignore[misc]
        async def connect(sid: str, environ: dict[str, Any]) -> None:
            query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
            await sio.enter_room(sid, query.get("room", ["bench"])[0])

        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        answer({"port": port, "node": manager.host_id})

        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        done = asyncio.Event()
        counter.done = done.set
        while line := await reader.readline():
            command = json.loads(line)
            cmd = command["cmd"]
            if cmd == "quit":
                break
            if cmd == "publish":
                n, message, room = int(command["n"]), text(int(command["size"])), command["room"]
                cpu0 = time.process_time()
                t0 = time.monotonic()
                for _ in range(n):
                    await sio.emit("m", message, room=room)
                t_loop = time.monotonic()
                answer(
                    {
                        "t0": t0,
                        "t_loop": t_loop,
                        "t_done": t_loop,
                        "cpu": time.process_time() - cpu0,
                        "dropped": 0,
                    }
                )
            elif cmd == "paced":
                rate, size, room = float(command["rate"]), int(command["size"]), command["room"]
                total = int(rate * float(command["seconds"]))
                t0 = loop.time()
                start = time.monotonic()
                sent = 0
                while sent < total:
                    due = min(total, int((loop.time() - t0) * rate) + 1)
                    while sent < due:
                        await sio.emit("m", text(size, time.monotonic()), room=room)
                        sent += 1
                    if sent < total:
                        await asyncio.sleep(max(0.0, t0 + sent / rate - loop.time()))
                answer({"sent": sent, "t0": start, "t1": time.monotonic()})
            elif cmd == "arm":
                done.clear()
                counter.arm(int(command["n"]))
                answer({"ok": True})
            elif cmd == "armed":
                try:
                    await asyncio.wait_for(done.wait(), float(command["timeout"]))
                except asyncio.TimeoutError:
                    pass
                answer(counter.result())
            elif cmd == "stats":
                answer({})
            else:
                raise ValueError(f"unknown command {command!r}")
        await runner.cleanup()

    asyncio.run(main())


if __name__ == "__main__":
    impl, redis_url = sys.argv[1], sys.argv[2]
    {"trio_ws": run_trio_ws, "socketio": run_socketio}[impl](redis_url)
