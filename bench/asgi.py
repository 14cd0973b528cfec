"""What serving through ASGI costs: echo round trips of a small message
against the native server (``trio_ws.serve``), the same handler as a
``trio_ws.asgi.App`` under Hypercorn's Trio worker, and a plain Starlette
WebSocket endpoint under the same Hypercorn (what an ASGI app costs without
trio_ws).

    python bench/asgi.py               # about 40 s
    python bench/asgi.py --quick

Each server runs in a subprocess of its own; the client is trio_ws's, in
this process, one connection per server. Rounds are interleaved (each
round times every server once), and the report gives medians of the
microseconds per round trip and paired ratios to the native server.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from pathlib import Path

import trio

import trio_ws

sys.path.insert(0, str(Path(__file__).parent))
from stats import paired_ratios, summarize

COMMON = """
import functools, sys, trio, trio_ws

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def hypercorn(app):
    from hypercorn.config import Config
    from hypercorn.trio import serve
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.errorlog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(functools.partial(serve, app, config))
        print(binds[0].rsplit(":", 1)[1], flush=True)
"""

SERVERS = {
    "trio_ws.serve": COMMON
    + """
async def main():
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(trio_ws.serve, echo, "127.0.0.1", 0))
        print(server.port, flush=True)
trio.run(main)
""",
    "trio_ws.asgi (hypercorn)": COMMON
    + """
import trio_ws.asgi
trio.run(hypercorn, trio_ws.asgi.App(echo))
""",
    "starlette (hypercorn)": COMMON
    + """
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

async def endpoint(websocket):
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await websocket.send_text(message["text"])
        else:
            await websocket.send_bytes(message["bytes"])

trio.run(hypercorn, Starlette(routes=[WebSocketRoute("/", endpoint)]))
""",
}


async def round_trips(ws: trio_ws.WebSocket, count: int, message: str) -> float:
    """Microseconds per round trip over ``count`` of them."""
    start = time.perf_counter()
    for _ in range(count):
        await ws.send(message)
        await ws.receive()
    return (time.perf_counter() - start) / count * 1e6


async def read_port(process: trio.Process) -> int:
    """The port a server subprocess prints on its first line."""
    assert process.stdout is not None
    output = b""
    while not output.endswith(b"\n"):
        data = await process.stdout.receive_some()
        if not data:
            raise RuntimeError("a server exited before printing its port")
        output += data
    return int(output)


async def main(rounds: int, count: int) -> None:
    times: dict[str, list[float]] = {name: [] for name in SERVERS}
    message = "x" * 32
    async with contextlib.AsyncExitStack() as stack:
        connections = {}
        for name, code in SERVERS.items():
            process = await trio.lowlevel.open_process(
                [sys.executable, "-c", code], stdout=subprocess.PIPE
            )
            stack.push_async_callback(process.wait)
            stack.callback(process.kill)
            port = await read_port(process)
            url = f"ws://127.0.0.1:{port}/"
            connections[name] = await stack.enter_async_context(trio_ws.connect(url))
        for ws in connections.values():
            await round_trips(ws, count // 4, message)  # warm up
        for _ in range(rounds):
            for name, ws in connections.items():
                times[name].append(await round_trips(ws, count, message))
    baseline = times["trio_ws.serve"]
    print(f"echo round trips, 32 B text, {rounds} rounds of {count}: microseconds (q1-q3)")
    for name, values in times.items():
        ratio = summarize(paired_ratios(values, baseline)).median
        print(f"  {name:26} {summarize(values).format():>22}   x{ratio:.2f} of native")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    trio.run(main, 5 if args.quick else 25, 500 if args.quick else 2000)
