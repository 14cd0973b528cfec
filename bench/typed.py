"""Typed messages against plain JSON, in one run: what ``trio_ws.typed``
costs per message over ``send_json``/``receive_json`` with dicts.

    python bench/typed.py            # about 20 s
    python bench/typed.py --quick

Two measurements, rounds interleaved, medians and paired ratios:

- **round trips**: a client sends a chat message and receives the server's
  answer, over loopback in one process; the server echoes the text it gets
  untouched, so both sides' costs differ only in the client's encoding,
  decoding and validation (typed: encode an attrs instance, decode and
  validate the answer into one; plain: ``json.dumps`` a dict and
  ``json.loads`` the answer);
- **codec alone**: encode + decode of the same message, no I/O.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time

import attrs
import trio

import trio_ws


@attrs.frozen
class Chat:
    room: str
    name: str
    text: str
    mentions: list[str] = attrs.field(factory=list)


@attrs.frozen
class Join:
    room: str
    name: str


MESSAGE = Chat("lobby", "ann", "hello everyone, how is it going today?", ["bo", "cy"])
AS_DICT = {"type": "chat", **attrs.asdict(MESSAGE)}
CODEC: trio_ws.MessageCodec[Chat | Join] = trio_ws.MessageCodec(Chat | Join)


async def _echo(ws: trio_ws.WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


async def _typed_round_trips(ws: trio_ws.WebSocket, count: int) -> int:
    chat = trio_ws.typed(ws, receive=CODEC, send=CODEC)
    start = time.perf_counter_ns()
    for _ in range(count):
        await chat.send(MESSAGE)
        reply = await chat.receive()
    elapsed = time.perf_counter_ns() - start
    assert reply == MESSAGE
    return elapsed


async def _plain_round_trips(ws: trio_ws.WebSocket, count: int) -> int:
    start = time.perf_counter_ns()
    for _ in range(count):
        await ws.send_json(AS_DICT)
        reply = await ws.receive_json()
    elapsed = time.perf_counter_ns() - start
    assert reply == AS_DICT
    return elapsed


def _codec_typed(count: int) -> int:
    start = time.perf_counter_ns()
    for _ in range(count):
        CODEC.decode(CODEC.encode(MESSAGE))
    return time.perf_counter_ns() - start


def _codec_plain(count: int) -> int:
    dumps = functools.partial(json.dumps, separators=(",", ":"), ensure_ascii=False)
    start = time.perf_counter_ns()
    for _ in range(count):
        json.loads(dumps(AS_DICT))
    return time.perf_counter_ns() - start


def _row(name: str, typed: list[float], plain: list[float]) -> str:
    ratios = [t / p for t, p in zip(typed, plain, strict=True)]
    return (
        f"| {name} | {statistics.median(plain):.1f} | {statistics.median(typed):.1f} "
        f"| {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |"
    )


async def main(rounds: int, count: int) -> None:
    trip = {"typed": [], "plain": []}
    codec = {"typed": [], "plain": []}
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(trio_ws.serve, _echo, "127.0.0.1", 0, compression=None)
        )
        url = f"ws://127.0.0.1:{server.port}/"
        async with trio_ws.connect(url, compression=None) as ws:
            await _plain_round_trips(ws, count // 5)  # warm-up
            await _typed_round_trips(ws, count // 5)
            for index in range(rounds):
                runs = [("typed", _typed_round_trips), ("plain", _plain_round_trips)]
                for kind, run in runs if index % 2 == 0 else runs[::-1]:
                    trip[kind].append(await run(ws, count) / count / 1000)
                codec["typed"].append(_codec_typed(count * 5) / count / 5 / 1000)
                codec["plain"].append(_codec_plain(count * 5) / count / 5 / 1000)
                print(f"round {index + 1}/{rounds}", file=sys.stderr, flush=True)
        nursery.cancel_scope.cancel()
    print("| per message | plain JSON (dict), µs | typed (attrs), µs | typed / plain |")
    print("|---|--:|--:|--:|")
    print(_row("round trip over loopback", trip["typed"], trip["plain"]))
    print(_row("encode + decode alone", codec["typed"], codec["plain"]))
    print(
        f"\nMedians (min-max of the paired ratios) over {rounds} rounds of {count} round "
        f"trips; message: {json.dumps(AS_DICT)}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="bench/typed.py", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 300")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.count = 3, 300
    trio.run(main, args.rounds, args.count)
