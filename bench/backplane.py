"""Redis backplane benchmark: trio_ws nodes beside python-socketio's AsyncRedisManager.

    python bench/backplane.py              # 3 rounds, about 2.5 minutes
    python bench/backplane.py --quick      # a smoke run, about 30 s
    python bench/backplane.py --rounds 5 --only trio_ws --skip 4,5

It starts its own ``redis-server`` on a free loopback port (as the tests do,
with tests/redis_server.py), then, in every round, for each implementation:
two nodes, A and B, each a process of its own serving WebSocket connections
(``bench/backplane_node.py``), and a third process holding the clients
(``bench/backplane_clients.py``: raw sockets, one ``epoll`` loop, every frame
read): one connection to A and ``--members`` (4) to B, all in room ``bench``.
trio_ws nodes run ``RedisBackplane`` with its defaults except a large outbox
(nothing dropped) and ``probe_timeout=30`` (so that the pause of test 2 is
not taken for a stalled link); python-socketio runs ``AsyncServer`` with
``AsyncRedisManager`` on aiohttp, pings off (as on the trio_ws side).

1. **publish rate** (per process): A broadcasts ``--messages`` 64-byte
   messages to the room as fast as a loop can call ``hub.broadcast`` (no
   await in the loop), timed until ``stats().backplane.published`` has
   counted them all (written to Redis). Row 1b gives the event loop a turn
   after every broadcast, as handlers that broadcast do. python-socketio
   has one way for both: ``await sio.emit(...)`` in a loop (it returns
   after its PUBLISH).
2. **receive + fan-out rate** (per process): B is stopped (SIGSTOP) while
   A publishes ``--messages``; Redis keeps them for B. B is resumed and
   times how fast it takes them from Redis and hands each to its local
   connections (first to last handed over; trio_ws counts what the node
   hands to the hub, as ``stats().backplane.received`` does).
3. **added latency of the Redis hop**: A broadcasts at 5,000 and at 1,000
   messages/s (``--rates``) for ``--seconds``; each message carries its
   ``time.monotonic()``; the clients note arrival minus that, on A (the
   local path) and on B (through Redis); the hop adds the difference.
4. **1 worker vs 2** (trio_ws): a publisher node broadcasts bursts of
   ``--burst`` messages (a turn for the event loop after each) to a room
   whose 1,000 members are on 1 worker, or 500 on each of 2 workers; the
   clients are in a process of their own. Deliveries per second = clients x
   messages / time from the first broadcast to the last client's last message.
5. **resubscribe** (trio_ws): a node whose 10 connections are in 10,000
   rooms in all; ``CLIENT KILL TYPE pubsub``; the time until ``PUBSUB
   CHANNELS`` shows all 10,000 room channels subscribed again.

Rounds are interleaved (the order rotated each round); the report gives
medians over rounds, the per-round ratio trio_ws / socketio, and how much CPU
other processes on the machine took meanwhile. Every process is stopped at
the end, whatever happens.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import platform
import resource
import shlex
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from children import Child, ChildError, stop_all

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from redis_server import RedisServer, redis_binary  # noqa: E402

NODE = HERE / "backplane_node.py"
CLIENTS = HERE / "backplane_clients.py"
IMPLS = {
    "trio_ws": ("ws", ["trio_ws", "coredis"]),
    "socketio": ("sio", ["socketio", "aiohttp", "redis"]),
}
BASELINE = "trio_ws"
ROOM = "bench"
SIZE = 64

DEFAULTS = {"rounds": 3, "messages": 20_000, "seconds": 2.0, "bursts": 3, "burst": 100}
QUICK = {"rounds": 1, "messages": 5_000, "seconds": 1.0, "bursts": 2, "burst": 50}

STEP_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def send_signal(child: Child, sig: int) -> None:
    child._proc.send_signal(sig)  # our own subprocess


# -- the measurements --------------------------------------------------------------


@dataclass
class Round:
    """One round's numbers: name -> value (rates per second, times in seconds)."""

    values: dict[str, float] = field(default_factory=dict)


class Redis:
    """Our redis-server, and the few commands the harness sends it."""

    def __init__(self) -> None:
        binary = redis_binary()
        if binary is None:
            raise SystemExit("error: no redis-server on PATH (apt install redis-server)")
        self._dir = tempfile.TemporaryDirectory()
        self.server = RedisServer(binary, Path(self._dir.name))
        self.server.start()
        # A subscriber stopped on purpose (the receive test) must not be cut off.
        self.server.command("CONFIG", "SET", "client-output-buffer-limit", "pubsub 0 0 0")
        self.url = self.server.url

    def numsub(self, channel: str) -> int:
        return self.server.subscribers(channel.encode())

    def channels(self, pattern: str) -> int:
        """How many channels match ``pattern`` (``PUBSUB CHANNELS``), reading
        only the length of the reply, so that polling it stays cheap."""
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=5.0) as sock:
            pattern_bytes = pattern.encode()
            sock.sendall(
                b"*3\r\n$6\r\nPUBSUB\r\n$8\r\nCHANNELS\r\n$%d\r\n%s\r\n"
                % (len(pattern_bytes), pattern_bytes)
            )
            head = b""
            while b"\r\n" not in head:
                data = sock.recv(4096)
                if not data:
                    raise ConnectionError("redis closed the connection")
                head += data
            return int(head[1 : head.index(b"\r\n")])

    def until(self, condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise ChildError(f"timed out waiting until {what}")
            time.sleep(0.002)

    def close(self) -> None:
        self.server.kill()
        self._dir.cleanup()


def start_node(impl: str, redis: Redis, name: str) -> tuple[Child, int]:
    child = Child(name, impl, redis.url, script=NODE)
    try:
        port = int(child.receive(STEP_TIMEOUT)["port"])
    except BaseException:
        stop_all([child], STOP_TIMEOUT)
        raise
    return child, port


def channel(impl: str) -> str:
    """The Redis channel room ``bench`` travels on."""
    return f"bench:r:{ROOM}" if impl == "trio_ws" else "bench"


def run_pair(impl: str, redis: Redis, args: argparse.Namespace) -> dict[str, float]:
    """Measurements 1-3 for ``impl``: nodes A and B, and the clients."""
    proto = IMPLS[impl][0]
    out: dict[str, float] = {}
    children: list[Child] = []
    try:
        a, port_a = start_node(impl, redis, f"{impl} A")
        children.append(a)
        b, port_b = start_node(impl, redis, f"{impl} B")
        children.append(b)
        clients = Child(
            f"{impl} clients",
            proto,
            ROOM,
            f"{port_a}:1",
            f"{port_b}:{args.members}",
            script=CLIENTS,
        )
        children.insert(0, clients)
        clients.receive(STEP_TIMEOUT)
        redis.until(lambda: redis.numsub(channel(impl)) == 2, "A and B subscribe")
        received = 0  # messages each client has had

        def publish(n: int, every: int = 0) -> dict[str, Any]:
            nonlocal received
            got = a.request(
                {"cmd": "publish", "n": n, "size": SIZE, "room": ROOM, "yield_every": every},
                STEP_TIMEOUT,
            )
            received += n
            until = clients.request(
                {"cmd": "until", "count": received, "timeout": STEP_TIMEOUT}, STEP_TIMEOUT
            )
            if until["t"] is None:
                raise ChildError(f"{impl}: {until['behind']} clients missed messages")
            if got["dropped"]:
                raise ChildError(f"{impl}: A dropped {got['dropped']} messages from its outbox")
            return got

        publish(min(2000, args.messages))  # warm-up
        n = args.messages
        # 1. publish rate
        got = publish(n)
        out["publish"] = n / (got["t_done"] - got["t0"])
        out["publish_cpu"] = got["cpu"] / n
        if impl == "trio_ws":
            got = publish(n, every=1)
            out["publish_yield"] = n / (got["t_done"] - got["t0"])
            out["publish_yield_cpu"] = got["cpu"] / n
        else:  # await sio.emit() in a loop is both: it yields to the loop every time
            out["publish_yield"], out["publish_yield_cpu"] = out["publish"], out["publish_cpu"]
        # 2. receive + fan-out rate: B drains what Redis kept for it.
        b.request({"cmd": "arm", "n": n}, STEP_TIMEOUT)
        send_signal(b, signal.SIGSTOP)
        try:
            a.request(
                {"cmd": "publish", "n": n, "size": SIZE, "room": ROOM, "yield_every": 0},
                STEP_TIMEOUT,
            )
            time.sleep(0.05)  # the last PUBLISH reached Redis's buffer for B
        finally:
            send_signal(b, signal.SIGCONT)
        got = b.request({"cmd": "armed", "timeout": STEP_TIMEOUT}, STEP_TIMEOUT)
        if got["t_last"] is None:
            raise ChildError(f"{impl}: B handed on {got['count']} of {n} messages")
        out["receive"] = n / (got["t_last"] - got["t_first"])
        out["receive_cpu"] = got["cpu"] / n
        received += n
        until = clients.request(
            {"cmd": "until", "count": received, "timeout": STEP_TIMEOUT}, STEP_TIMEOUT
        )
        if until["t"] is None:
            raise ChildError(f"{impl}: {until['behind']} clients missed messages")
        # 3. latency at paced rates
        for rate in args.rates:
            clients.request({"cmd": "record"}, STEP_TIMEOUT)
            got = a.request(
                {
                    "cmd": "paced",
                    "rate": rate,
                    "seconds": args.seconds,
                    "size": SIZE,
                    "room": ROOM,
                },
                STEP_TIMEOUT,
            )
            received += int(got["sent"])
            until = clients.request(
                {"cmd": "until", "count": received, "timeout": STEP_TIMEOUT}, STEP_TIMEOUT
            )
            if until["t"] is None:
                raise ChildError(f"{impl}: {until['behind']} clients missed messages")
            delays = clients.request({"cmd": "delays"}, STEP_TIMEOUT)["delays"]
            local, remote = delays[0], [d for conn in delays[1:] for d in conn]
            at = f"@{rate:g}"
            out["achieved" + at] = got["sent"] / (got["t1"] - got["t0"])
            for name, values in (("local", local), ("cross", remote)):
                out[f"{name}_p50{at}"] = percentile(values, 50)
                out[f"{name}_p99{at}"] = percentile(values, 99)
            for q in ("p50", "p99"):
                out[f"added_{q}{at}"] = out[f"cross_{q}{at}"] - out[f"local_{q}{at}"]
        if impl == "trio_ws":
            stats = b.request({"cmd": "stats"}, STEP_TIMEOUT)
            if stats["gaps"] or stats["outbox_dropped"] or stats["reconnects"]:
                raise ChildError(f"{impl}: B reports loss: {stats}")
    finally:
        stop_all(children, STOP_TIMEOUT)
    return out


def run_workers(workers: int, redis: Redis, args: argparse.Namespace) -> float:
    """Measurement 4: deliveries per second to ``args.clients`` clients on
    ``workers`` worker nodes, from a publisher node."""
    children: list[Child] = []
    try:
        publisher, _ = start_node("trio_ws", redis, "publisher")
        children.append(publisher)
        ports = []
        for index in range(workers):
            worker, port = start_node("trio_ws", redis, f"worker {index + 1}/{workers}")
            children.append(worker)
            ports.append(port)
        share = [args.clients // workers + (i < args.clients % workers) for i in range(workers)]
        clients = Child(
            "clients",
            "ws",
            ROOM,
            *(f"{port}:{n}" for port, n in zip(ports, share, strict=True)),
            script=CLIENTS,
        )
        children.insert(0, clients)
        clients.receive(STEP_TIMEOUT)
        redis.until(lambda: redis.numsub(channel("trio_ws")) == workers, "the workers subscribe")
        received = 0
        rates = []
        for burst in range(args.bursts + 1):
            got = publisher.request(
                {"cmd": "publish", "n": args.burst, "size": SIZE, "room": ROOM, "yield_every": 1},
                STEP_TIMEOUT,
            )
            received += args.burst
            until = clients.request(
                {"cmd": "until", "count": received, "timeout": STEP_TIMEOUT}, STEP_TIMEOUT
            )
            if until["t"] is None:
                raise ChildError(f"{until['behind']} clients missed messages")
            if burst:  # the first is a warm-up
                rates.append(args.clients * args.burst / (until["t"] - got["t0"]))
        return statistics.median(rates)
    finally:
        stop_all(children, STOP_TIMEOUT)


def run_resubscribe(redis: Redis, args: argparse.Namespace) -> tuple[float, float]:
    """Measurement 5: seconds to subscribe ``args.rooms`` rooms at first, and
    to subscribe them again after ``CLIENT KILL TYPE pubsub``."""
    children: list[Child] = []
    pattern = "bench:r:r*"
    try:
        node, port = start_node("trio_ws", redis, "node")
        children.append(node)
        clients = Child("clients", "ws", ROOM, f"{port}:10", script=CLIENTS)
        children.insert(0, clients)
        clients.receive(STEP_TIMEOUT)
        t0 = time.monotonic()
        node.request({"cmd": "rooms", "n": args.rooms}, STEP_TIMEOUT)
        redis.until(lambda: redis.channels(pattern) == args.rooms, "the rooms are subscribed")
        first = time.monotonic() - t0
        time.sleep(0.2)
        killed = time.monotonic()
        redis.server.command("CLIENT", "KILL", "TYPE", "pubsub")
        if redis.channels(pattern) == args.rooms:
            raise ChildError("CLIENT KILL TYPE pubsub left the subscriptions in place")
        redis.until(lambda: redis.channels(pattern) == args.rooms, "the rooms are resubscribed")
        again = time.monotonic() - killed
        stats = node.request({"cmd": "stats"}, STEP_TIMEOUT)
        if stats["reconnects"] < 1:
            raise ChildError(f"the node did not notice the kill: {stats}")
        return first, again
    finally:
        stop_all(children, STOP_TIMEOUT)


class OtherLoad:
    """CPU time that processes other than this benchmark's took while it ran
    (Linux: the machine's busy time from /proc/stat, minus ours and our
    children's), so that a reader can tell a quiet run from a disturbed one."""

    def __init__(self) -> None:
        self._start = self._busy(), self._ours()

    @staticmethod
    def _busy() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _ours() -> float:
        me, children = (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
        return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime

    def seconds(self) -> float | None:
        """CPU seconds used by others since we started (None if unknown)."""
        busy, ours = self._busy(), self._ours()
        if busy is None or self._start[0] is None:
            return None
        return max(0.0, (busy - self._start[0]) - (ours - self._start[1]))


# -- the report --------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    key: str
    label: str
    unit: str  # "rate", "ms", "us", "s"
    target: str = ""


def latency_lines(rate: float) -> list[Line]:
    at = f"@{rate:g}"
    first = f"3. at {rate:,.0f} msg/s"
    p50, p99 = ("< 1", "< 5") if rate == 5000 else ("", "")
    return [
        Line("achieved" + at, f"{first}: rate achieved by A (msg/s)", "rate"),
        Line("local_p50" + at, f"{first}: latency, client on A (local), p50 (ms)", "ms"),
        Line("local_p99" + at, f"{first}: latency, client on A (local), p99 (ms)", "ms"),
        Line("cross_p50" + at, f"{first}: latency, client on B (through Redis), p50 (ms)", "ms"),
        Line("cross_p99" + at, f"{first}: latency, client on B (through Redis), p99 (ms)", "ms"),
        Line("added_p50" + at, f"{first}: added by the Redis hop, p50 (ms)", "ms", p50),
        Line("added_p99" + at, f"{first}: added by the Redis hop, p99 (ms)", "ms", p99),
    ]


LINES = [
    Line("publish", "1. publish rate per process, loop without await (msg/s)", "rate", "≥ 30,000"),
    Line("publish_cpu", "1. CPU per published message (µs)", "us"),
    Line(
        "publish_yield",
        "1b. publish rate, a checkpoint after each broadcast (msg/s)",
        "rate",
        "≥ 30,000",
    ),
    Line("publish_yield_cpu", "1b. CPU per published message (µs)", "us"),
    Line("receive", "2. receive + fan-out rate per process (msg/s)", "rate", "≥ 15,000"),
    Line("receive_cpu", "2. CPU per received message (µs)", "us"),
    Line("workers_1", "4. deliveries/s to 1,000 clients, 1 worker", "rate"),
    Line("workers_2", "4. deliveries/s to 1,000 clients, 2 workers", "rate"),
    Line("workers_ratio", "4. 2 workers / 1 worker", "x"),
    Line("resub_first", "5. subscribe 10,000 rooms at first (s)", "s"),
    Line("resub", "5. resubscribe 10,000 rooms after CLIENT KILL (s)", "s", "< 1"),
]
#: Where the latency lines go (one set per paced rate).
LATENCY_AT = 6


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "rate":
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value * 1000:.2f}"
    if unit == "us":
        return f"{value * 1e6:.1f}"
    if unit == "s":
        return f"{value:.3f}"
    return f"{value:.2f}"


def versions() -> str:
    found = [f"Python {platform.python_version()}"]
    for name in ("trio", "coredis", "python-socketio", "redis", "aiohttp"):
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def report(
    rounds: dict[str, list[dict[str, float]]],
    args: argparse.Namespace,
    command: str,
    wall: float,
    redis_version: str,
    others: float | None,
) -> str:
    keys = list(rounds)
    other = next((key for key in keys if key != BASELINE), None)
    head = ["measurement", *keys]
    if BASELINE in keys and other:
        head.append(f"ratio {BASELINE} / {other}")
    head.append("target")
    rates = " and ".join(f"{rate:,.0f}" for rate in args.rates)
    disturbed = ""
    if others is not None:
        disturbed = f" (other processes on the machine: {others:.0f} CPU-seconds meanwhile)"
    lines = [
        f"`{command}`: {args.rounds} round{'s' if args.rounds > 1 else ''}, "
        f"{args.messages:,} messages of {SIZE} bytes for 1 and 2, {args.members} clients "
        f"on node B, {rates} msg/s for {args.seconds:g} s "
        f"for 3, {args.bursts} bursts of {args.burst} for 4, "
        f"{args.rooms:,} rooms for 5; medians over rounds; {wall:.0f} s{disturbed}; redis-server "
        f"{redis_version} on 127.0.0.1; {versions()}",
        "",
        "| " + " | ".join(head) + " |",
        "|---|" + "--:|" * (len(head) - 2) + "---|",
    ]
    latency = [line for rate in args.rates for line in latency_lines(rate)]
    lines_wanted = LINES[:LATENCY_AT] + latency + LINES[LATENCY_AT:]
    for line in lines_wanted:
        cells = [line.label]
        found = False
        for key in keys:
            values = [r[line.key] for r in rounds[key] if line.key in r]
            found = found or bool(values)
            cells.append(fmt(statistics.median(values) if values else None, line.unit))
        if not found:
            continue
        if BASELINE in keys and other:
            pairs = [
                (b[line.key], o[line.key])
                for b, o in zip(rounds[BASELINE], rounds[other], strict=False)
                if line.key in b and line.key in o and o[line.key]
            ]
            cells.append(f"{statistics.median(b / o for b, o in pairs):.2f}" if pairs else "")
        cells.append(line.target)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Ratios are per round, then the median: {BASELINE} / {other} for every line, so "
        "above 1 is better for rates and below 1 is better for times."
        if other
        else ""
    )
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/backplane.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rounds", type=int, help=f"(default {DEFAULTS['rounds']})")
    parser.add_argument(
        "--messages", type=int, help=f"messages for 1 and 2 (default {DEFAULTS['messages']})"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        help=f"seconds of paced messages for 3 (default {DEFAULTS['seconds']})",
    )
    parser.add_argument(
        "--rates",
        default="5000,1000",
        help="paced rates for 3, msg/s, comma-separated (default 5000,1000)",
    )
    parser.add_argument("--members", type=int, default=4, help="clients on node B (default 4)")
    parser.add_argument("--clients", type=int, default=1000, help="clients for 4 (default 1000)")
    parser.add_argument("--bursts", type=int, help=f"bursts for 4 (default {DEFAULTS['bursts']})")
    parser.add_argument(
        "--burst", type=int, help=f"messages per burst (default {DEFAULTS['burst']})"
    )
    parser.add_argument("--rooms", type=int, default=10_000, help="rooms for 5 (default 10000)")
    parser.add_argument("--only", help=f"comma-separated, from {','.join(IMPLS)}")
    parser.add_argument("--skip", default="", help="comma-separated measurements to skip: 4,5")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 1 round, fewer messages"
    )
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.keys = args.only.split(",") if args.only else list(IMPLS)
    unknown = [key for key in args.keys if key not in IMPLS]
    if unknown:
        parser.error(f"unknown implementation {unknown}: choose from {', '.join(IMPLS)}")
    args.skip = set(args.skip.split(",")) - {""}
    args.rates = [float(rate) for rate in args.rates.split(",")]
    return args


def missing(keys: Sequence[str]) -> list[str]:
    return [
        f"{key} needs {module}"
        for key in keys
        for module in IMPLS[key][1]
        if importlib.util.find_spec(module) is None
    ]


def _terminate(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)  # so that the processes are stopped on the way out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if problems := missing(args.keys):
        print(
            "error: " + "; ".join(problems) + " (pip install 'trio_ws[redis]' "
            "'python-socketio[asyncio_client]' redis aiohttp, or leave it out with --only)",
            file=sys.stderr,
        )
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    command = shlex.join(
        ["python", *(sys.argv if argv is None else ["bench/backplane.py", *argv])]
    )
    log(command)
    redis = Redis()
    info = redis.server.command("INFO", "server").decode()
    redis_version = info.split("redis_version:")[1].split()[0]
    results: dict[str, list[dict[str, float]]] = {key: [] for key in args.keys}
    begin = time.monotonic()
    load = OtherLoad()
    try:
        for index in range(args.rounds):
            shift = index % len(args.keys)
            for key in [*args.keys[shift:], *args.keys[:shift]]:
                results[key].append(run_pair(key, redis, args))
            if "trio_ws" in args.keys:
                extra = results["trio_ws"][-1]
                if "4" not in args.skip:
                    extra["workers_1"] = run_workers(1, redis, args)
                    extra["workers_2"] = run_workers(2, redis, args)
                    extra["workers_ratio"] = extra["workers_2"] / extra["workers_1"]
                if "5" not in args.skip:
                    extra["resub_first"], extra["resub"] = run_resubscribe(redis, args)
            log(f"round {index + 1}/{args.rounds} done ({time.monotonic() - begin:.0f} s)")
    except ChildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        redis.close()
    wall = time.monotonic() - begin
    print(report(results, args, command, wall, redis_version, load.seconds()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
