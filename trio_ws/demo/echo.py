"""An echo server (``python -m trio_ws serve``), an interactive client
(``connect URL``) and a guided tour of the library (``demo``).

Each runs until it is done or cancelled: ``python -m trio_ws`` cancels it on
Ctrl-C, which closes its connections with 1001 (going away)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TextIO

import trio

import trio_ws

__all__ = ["echo", "run_client", "run_demo", "run_server"]


async def echo(ws: trio_ws.WebSocket) -> None:
    """Send every message back to where it came from."""
    async for message in ws:
        await ws.send(message)


def _show(message: str | bytes) -> str:
    if isinstance(message, str):
        return message
    return f"<{len(message)} bytes: {message[:32].hex()}{'...' if len(message) > 32 else ''}>"


# -- serve -------------------------------------------------------------------


async def run_server(
    host: str,
    port: int,
    out: TextIO,
    *,
    task_status: trio.TaskStatus[trio_ws.Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the echo server until cancelled."""
    async with trio.open_nursery() as nursery:
        server: trio_ws.Server = await nursery.start(
            functools.partial(trio_ws.serve, echo, host, port)
        )
        shown = f"[{host}]" if ":" in host else host
        for bound in sorted(set(server.ports)):
            print(f"echo server listening on ws://{shown}:{bound}/ (Ctrl-C to stop)", file=out)
        out.flush()
        task_status.started(server)


async def run_unix_server(path: str, mode: int | None, out: TextIO) -> None:
    """Run the echo server on the Unix socket ``path`` until cancelled."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(trio_ws.serve_unix, echo, path, mode=mode))
        shown = server.unix_path
        print(f"echo server listening on {shown} (Ctrl-C to stop)", file=out, flush=True)


# -- connect -----------------------------------------------------------------


async def run_client(
    url: str,
    read_line: Callable[[], str],
    out: TextIO,
    *,
    proxy: str | bool | None = True,
    unix_path: str | None = None,
) -> None:
    """Send each line read with ``read_line`` (a blocking function, run in a
    thread) and print what arrives, until end of input (close with 1000), the
    server closes, or this is cancelled (close with 1001); then print how the
    connection closed. ``proxy`` and ``unix_path`` are connect()'s. Raises ``HandshakeError`` or
    ``InvalidURL`` if it cannot connect."""
    ws: trio_ws.WebSocket | None = None
    try:
        async with trio_ws.connect(url, proxy=proxy, unix_path=unix_path) as ws:
            print(f"connected to {url}; type messages, Ctrl-D to close", file=out, flush=True)
            async with trio.open_nursery() as nursery:

                async def printer() -> None:
                    try:
                        async for message in ws:
                            print(f"< {_show(message)}", file=out, flush=True)
                    except trio_ws.ConnectionClosed:
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(printer)
                while True:
                    line = await trio.to_thread.run_sync(read_line, abandon_on_cancel=True)
                    if not line:
                        break
                    await ws.send(line.rstrip("\n"))
                await ws.aclose(trio_ws.CloseCode.NORMAL_CLOSURE)
    except trio_ws.ConnectionClosed:
        pass  # the server closed while we were sending
    finally:
        if ws is not None:  # connected: say how it ended (cancelled too)
            print(f"closed: {ws.close_info}", file=out, flush=True)


# -- demo --------------------------------------------------------------------


async def run_demo(out: TextIO) -> None:
    """Start an echo server, talk to it, and show the main features."""

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    async with trio.open_nursery() as nursery:
        server: trio_ws.Server = await nursery.start(
            functools.partial(trio_ws.serve, echo, "127.0.0.1", 0)
        )
        url = f"ws://127.0.0.1:{server.port}/demo"
        say(f"1. echo server started: {url}")
        async with trio_ws.connect(url) as ws:
            say("2. connected: the server runs echo() for this connection, in a task of its own")
            await ws.send("hello, trio_ws")
            say(f"3. text echo: {await ws.receive()!r}")
            await ws.send(bytes(range(8)))
            say(f"4. binary echo: {await ws.receive()!r}")
            await ws.send_json({"kind": "greeting", "n": 1})
            say(f"5. JSON echo: {await ws.receive_json()!r}")
            rtt = await ws.ping()
            say(f"6. ping round trip: {rtt * 1e6:.0f} us")

            # A timeout-safe receive loop: a slow producer, a receive that
            # times out every 5 ms, and still every message, in order.
            async def slow_producer() -> None:
                for i in range(5):
                    await ws.send(f"message {i}")
                    await trio.sleep(0.02)

            received: list[str | bytes] = []
            timeouts = 0
            nursery.start_soon(slow_producer)
            while len(received) < 5:
                with trio.move_on_after(0.005) as scope:
                    received.append(await ws.receive())
                timeouts += scope.cancelled_caught
            say(f"7. receive loop with {timeouts} timeouts got every message: {received}")
        say(f"8. closed: {ws.close_info}")
        await server.aclose()
        say("9. server stopped: every connection was closed with 1001 first")
