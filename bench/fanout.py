"""Broadcast fan-out benchmark: one server, many clients, trio_ws beside its peers.

    python bench/fanout.py              # 1,000 clients, 3 rounds, about 2 minutes
    python bench/fanout.py --quick      # a smoke run, well under a minute
    python bench/fanout.py --clients 500 --size 1024 --only trio_ws,websockets_asyncio
    python bench/fanout.py --compression  # everyone with permessage-deflate

One server process (``bench/fanout/server.py``) per implementation, and one
client process (``bench/fanout/clients.py``) holding every connection and
reading every byte they receive, over TCP on 127.0.0.1. Two measurements:

- **one broadcast**: the time from just before the server broadcasts one
  message until the last client has received it (median over repetitions);
- **sustained**: the server broadcasts a burst of messages back to back
  (giving its event loop a turn after each); deliveries per second is
  clients x messages / time from the start of the burst until the last
  client has received the last message.

Implementations: trio_ws (``hub.broadcast``), websockets.trio
(``await broadcast(...)``) and websockets asyncio (``broadcast(...)``), all
without compression or keepalive pings. With ``--compression`` the clients
offer permessage-deflate and every server accepts it with its default
settings; trio_ws, whose server does not keep its compression context,
compresses each broadcast once for everyone, and ``trio_ws_takeover`` shows
the per-connection cost (``Deflate(server_no_context_takeover=False)``).
Rounds are interleaved, the order rotated each round; the report gives
medians over rounds and paired ratios (per round, against trio_ws). Every
process is stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import platform
import shlex
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from children import Child, ChildError, stop_all

HERE = Path(__file__).resolve().parent / "fanout"

IMPLS = {
    "trio_ws": ("**trio_ws** (`hub.broadcast`)", ["trio_ws"]),
    "websockets_trio": ("websockets.trio 17.4 (`await broadcast()`)", ["websockets", "trio"]),
    "websockets_asyncio": ("websockets asyncio 17.4 (`broadcast()`)", ["websockets"]),
}
BASELINE = "trio_ws"
#: Only with --compression: trio_ws compressing once per connection.
TAKEOVER = (
    "trio_ws_takeover",
    ("trio_ws, context takeover (`hub.broadcast`, compressed per connection)", ["trio_ws"]),
)

DEFAULTS = {"rounds": 3, "repeat": 20, "burst": 100, "bursts": 3}
QUICK = {"rounds": 1, "repeat": 5, "burst": 20, "bursts": 2}

#: Seconds allowed for any one step: starting, connecting, a measurement.
STEP_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0


def frame_size(size: int) -> int:
    """Bytes on the wire for an unmasked server frame of ``size`` payload bytes."""
    return size + (2 if size < 126 else 4 if size < 65536 else 10)


@dataclass
class Outcome:
    """One implementation's measurements in one round."""

    latencies: list[float] = field(default_factory=list)  # seconds, one broadcast
    rates: list[float] = field(default_factory=list)  # deliveries per second, per burst


def run_one(key: str, args: argparse.Namespace) -> Outcome:
    """Start ``key``'s server and the clients, measure, stop both."""
    mode = ["deflate"] if args.compression else []
    server = Child(f"{key} server", key, *mode, script=HERE / "server.py", mark="")
    clients: Child | None = None
    outcome = Outcome()
    try:
        port = server.receive(STEP_TIMEOUT)["port"]
        clients = Child(
            f"{key} clients",
            str(port),
            str(args.clients),
            *mode,
            script=HERE / "clients.py",
            mark="",
        )
        clients.receive(STEP_TIMEOUT)  # every handshake done
        server.request({"cmd": "clients", "n": args.clients}, STEP_TIMEOUT)
        wire = 1 if args.compression else frame_size(args.size)  # clients count messages
        total = 0
        for _ in range(args.repeat):
            sent = server.request(
                {"cmd": "broadcast", "size": args.size, "count": 1}, STEP_TIMEOUT
            )
            total += wire
            got = clients.request(
                {"cmd": "until", "bytes": total, "timeout": STEP_TIMEOUT}, STEP_TIMEOUT
            )
            if got["t"] is None:
                raise ChildError(f"{key}: {got['behind']} clients missed a broadcast")
            outcome.latencies.append(got["t"] - sent["t0"])
        for _ in range(args.bursts):
            sent = server.request(
                {"cmd": "broadcast", "size": args.size, "count": args.burst}, STEP_TIMEOUT
            )
            total += wire * args.burst
            got = clients.request(
                {"cmd": "until", "bytes": total, "timeout": STEP_TIMEOUT}, STEP_TIMEOUT
            )
            if got["t"] is None:
                raise ChildError(f"{key}: {got['behind']} clients missed messages")
            outcome.rates.append(args.clients * args.burst / (got["t"] - sent["t0"]))
    finally:
        stop_all([server] if clients is None else [clients, server], STOP_TIMEOUT)
    return outcome


def missing(keys: Sequence[str]) -> list[str]:
    return [
        f"{key} needs {module}"
        for key in keys
        for module in IMPLS[key][1]
        if importlib.util.find_spec(module) is None
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/fanout.py", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000, help="connections (default 1000)")
    parser.add_argument("--size", type=int, default=64, help="message size in bytes (default 64)")
    parser.add_argument(
        "--rounds", type=int, help=f"interleaved rounds (default {DEFAULTS['rounds']})"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help=f"single broadcasts timed per round (default {DEFAULTS['repeat']})",
    )
    parser.add_argument(
        "--burst", type=int, help=f"messages per burst (default {DEFAULTS['burst']})"
    )
    parser.add_argument(
        "--bursts", type=int, help=f"bursts per round (default {DEFAULTS['bursts']})"
    )
    parser.add_argument(
        "--compression",
        action="store_true",
        help="with permessage-deflate (adds trio_ws_takeover)",
    )
    parser.add_argument("--only", help=f"comma-separated, from {','.join(IMPLS)},{TAKEOVER[0]}")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 1 round, fewer messages"
    )
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.compression:
        IMPLS.setdefault(*TAKEOVER)
    args.keys = args.only.split(",") if args.only else list(IMPLS)
    unknown = [key for key in args.keys if key not in IMPLS]
    if unknown:
        parser.error(f"unknown implementation {unknown}: choose from {', '.join(IMPLS)}")
    return args


def _terminate(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)  # so that the processes are stopped on the way out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if problems := missing(args.keys):
        print("error: " + "; ".join(problems) + " (or leave it out with --only)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    command = shlex.join(["python", *(sys.argv if argv is None else ["bench/fanout.py", *argv])])
    print(command, file=sys.stderr, flush=True)
    results = {key: Outcome() for key in args.keys}
    begin = time.monotonic()
    try:
        for round_index in range(args.rounds):
            shift = round_index % len(args.keys)
            for key in [*args.keys[shift:], *args.keys[:shift]]:
                outcome = run_one(key, args)
                results[key].latencies.append(statistics.median(outcome.latencies))
                results[key].rates.append(statistics.median(outcome.rates))
            print(
                f"round {round_index + 1}/{args.rounds} done ({time.monotonic() - begin:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    except ChildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report(results, args, command, time.monotonic() - begin))
    return 0


def versions() -> str:
    found = [f"Python {platform.python_version()}"]
    for name in ("trio", "websockets", "wsproto"):
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def report(
    results: dict[str, Outcome], args: argparse.Namespace, command: str, wall: float
) -> str:
    base = results.get(BASELINE)
    lines = [
        f"`{command}`: {args.clients} clients, {args.size}-byte text messages"
        f"{' compressed with permessage-deflate' if args.compression else ''}, "
        f"{args.rounds} rounds (medians over rounds; per round: median of {args.repeat} single "
        f"broadcasts and of {args.bursts} bursts of {args.burst} messages); {wall:.0f} s; "
        f"{versions()}",
        "",
        "| implementation | one broadcast to all (ms) | ratio | sustained deliveries/s | ratio |",
        "|---|--:|--:|--:|--:|",
    ]
    for key, outcome in results.items():
        latency = statistics.median(outcome.latencies) * 1000
        rate = statistics.median(outcome.rates)
        if base is None or key == BASELINE:
            ratios = ("1", "1") if key == BASELINE else ("", "")
        else:
            lat_ratio = statistics.median(
                p / b for p, b in zip(outcome.latencies, base.latencies, strict=True)
            )
            rate_ratio = statistics.median(
                b / p for p, b in zip(outcome.rates, base.rates, strict=True)
            )
            ratios = (f"{lat_ratio:.2f}", f"{rate_ratio:.2f}")
        lines.append(
            f"| {IMPLS[key][0]} | {latency:.1f} | {ratios[0]} | {rate:,.0f} | {ratios[1]} |"
        )
    lines.append("")
    lines.append(
        "Ratios are per-round peer / trio_ws for the time, trio_ws / peer for the rate: "
        "above 1, trio_ws is ahead."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
