"""Connection set-up benchmark: how many WebSocket connections per second a
server accepts and closes, and a client opens and closes, side by side with
trio_ws's peers in one run.

    python bench/handshake.py                  # both sides, about 1-2 minutes
    python bench/handshake.py --quick          # smoke run
    python bench/handshake.py --side server --concurrency 1,20,100

Server side: each implementation's echo server (the one ``run.py`` uses, in
its own process) meets the same fixed raw client (``handshake_client.py``,
another process): upgrade offering no extension, close 1000, the server's
close frame and end of connection, ``concurrency`` connections at a time.
The table's last row is Trio alone (``handshake_floor.py``: one task per
connection and nothing else), the floor under any Trio server.

Client side: each implementation's ``connect()`` + close (``async with``,
default settings, so trio_ws and websockets offer compression) against the
same fixed raw server (``handshake_server.py``), sequentially or
``concurrency`` at a time in one process.

Rounds are interleaved with the order rotated; the report gives medians over
rounds of connections per second and paired ratios (per round, trio_ws's rate
/ the peer's rate: > 1 means trio_ws is faster).
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from children import Child, ChildError, stop_all
from echo_impls import BASELINE, BY_KEY, IMPLS, Impl
from report import machine, versions
from stats import paired_ratios, summarize

HERE = Path(__file__).parent
#: Server implementations: every echo implementation (plus the floor, below).
SERVER_IMPLS = ("trio_ws", "websockets_asyncio", "websockets_trio", "trio_websocket", "bare")
#: The floor of the server table: Trio alone, one task per connection
#: (``handshake_floor.py``), not a WebSocket library.
FLOOR = Impl("floor", "trio alone, one task per connection (floor)", "", "trio", ())
#: Client implementations: the bare echo module has no client worth timing.
CLIENT_IMPLS = ("trio_ws", "websockets_asyncio", "websockets_trio", "trio_websocket")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def _ints(text: str) -> list[int]:
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"numbers of at least 1, please: {text!r}")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/handshake.py",
        description="WebSocket connections opened and closed per second: servers against a "
        "fixed raw client, clients against a fixed raw server.",
    )
    parser.add_argument("--side", choices=("server", "client", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument(
        "--count", type=int, default=2000, help="connections per run (default 2000)"
    )
    parser.add_argument(
        "--concurrency",
        type=_ints,
        default=None,
        help="connections at a time, comma-separated (default 1,20,100 for servers, "
        "1,20 for clients)",
    )
    parser.add_argument(
        "--only",
        default=None,
        help="implementations, comma-separated (default: all that apply to the side)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of 300")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="also write the report here")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.count = 2, 300
    if args.rounds < 1 or args.count < 1:
        parser.error("--rounds and --count must be at least 1")
    return args


def _impls(keys: Sequence[str], only: str | None) -> list[Impl]:
    chosen = [key.strip() for key in only.split(",")] if only else list(keys)
    unknown = [key for key in chosen if key not in BY_KEY and key != FLOOR.key]
    if unknown:
        raise SystemExit(f"error: unknown implementation {', '.join(unknown)}")
    return [impl for impl in IMPLS if impl.key in chosen and impl.key in keys]


Table = dict[tuple[str, int], list[float]]  # (impl, concurrency) -> connections/s per round


def _rounds(
    impls: Sequence[Impl],
    concurrencies: Sequence[int],
    rounds: int,
    run: Callable[[Impl, int], int],
    count: int,
    label: str,
) -> Table:
    rates: Table = {(impl.key, c): [] for impl in impls for c in concurrencies}
    for impl in impls:  # warm-up: imports, caches, the first connections
        for concurrency in concurrencies:
            run(impl, concurrency)
    began = time.monotonic()
    for index in range(rounds):
        shift = index % len(impls)
        for concurrency in concurrencies:
            for impl in [*impls[shift:], *impls[:shift]]:
                rates[impl.key, concurrency].append(count / (run(impl, concurrency) / 1e9))
        print(
            f"{label}: round {index + 1}/{rounds} ({time.monotonic() - began:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    return rates


def measure_servers(
    impls: Sequence[Impl], args: argparse.Namespace, abrupt: dict[str, int]
) -> Table:
    """Connections/s per server; ``abrupt`` counts, per server, the
    connections it ended without a close frame."""
    servers: dict[str, Child] = {}
    client = Child("raw client", script=HERE / "handshake_client.py")
    try:
        for impl in impls:
            if impl.key == FLOOR.key:
                servers[impl.key] = Child("trio floor server", script=HERE / "handshake_floor.py")
            else:
                servers[impl.key] = Child(f"{impl.key} server", "server", impl.key)
        ports = {key: child.receive(START_TIMEOUT)["port"] for key, child in servers.items()}

        def run(impl: Impl, concurrency: int) -> int:
            command = {"cmd": "run", "port": ports[impl.key], "count": args.count}
            answer = client.request({**command, "concurrency": concurrency}, 120)
            abrupt[impl.key] = abrupt.get(impl.key, 0) + answer["abrupt"]
            ns: int = answer["ns"]
            return ns

        concurrencies = args.concurrency or [1, 20, 100]
        return _rounds(impls, concurrencies, args.rounds, run, args.count, "servers")
    finally:
        stop_all([client], STOP_TIMEOUT)
        stop_all(list(servers.values()), STOP_TIMEOUT)


def measure_clients(impls: Sequence[Impl], args: argparse.Namespace) -> Table:
    server = Child("raw server", script=HERE / "handshake_server.py")
    clients: dict[str, Child] = {}
    try:
        url = f"ws://127.0.0.1:{server.receive(START_TIMEOUT)['port']}/"
        for impl in impls:
            clients[impl.key] = Child(f"{impl.key} client", "connector", impl.key, url)
        for child in clients.values():
            child.receive(START_TIMEOUT)

        def run(impl: Impl, concurrency: int) -> int:
            command = {"cmd": "connect", "count": args.count, "concurrency": concurrency}
            ns: int = clients[impl.key].request(command, 120)["ns"]
            return ns

        concurrencies = args.concurrency or [1, 20]
        return _rounds(impls, concurrencies, args.rounds, run, args.count, "clients")
    finally:
        stop_all(list(clients.values()), STOP_TIMEOUT)
        stop_all([server], STOP_TIMEOUT)


def table(title: str, impls: Sequence[Impl], rates: Table) -> str:
    concurrencies = sorted({c for _, c in rates})
    lines = [
        f"| {title} | at a time | connections/s | trio_ws / this (paired) |",
        "|---|--:|--:|--:|",
    ]
    for concurrency in concurrencies:
        for impl in impls:
            values = rates[impl.key, concurrency]
            ratio = "1 (baseline)"
            if impl.key != BASELINE and (BASELINE, concurrency) in rates:
                ratio = summarize(paired_ratios(rates[BASELINE, concurrency], values)).format(2)
            lines.append(
                f"| {impl.label} | {concurrency} | {summarize(values).format(0)} | {ratio} |"
            )
    return "\n".join(lines)


def _terminate(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)  # so that the workers are stopped on the way out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    command = shlex.join(
        ["python", *(sys.argv if argv is None else ["bench/handshake.py", *argv])]
    )
    print(command, file=sys.stderr, flush=True)
    parts = []
    began = time.monotonic()
    try:
        if args.side in ("server", "both"):
            impls = _impls(SERVER_IMPLS, args.only)
            missing = [impl.key for impl in impls if impl.missing()]
            impls = [impl for impl in impls if not impl.missing()]
            if not args.only or "floor" in args.only.split(","):
                impls.append(FLOOR)
            abrupt: dict[str, int] = {}
            rates = measure_servers(impls, args, abrupt)
            parts.append(table("Server (fixed raw client)", impls, rates))
            parts.extend(
                f"Note: {BY_KEY[key].label if key in BY_KEY else key} ended {n} connections "
                "without a close frame."
                for key, n in abrupt.items()
                if n
            )
            if missing:
                parts.append(f"(left out, not installed: {', '.join(missing)})")
        if args.side in ("client", "both"):
            impls = [impl for impl in _impls(CLIENT_IMPLS, args.only) if not impl.missing()]
            parts.append(table("Client (fixed raw server)", impls, measure_clients(impls, args)))
    except ChildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    text = "\n\n".join(
        [
            *parts,
            f"Medians (interquartile range) over {args.rounds} rounds of {args.count} "
            "connections each, order rotated each round; the ratio is per round trio_ws's "
            "rate divided by this one's (> 1: trio_ws is faster).",
            f"- Command: `{command}`\n- Versions: {versions()}\n- Machine: {machine()}\n"
            f"- Wall time: {time.monotonic() - began:.0f} s",
        ]
    )
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
