"""An echo server on a Unix socket, and a client for it.

    python examples/unix_socket_echo.py
    python examples/unix_socket_echo.py --serve /tmp/echo.sock --mode 660

Without ``--serve`` it starts the server on a socket in a new temporary
directory, talks to it, stops it, and shows that the socket file is gone.
With ``--serve PATH`` it serves on PATH until Ctrl-C (or SIGTERM), closing
open connections with 1001; a stale socket file left at PATH by a server
that was killed is replaced, a live one is an error. Any client that can
connect to a Unix socket reaches it, for instance nginx (docs/unix-sockets.md)
or ``trio_ws.connect("ws://localhost/", unix_path=PATH)``.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import tempfile

import trio

import trio_ws


async def echo(ws: trio_ws.WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


async def serve(path: str, mode: int | None) -> None:
    """Serve on ``path`` until SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(trio_ws.serve_unix, echo, path, mode=mode)
            )
            print(f"listening on {server.unix_path} (Ctrl-C to stop)", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    print("stopped", flush=True)


async def demo() -> None:
    path = os.path.join(tempfile.mkdtemp(prefix="trio_ws-"), "echo.sock")
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(trio_ws.serve_unix, echo, path))
        print(f"serving on {server.unix_path}")
        # The URL gives the Host header and the path; unix_path, the way there.
        async with trio_ws.connect("ws://localhost/echo", unix_path=path) as ws:
            for message in ("hello", b"\x00binary"):
                await ws.send(message)
                print(f"sent {message!r}, got {await ws.receive()!r}")
        await server.aclose()
        nursery.cancel_scope.cancel()
    print("socket file removed:", not await trio.Path(path).exists())
    await trio.Path(path).parent.rmdir()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", metavar="PATH", help="serve on PATH until Ctrl-C")
    parser.add_argument(
        "--mode", type=lambda text: int(text, 8), help="the socket file's mode, in octal (660)"
    )
    args = parser.parse_args()
    if args.serve is None:
        trio.run(demo)
        return 0
    try:
        trio.run(serve, args.serve, args.mode)
    except OSError as exc:  # in use, not a socket, no such directory...
        print(f"cannot serve on {args.serve}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
