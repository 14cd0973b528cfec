"""Echo round-trip benchmark: trio_ws side by side with its peers, in one run.

    python bench/run.py                 # full run, about 1-2 minutes on 2 cores
    python bench/run.py --quick         # smoke run, a few seconds
    python bench/run.py --only trio_ws,bare --sizes 32,1K:binary --markdown out.md
    python bench/run.py --compression default --sizes 32,64K:text,64K:binary,1M:text

Every implementation's server runs in its own subprocess, and so does its
client, which times the round trips. Rounds are interleaved: in each round,
every implementation runs ``--count`` round trips per payload, in an order
rotated from round to round. The report gives medians over rounds and paired
ratios (per round, peer time / trio_ws time), plus trio task steps per round
trip, counted in separate untimed runs.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from children import Child, ChildError, stop_all
from control import COMPRESSION_ENV
from echo_impls import BASELINE, BY_KEY, IMPLS, Impl
from report import Row, document
from stats import paired_ratios, summarize

DEFAULTS = {"rounds": 20, "count": 1000, "warmup": 200}
QUICK = {"rounds": 3, "count": 100, "warmup": 20}
DEFAULT_SIZES = "32:text,64K:binary,1M:binary"
#: Payloads above this many bytes get proportionally fewer round trips.
FULL_COUNT_UP_TO = 65536

#: Seconds allowed for a worker to start (imports, connect) and to stop.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Size:
    nbytes: int
    kind: str  # "text" or "binary"

    @property
    def label(self) -> str:
        for unit, factor in (("MiB", 2**20), ("KiB", 2**10)):
            if self.nbytes >= factor and self.nbytes % factor == 0:
                return f"{self.nbytes // factor} {unit} {self.kind}"
        return f"{self.nbytes} B {self.kind}"


_SIZE = re.compile(r"(\d+)\s*([km]?)(?:i?b)?(?::(text|binary))?", re.IGNORECASE)


def parse_sizes(text: str) -> list[Size]:
    """``32,64K:binary`` → sizes; without ``:text``/``:binary``, sizes under
    1 KiB are text and the others binary."""
    sizes = []
    for item in text.split(","):
        match = _SIZE.fullmatch(item.strip())
        if match is None:
            raise argparse.ArgumentTypeError(f"bad size {item!r}: use e.g. 32, 64K or 1M:text")
        digits, unit, kind = match.groups()
        nbytes = int(digits) * {"": 1, "k": 2**10, "m": 2**20}[unit.lower()]
        if not 0 < nbytes <= 2**20:
            raise argparse.ArgumentTypeError(f"size {item!r}: from 1 byte to 1 MiB")
        sizes.append(Size(nbytes, kind.lower() if kind else "text" if nbytes < 1024 else "binary"))
    return sizes


def parse_only(text: str) -> list[Impl]:
    keys = [key.strip() for key in text.split(",") if key.strip()]
    unknown = [key for key in keys if key not in BY_KEY]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(
            f"unknown implementation {', '.join(unknown)!r}: choose from {', '.join(BY_KEY)}"
        )
    return [impl for impl in IMPLS if impl.key in keys]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Echo round trips (one message in flight): trio_ws and its peers, "
        "interleaved rounds, medians and paired ratios.",
    )
    parser.add_argument(
        "--rounds", type=int, help=f"interleaved rounds (default {DEFAULTS['rounds']})"
    )
    parser.add_argument(
        "--count",
        type=int,
        help=f"round trips per implementation, payload and round (default {DEFAULTS['count']})",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        help=f"untimed round trips per implementation and payload first "
        f"(default {DEFAULTS['warmup']})",
    )
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=parse_sizes(DEFAULT_SIZES),
        help=f"payloads, comma-separated, each SIZE[K|M][:text|:binary]; without a kind, "
        f"under 1K is text, else binary (default {DEFAULT_SIZES})",
    )
    parser.add_argument(
        "--only",
        type=parse_only,
        default=list(IMPLS),
        help=f"implementations to run, comma-separated (default all: {','.join(BY_KEY)})",
    )
    parser.add_argument(
        "--compression",
        choices=("off", "default"),
        default="off",
        help="off (default): compression=None on every side; default: each library's "
        "default settings, so trio_ws and websockets negotiate permessage-deflate "
        "(trio-websocket and bare wsproto have no compression)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK['rounds']} rounds of {QUICK['count']} round trips",
    )
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="also write the report here")
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds allowed for a worker to answer any one command (default 60)",
    )
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("rounds", "count"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    return args


@dataclass
class Peer:
    """One implementation's server and client processes."""

    impl: Impl
    server: Child
    client: Child | None = None

    def run(self, size: Size, count: int, timeout: float, steps: bool = False) -> dict[str, int]:
        assert self.client is not None
        command = {"cmd": "run", "size": size.nbytes, "kind": size.kind, "count": count}
        return self.client.request({**command, "steps": steps}, timeout)


@contextmanager
def started(impls: Sequence[Impl], timeout: float) -> Iterator[list[Peer]]:
    """Servers and clients of ``impls``, connected, stopped at the end whatever happens."""
    peers: list[Peer] = []
    try:
        for impl in impls:
            peers.append(Peer(impl, Child(f"{impl.key} server", "server", impl.key)))
        ports = [peer.server.receive(timeout)["port"] for peer in peers]
        for peer, port in zip(peers, ports, strict=True):
            url = f"ws://127.0.0.1:{port}/"
            peer.client = Child(f"{peer.impl.key} client", "client", peer.impl.key, url)
        for peer in peers:
            peer.client.receive(timeout)  # type: ignore[union-attr]
        yield peers
    finally:
        # Clients first, so that they close their connections before the servers go.
        stop_all([peer.client for peer in peers if peer.client], STOP_TIMEOUT)
        stop_all([peer.server for peer in peers], STOP_TIMEOUT)
    for peer in peers:
        for child in (peer.client, peer.server):
            if child is not None and (text := child.stderr_text()):
                print(f"note: {child.name} wrote on stderr:\n{text}", file=sys.stderr)


@dataclass
class Results:
    #: (impl key, size) → µs per round trip, one value per round.
    micros: dict[tuple[str, Size], list[float]]
    #: (impl key, size) → per round trip: client steps, batches; server steps, batches.
    steps: dict[tuple[str, Size], tuple[float | None, float | None, float | None, float | None]]


def _per_round_trip(total: int | None, count: int) -> float | None:
    return None if total is None else total / count


def count_for(size: Size, count: int) -> int:
    """Round trips per run for ``size``: ``count``, scaled down above 64 KiB
    (1 MiB gets a sixteenth), and at least 10."""
    if size.nbytes <= FULL_COUNT_UP_TO:
        return count
    return max(10, count * FULL_COUNT_UP_TO // size.nbytes)


def measure(peers: Sequence[Peer], sizes: Sequence[Size], args: argparse.Namespace) -> Results:
    timeout = args.timeout
    results = Results({(p.impl.key, s): [] for p in peers for s in sizes}, {})
    if args.warmup:
        for size in sizes:
            for peer in peers:
                peer.run(size, count_for(size, args.warmup), timeout)
    for size in sizes:
        for peer in peers:
            count = count_for(size, args.count)
            peer.server.request({"cmd": "count_start"}, timeout)
            client = peer.run(size, count, timeout, steps=True)
            server = peer.server.request({"cmd": "count_stop"}, timeout)
            results.steps[peer.impl.key, size] = (
                _per_round_trip(client.get("steps"), count),
                _per_round_trip(client.get("batches"), count),
                _per_round_trip(server.get("steps"), count),
                _per_round_trip(server.get("batches"), count),
            )
    started_at = time.monotonic()
    for round_index in range(args.rounds):
        shift = round_index % len(peers)
        order = [*peers[shift:], *peers[:shift]]
        for size in sizes:
            count = count_for(size, args.count)
            for peer in order:
                ns = peer.run(size, count, timeout)["ns"]
                results.micros[peer.impl.key, size].append(ns / 1000 / count)
        print(
            f"round {round_index + 1}/{args.rounds} done ({time.monotonic() - started_at:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    return results


def rows(results: Results, impls: Sequence[Impl], sizes: Sequence[Size]) -> list[Row]:
    baseline = BASELINE if any(impl.key == BASELINE for impl in impls) else None
    table = []
    for size in sizes:
        for impl in impls:
            micros = results.micros[impl.key, size]
            ratio = None
            if baseline is not None and impl.key != baseline:
                ratio = summarize(paired_ratios(micros, results.micros[baseline, size]))
            table.append(
                Row(
                    impl.label, size.label, summarize(micros), ratio, results.steps[impl.key, size]
                )
            )
    return table


def _terminate(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)  # so that the workers are stopped on the way out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    impls: list[Impl] = args.only
    sizes: list[Size] = args.sizes
    missing = {impl.key: impl.missing() for impl in impls if impl.missing()}
    if missing:
        for key, libraries in missing.items():
            for name, package in libraries:
                print(f"error: {key} needs {name}: pip install {package}", file=sys.stderr)
        print("(or leave it out with --only)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    os.environ[COMPRESSION_ENV] = args.compression  # read by the workers (control.compression)

    command = shlex.join(["python", *(sys.argv if argv is None else ["bench/run.py", *argv])])
    settings = (
        f"{args.rounds} rounds x {args.count} round trips per implementation and payload "
        f"(fewer above 64 KiB: {args.count * FULL_COUNT_UP_TO // 2**20} for 1 MiB) "
        f"(after {args.warmup} warm-up round trips), order rotated each round; payloads: "
        f"{', '.join(size.label for size in sizes)}; compression: "
        + (
            "each library's default (permessage-deflate negotiated by trio_ws and websockets)"
            if args.compression == "default"
            else "off on every side"
        )
    )
    print(f"{command}\n{settings}", file=sys.stderr, flush=True)
    begin = time.monotonic()
    try:
        with started(impls, START_TIMEOUT) as peers:
            results = measure(peers, sizes, args)
    except ChildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    wall = time.monotonic() - begin

    baseline = BASELINE if any(impl.key == BASELINE for impl in impls) else None
    text = document(
        rows(results, impls, sizes),
        baseline,
        command=command,
        settings=settings,
        wall_seconds=wall,
    )
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
        print(f"written to {args.markdown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
