"""What routing costs at connection set-up: a server with one handler
against the same server with a router of 50 WebSocket routes, the request
matching the last one (the worst case: every template tried), in one run.

    python bench/routing.py            # about 40 s
    python bench/routing.py --quick

Both servers run in subprocesses of their own and meet the fixed raw client
of ``handshake.py`` (``handshake_client.py``), 20 connections at a time;
rounds interleaved, medians and the paired ratio, and each server's CPU
time per connection (from ``/proc``, so Linux only), which a busy machine
disturbs less than the rate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from children import Child, stop_all

HERE = Path(__file__).parent
ROUTES = 50


def cpu_seconds(child: Child) -> float:
    """The CPU time (user + system) a worker process has used so far (Linux)."""
    fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SERVER = """
import functools, sys, trio, trio_ws
sys.path.insert(0, {bench!r})
import control

async def echo(ws, **params):
    async for message in ws:
        await ws.send(message)

def handler():
    if not {routed}:
        return echo
    router = trio_ws.Router()
    for index in range({routes} - 1):
        router.add_websocket(f"/app{{index}}/{{{{room}}}}/items/{{{{id:int}}}}", echo)
    router.add_websocket("/chat/{{room}}/items/{{id:int}}", echo)
    return router

async def main():
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(trio_ws.serve, handler(), "127.0.0.1", 0)
        )
        control.answer({{"port": server.port}})
        await trio.lowlevel.FdStream(0).receive_some()
        nursery.cancel_scope.cancel()

trio.run(main)
"""


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/routing.py", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 500")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.count = 3, 500
    script = {}
    for kind, routed in (("one handler", False), (f"router, {ROUTES} routes", True)):
        path = Path(f"/tmp/trio_ws_routing_{int(routed)}.py")
        path.write_text(SERVER.format(bench=str(HERE), routed=routed, routes=ROUTES))
        script[kind] = path
    servers = {kind: Child(kind, script=path) for kind, path in script.items()}
    client = Child("raw client", script=HERE / "handshake_client.py")
    rates: dict[str, list[float]] = {kind: [] for kind in servers}
    cpu: dict[str, list[float]] = {kind: [] for kind in servers}
    try:
        ports = {kind: child.receive(60)["port"] for kind, child in servers.items()}
        kinds = list(servers)
        for index in range(args.rounds + 1):  # the first round warms up
            for kind in kinds if index % 2 else kinds[::-1]:
                command = {"cmd": "run", "port": ports[kind], "count": args.count}
                command.update(concurrency=20, path="/chat/lobby/items/7")
                before = cpu_seconds(servers[kind])
                ns = client.request(command, 120)["ns"]
                if index:
                    rates[kind].append(args.count / (ns / 1e9))
                    used = cpu_seconds(servers[kind]) - before
                    cpu[kind].append(used / args.count * 1e6)
    finally:
        stop_all([client, *servers.values()], 10)
    base, routed = rates[kinds[0]], rates[kinds[1]]
    ratios = [b / r for b, r in zip(base, routed, strict=True)]
    print("| server | connections/s (20 at a time) | server CPU per connection, µs |")
    print("|---|--:|--:|")
    for kind in kinds:
        rate, used = statistics.median(rates[kind]), statistics.median(cpu[kind])
        print(f"| {kind} | {rate:.0f} | {used:.0f} |")
    print(
        f"\none handler / router, paired: {statistics.median(ratios):.3f} "
        f"({min(ratios):.3f}-{max(ratios):.3f}) over {args.rounds} rounds of {args.count}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
