"""How long does a server keep a connection whose peer stopped reading?

A client completes the handshake, shrinks its receive buffer and never reads
again. The server sends 64 KiB messages in a loop, so its writes soon block
on a full TCP window; its keepalive ping cannot even be written. With
ping_interval = ping_timeout = close_timeout = 1 s, trio_ws must end the
connection within about 3 s (the bound is interval + timeout + close_timeout).
This measures the real time until the server's handler is released, for
trio_ws and its peers, each given the same 1 s settings where it has them.

Run: python bench/stalled_writer.py [--limit SECONDS] [--rounds N]
"""

from __future__ import annotations

import argparse
import functools
import socket
import statistics
import time
from collections.abc import Awaitable, Callable

import trio

LIMIT = 20.0
MESSAGE = b"x" * 65536


async def stalled_client(port: int) -> trio.SocketStream:
    """Handshake, then never read again (with a tiny receive buffer)."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Request

    stream = await trio.open_tcp_stream("127.0.0.1", port)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host=f"127.0.0.1:{port}", target="/")))
    while not any(isinstance(e, AcceptConnection) for e in ws.events()):
        ws.receive_data(await stream.receive_some(65536))
    return stream


class Probe:
    """What a server handler reports: when it started sending, when it stopped."""

    def __init__(self) -> None:
        self.started_at = 0.0
        self.released = trio.Event()

    def sending(self) -> None:
        if not self.started_at:
            self.started_at = time.monotonic()


ServerFactory = Callable[[Probe, trio.Nursery], Awaitable[int]]


async def measure(start_server: ServerFactory) -> float | None:
    """Seconds from the first send until the server gives up; None if it
    still holds the connection after LIMIT seconds."""
    probe = Probe()
    result: float | None = None
    async with trio.open_nursery() as nursery:
        port = await start_server(probe, nursery)
        stream = await stalled_client(port)
        with trio.move_on_after(LIMIT):
            await probe.released.wait()
            result = time.monotonic() - probe.started_at
        await stream.aclose()
        nursery.cancel_scope.cancel()
    return result


async def trio_ws_server(probe: Probe, nursery: trio.Nursery) -> int:
    import trio_ws

    async def handler(ws: trio_ws.WebSocket) -> None:
        try:
            while True:
                probe.sending()
                await ws.send(MESSAGE)
        except trio_ws.ConnectionClosed:
            pass
        finally:
            probe.released.set()

    server = await nursery.start(
        functools.partial(
            trio_ws.serve,
            handler,
            "127.0.0.1",
            0,
            ping_interval=1,
            ping_timeout=1,
            close_timeout=1,
        )
    )
    return int(server.port)


async def websockets_trio_server(probe: Probe, nursery: trio.Nursery) -> int:
    from websockets.exceptions import ConnectionClosed
    from websockets.trio.server import serve

    async def handler(ws: object) -> None:
        try:
            while True:
                probe.sending()
                await ws.send(MESSAGE)  # type: ignore[attr-defined]
        except ConnectionClosed:
            pass
        finally:
            probe.released.set()

    server = await nursery.start(
        functools.partial(
            serve,
            handler,
            0,
            host="127.0.0.1",
            compression=None,
            ping_interval=1,
            ping_timeout=1,
            close_timeout=1,
        )
    )
    return int(server.listeners[0].socket.getsockname()[1])


async def trio_websocket_server(probe: Probe, nursery: trio.Nursery) -> int:
    import trio_websocket

    async def handler(request: object) -> None:
        ws = await request.accept()  # type: ignore[attr-defined]
        try:
            while True:
                probe.sending()
                await ws.send_message(MESSAGE)
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            probe.released.set()

    # trio-websocket has no keepalive; its closing timeout is the nearest knob.
    server = await nursery.start(
        functools.partial(
            trio_websocket.serve_websocket,
            handler,
            "127.0.0.1",
            0,
            ssl_context=None,
            disconnect_timeout=1,
        )
    )
    return int(server.port)


IMPLEMENTATIONS = {
    "trio_ws": trio_ws_server,
    "websockets.trio": websockets_trio_server,
    "trio-websocket": trio_websocket_server,
}


def main() -> None:
    global LIMIT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=LIMIT, help="give up after (s)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", help="comma-separated implementations")
    args = parser.parse_args()
    LIMIT = args.limit
    names = args.only.split(",") if args.only else list(IMPLEMENTATIONS)
    print(f"Stalled writer, 1 s keepalive settings, {args.rounds} rounds, limit {LIMIT:g} s\n")
    print("| implementation | time to release the blocked handler (median) | rounds |")
    print("|---|--:|---|")
    for name in names:
        times = [trio.run(measure, IMPLEMENTATIONS[name]) for _ in range(args.rounds)]
        done = [t for t in times if t is not None]
        shown = ", ".join("still open" if t is None else f"{t:.2f} s" for t in times)
        median = (
            f"{statistics.median(done):.2f} s"
            if len(done) == len(times)
            else (f"still open after {LIMIT:g} s")
        )
        print(f"| {name} | {median} | {shown} |")


if __name__ == "__main__":
    main()
