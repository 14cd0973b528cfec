"""An echo server: every message goes back to the client that sent it.

    python examples/echo_server.py                    # ws://127.0.0.1:8765/ until Ctrl-C
    python examples/echo_server.py --port 0 --once    # a free port; stop after one client
    python examples/echo_server.py --duration 10      # stop after 10 seconds

The first line printed is the URL to connect to; try it with
``python examples/echo_client.py URL`` or ``python -m trio_ws connect URL``.
Ctrl-C (or SIGTERM) stops the server cleanly: every open connection is
closed with 1001 (going away) first.
"""

from __future__ import annotations

import argparse
import functools
import math
import signal

import trio

import trio_ws


async def echo(ws: trio_ws.WebSocket) -> None:
    """Send every message back until the client closes the connection."""
    async for message in ws:
        await ws.send(message)


async def stop_on_signal(
    stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Turn Ctrl-C (SIGINT) and SIGTERM into a clean stop."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            stop.set()
            return


async def main(host: str, port: int, once: bool, duration: float) -> None:
    stop = trio.Event()

    async def handler(ws: trio_ws.WebSocket) -> None:
        print(f"connection {ws.id}: {ws.remote_address[0]} opened {ws.path}", flush=True)
        try:
            await echo(ws)
        except trio_ws.ConnectionClosed:
            pass  # closed with an error code; close_info says which
        print(f"connection {ws.id}: {ws.close_info}", flush=True)
        if once:
            stop.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(stop_on_signal, stop)
        server: trio_ws.Server = await nursery.start(
            functools.partial(trio_ws.serve, handler, host, port)
        )
        shown_host = f"[{host}]" if ":" in host else host
        print(f"listening on ws://{shown_host}:{server.port}/", flush=True)
        with trio.move_on_after(duration):
            await stop.wait()
        print("stopping", flush=True)
        # Cancelling the nursery stops the server, which closes every open
        # connection with 1001 (going away) before the nursery ends.
        nursery.cancel_scope.cancel()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--once", action="store_true", help="stop after the first client")
    parser.add_argument(
        "--duration", type=float, default=math.inf, help="stop after this many seconds"
    )
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    trio.run(main, args.host, args.port, args.once, args.duration)
