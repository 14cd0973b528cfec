"""Memory per idle connection, with and without compression.

Opens N connections (client and server in this process), exchanges one
compressible message on each, then measures Python-heap growth with
tracemalloc (which also sees zlib's buffers) and divides by N. Both ends of a
connection live in this process, so a connection costs its client side plus
its server side; the table reports half of that, the cost of one endpoint.

Run: python bench/memory.py [--connections N] [--only trio_ws,websockets]
"""

from __future__ import annotations

import argparse
import functools
import gc
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import trio

MESSAGE = ("The quick brown fox jumps over the lazy dog. " * 40).encode()

Setup = Callable[[trio.Nursery, int], Awaitable[list[Any]]]


async def _trio_ws(compression: Any, nursery: trio.Nursery, count: int) -> list[Any]:
    import trio_ws

    async def echo(ws: trio_ws.WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    options: dict[str, Any] = {}
    if compression is not trio_ws.__dict__.get("_UNSET"):
        options["compression"] = compression
    server = await nursery.start(functools.partial(trio_ws.serve, echo, "127.0.0.1", 0, **options))
    clients = []
    for _ in range(count):
        ws = await trio_ws.start_connection(nursery, f"ws://127.0.0.1:{server.port}/", **options)
        await ws.send(MESSAGE)
        await ws.receive()
        clients.append(ws)
    return clients


async def _websockets(compression: str | None, nursery: trio.Nursery, count: int) -> list[Any]:
    from websockets.trio.client import connect
    from websockets.trio.server import serve

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    server = await nursery.start(
        functools.partial(serve, echo, 0, host="127.0.0.1", compression=compression)
    )
    port = server.listeners[0].socket.getsockname()[1]
    clients = []
    for _ in range(count):
        ws = await connect(f"ws://127.0.0.1:{port}/", compression=compression).connect(nursery)
        await ws.send(MESSAGE)
        await ws.recv()
        clients.append(ws)
    return clients


def _configurations() -> dict[str, Setup]:
    configs: dict[str, Setup] = {}
    try:
        import trio_ws

        configs["trio_ws, no compression"] = functools.partial(_trio_ws, None)
        if hasattr(trio_ws, "Deflate"):
            configs["trio_ws, compression (defaults)"] = functools.partial(
                _trio_ws, trio_ws.Deflate()
            )
    except ImportError:  # pragma: no cover
        pass
    try:
        import websockets.trio.server  # noqa: F401

        configs["websockets.trio, no compression"] = functools.partial(_websockets, None)
        configs["websockets.trio, compression (defaults)"] = functools.partial(
            _websockets, "deflate"
        )
    except ImportError:  # pragma: no cover
        pass
    return configs


async def measure(setup: Setup, count: int) -> float:
    """Bytes per endpoint of an idle connection."""
    async with trio.open_nursery() as nursery:
        await setup(nursery, 2)  # warm up: imports, caches, the server itself
        gc.collect()
        before = tracemalloc.take_snapshot()
        clients = await setup(nursery, count)
        await trio.sleep(0.2)  # let background readers settle
        gc.collect()
        after = tracemalloc.take_snapshot()
        grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        del clients
        nursery.cancel_scope.cancel()
    return grown / count / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--only", help="substring filter on configuration names")
    args = parser.parse_args()
    tracemalloc.start()
    print(f"Memory per idle connection endpoint ({args.connections} connections, tracemalloc)\n")
    print("| configuration | KiB per endpoint |")
    print("|---|--:|")
    for name, setup in _configurations().items():
        if args.only and not any(part in name for part in args.only.split(",")):
            continue
        size = trio.run(measure, setup, args.connections)
        print(f"| {name} | {size / 1024:.1f} |")


if __name__ == "__main__":
    main()
