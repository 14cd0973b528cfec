"""A receive loop that wakes up on a schedule to do other work, and loses nothing.

    python examples/timeout_receive_loop.py [--count 200] [--tick 0.02]

A server sends ``--count`` numbered messages in bursts separated by pauses.
The client receives them in a loop whose ``receive()`` is cancelled every
``--tick`` seconds, so that it can do other work (here: count and report)
whether or not messages are arriving. Because a cancelled ``receive()`` takes
no message, the client still gets every message exactly once, in order; the
program checks that and exits with status 1 if it is not so.
"""

from __future__ import annotations

import argparse
import functools
import random
import sys

import trio

import trio_ws


async def bursty_producer(ws: trio_ws.WebSocket, count: int) -> None:
    """Send 0 .. count-1: bursts of back-to-back messages, then a pause."""
    rng = random.Random(42)
    n = 0
    while n < count:
        for _ in range(rng.randint(1, 25)):
            if n == count:
                break
            await ws.send(str(n))
            n += 1
        await trio.sleep(rng.uniform(0, 0.05))
    await ws.wait_closed()  # let the client close when it is done


async def consume(ws: trio_ws.WebSocket, count: int, tick: float) -> tuple[list[int], int]:
    """Receive ``count`` messages, doing other work every ``tick`` seconds.

    Returns the numbers received and how many times the loop woke up."""
    received: list[int] = []
    wakeups = 0
    next_tick = trio.current_time() + tick
    while len(received) < count:
        message = None
        # Only the receive is inside the cancel scope: handling a message is
        # never interrupted by the timer.
        with trio.move_on_at(next_tick):
            message = await ws.receive()
        if message is None:
            # The deadline came first. Other work goes here; the message that
            # was about to arrive is still there for the next receive().
            wakeups += 1
            next_tick += tick
            if wakeups % 10 == 0:
                print(f"  tick {wakeups}: {len(received)} messages so far")
            continue
        received.append(int(message))
    return received, wakeups


async def main(count: int, tick: float) -> bool:
    async with trio.open_nursery() as nursery:
        server: trio_ws.Server = await nursery.start(
            functools.partial(
                trio_ws.serve,
                functools.partial(bursty_producer, count=count),
                "127.0.0.1",
                0,
            )
        )
        async with trio_ws.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            received, wakeups = await consume(ws, count, tick)
        nursery.cancel_scope.cancel()

    in_order = received == list(range(count))
    print(f"woke up {wakeups} times to do other work while receiving")
    if in_order:
        print(f"received all {count} messages exactly once, in order")
    else:
        print(f"MISMATCH: received {len(received)} messages: {received}")
    return in_order


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="messages to send")
    parser.add_argument("--tick", type=float, default=0.02, help="seconds between wake-ups")
    args = parser.parse_args()
    sys.exit(0 if trio.run(main, args.count, args.tick) else 1)
