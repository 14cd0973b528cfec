"""Memory per idle connection, server side and client side, with and without
compression.

For each configuration and side, this process opens N connections (as the
server, with the clients in a subprocess, or as the clients, with the server
in a subprocess), exchanges one compressible 1.8 KB message on each, lets
them go idle, and measures its Python-heap growth with tracemalloc (which
also sees zlib's buffers). The table gives KiB per connection on each side.

Run: python bench/memory.py [--connections N] [--only SUBSTRING,...]
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import subprocess
import sys
import tracemalloc
from typing import Any

import trio

MESSAGE = ("The quick brown fox jumps over the lazy dog. " * 40).encode()

#: name -> (library, compression settings as keyword arguments or None)
CONFIGURATIONS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "trio_ws, compression off": ("trio_ws", None),
    "trio_ws, Deflate() (default)": ("trio_ws", {}),
    "trio_ws, Deflate(server_no_context_takeover=False)": (
        "trio_ws",
        {"server_no_context_takeover": False},
    ),
    "trio_ws, zlib defaults (15-bit windows, memory level 8, context kept)": (
        "trio_ws",
        {
            "server_max_window_bits": 15,
            "client_max_window_bits": 15,
            "server_no_context_takeover": False,
            "memory_level": 8,
        },
    ),
    "websockets.trio, compression off": ("websockets", None),
    "websockets.trio, compression='deflate' (default)": ("websockets", {}),
    "websockets asyncio, compression off": ("websockets_asyncio", None),
    "websockets asyncio, compression='deflate' (default)": ("websockets_asyncio", {}),
}

#: The peer (in the other process) of an asyncio configuration: the trio
#: configuration of the same library and settings, which offers or accepts
#: exactly the same.
ASYNCIO_PEERS = {
    "websockets asyncio, compression off": "websockets.trio, compression off",
    "websockets asyncio, compression='deflate' (default)": (
        "websockets.trio, compression='deflate' (default)"
    ),
}


def _trio_ws_compression(settings: dict[str, Any] | None) -> Any:
    import trio_ws

    return None if settings is None else trio_ws.Deflate(**settings)


async def _serve(library: str, settings: dict[str, Any] | None, nursery: trio.Nursery) -> int:
    if library == "trio_ws":
        import trio_ws

        async def echo(ws: trio_ws.WebSocket) -> None:
            async for message in ws:
                await ws.send(message)

        server = await nursery.start(
            functools.partial(
                trio_ws.serve,
                echo,
                "127.0.0.1",
                0,
                compression=_trio_ws_compression(settings),
            )
        )
        return int(server.port)
    from websockets.trio.server import serve

    async def wecho(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    compression = None if settings is None else "deflate"
    server = await nursery.start(
        functools.partial(serve, wecho, 0, host="127.0.0.1", compression=compression)
    )
    return int(server.listeners[0].socket.getsockname()[1])


async def _connect(
    library: str, settings: dict[str, Any] | None, nursery: trio.Nursery, url: str, count: int
) -> list[Any]:
    clients = []
    for _ in range(count):
        if library == "trio_ws":
            import trio_ws

            ws = await trio_ws.start_connection(
                nursery, url, compression=_trio_ws_compression(settings)
            )
            await ws.send(MESSAGE)
            await ws.receive()
        else:
            from websockets.trio.client import connect

            compression = None if settings is None else "deflate"
            ws = await connect(url, compression=compression).connect(nursery)
            await ws.send(MESSAGE)
            await ws.recv()
        clients.append(ws)
    return clients


def _grown(before: tracemalloc.Snapshot) -> int:
    gc.collect()
    after = tracemalloc.take_snapshot()
    return sum(stat.size_diff for stat in after.compare_to(before, "filename"))


def _peer(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


async def measure_server_side(name: str, count: int) -> float:
    library, settings = CONFIGURATIONS[name]
    async with trio.open_nursery() as nursery:
        port = await _serve(library, settings, nursery)
        await _run_peer_clients(name, port, 2)  # warm up
        gc.collect()
        before = tracemalloc.take_snapshot()
        peer = _peer(["--peer-clients", name, str(port), str(count)])
        assert peer.stdout is not None
        ready = await trio.to_thread.run_sync(peer.stdout.readline)
        assert ready.strip() == "ready", ready
        await trio.sleep(0.3)  # idle: background readers settle
        grown = _grown(before)
        peer.communicate("")
        nursery.cancel_scope.cancel()
    return grown / count


async def _run_peer_clients(name: str, port: int, count: int) -> None:
    peer = _peer(["--peer-clients", name, str(port), str(count)])
    assert peer.stdout is not None
    await trio.to_thread.run_sync(peer.stdout.readline)
    await trio.to_thread.run_sync(functools.partial(peer.communicate, ""))


async def measure_client_side(name: str, count: int) -> float:
    library, settings = CONFIGURATIONS[name]
    peer = _peer(["--peer-server", name])
    assert peer.stdout is not None
    port = int(await trio.to_thread.run_sync(peer.stdout.readline))
    url = f"ws://127.0.0.1:{port}/"
    try:
        async with trio.open_nursery() as nursery:
            await _connect(library, settings, nursery, url, 2)  # warm up
            gc.collect()
            before = tracemalloc.take_snapshot()
            clients = await _connect(library, settings, nursery, url, count)
            await trio.sleep(0.3)
            grown = _grown(before)
            del clients
            nursery.cancel_scope.cancel()
    finally:
        peer.communicate("")
    return grown / count


# -- websockets asyncio, measured in an asyncio event loop ----------------------------


async def _asyncio_server_side(name: str, count: int) -> float:
    import asyncio

    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    async def echo(ws: Any) -> None:
        try:
            async for message in ws:
                await ws.send(message)
        except ConnectionClosed:
            pass  # the peer process exits without closing: not worth a traceback

    compression = None if CONFIGURATIONS[name][1] is None else "deflate"
    loop = asyncio.get_running_loop()
    peer_name = ASYNCIO_PEERS[name]
    async with serve(echo, "127.0.0.1", 0, compression=compression) as server:
        port = str(next(iter(server.sockets)).getsockname()[1])
        warm_up = _peer(["--peer-clients", peer_name, port, "2"])
        await loop.run_in_executor(None, warm_up.stdout.readline)  # type: ignore[union-attr]
        await loop.run_in_executor(None, warm_up.communicate, "")
        gc.collect()
        before = tracemalloc.take_snapshot()
        peer = _peer(["--peer-clients", peer_name, port, str(count)])
        assert peer.stdout is not None
        ready = await loop.run_in_executor(None, peer.stdout.readline)
        assert ready.strip() == "ready", ready
        await asyncio.sleep(0.3)
        grown = _grown(before)
        await loop.run_in_executor(None, peer.communicate, "")
    return grown / count


async def _asyncio_client_side(name: str, count: int) -> float:
    import asyncio

    from websockets.asyncio.client import connect

    compression = None if CONFIGURATIONS[name][1] is None else "deflate"
    loop = asyncio.get_running_loop()
    peer = _peer(["--peer-server", ASYNCIO_PEERS[name]])
    assert peer.stdout is not None
    url = f"ws://127.0.0.1:{int(await loop.run_in_executor(None, peer.stdout.readline))}/"

    async def open_clients(n: int) -> list[Any]:
        clients = []
        for _ in range(n):
            ws = await connect(url, compression=compression)
            await ws.send(MESSAGE)
            await ws.recv()
            clients.append(ws)
        return clients

    try:
        warm = await open_clients(2)
        gc.collect()
        before = tracemalloc.take_snapshot()
        clients = await open_clients(count)
        await asyncio.sleep(0.3)
        grown = _grown(before)
        for ws in [*warm, *clients]:
            await ws.close()
    finally:
        await loop.run_in_executor(None, peer.communicate, "")
    return grown / count


def _measure(name: str, side: str, count: int) -> float:
    """KiB per connection on ``side`` for configuration ``name``."""
    if CONFIGURATIONS[name][0] == "websockets_asyncio":
        import asyncio

        run = _asyncio_server_side if side == "server" else _asyncio_client_side
        return asyncio.run(run(name, count)) / 1024
    trio_side = measure_server_side if side == "server" else measure_client_side
    return trio.run(trio_side, name, count) / 1024


async def _peer_server(name: str) -> None:
    library, settings = CONFIGURATIONS[name]
    async with trio.open_nursery() as nursery:
        print(await _serve(library, settings, nursery), flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)
        nursery.cancel_scope.cancel()


async def _peer_clients(name: str, port: int, count: int) -> None:
    library, settings = CONFIGURATIONS[name]
    async with trio.open_nursery() as nursery:
        await _connect(library, settings, nursery, f"ws://127.0.0.1:{port}/", count)
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--only", help="comma-separated substrings of configuration names")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--peer-server", help=argparse.SUPPRESS)
    parser.add_argument("--peer-clients", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_server:
        trio.run(_peer_server, args.peer_server)
        return
    if args.peer_clients:
        name, port, count = args.peer_clients
        trio.run(_peer_clients, name, int(port), int(count))
        return
    tracemalloc.start()
    names = [
        name
        for name in CONFIGURATIONS
        if not args.only or any(part in name for part in args.only.split(","))
    ]
    results = {
        name: {side: _measure(name, side, args.connections) for side in ("server", "client")}
        for name in names
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"Memory per idle connection ({args.connections} connections, tracemalloc, KiB)\n")
    print("| configuration | server side | client side |")
    print("|---|--:|--:|")
    for name, sides_kib in results.items():
        print(f"| {name} | {sides_kib['server']:.1f} | {sides_kib['client']:.1f} |")


if __name__ == "__main__":
    main()
