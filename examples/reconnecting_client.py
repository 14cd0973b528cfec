"""A client that keeps its conversation going across server restarts.

    python examples/reconnecting_client.py [URL] [--count N] [--interval SECONDS]
                                           [--max-attempts N]

``trio_ws.reconnect(url)`` hands out one open connection per turn of an
``async for``: when the connection is lost, the next turn connects again,
waiting between failed attempts (exponential backoff with full jitter). The
conversation's state lives in the client, so it carries on where it stopped:
here the client sends numbered messages to an echo server and keeps counting
on the new connection. A message whose echo did not come back before the
connection was lost is sent again.

Without a URL the program starts its own echo server, stops it after the
third message, starts it again on the same port once the client has noticed,
and exits after the sixth message. With a URL (an echo server such as
``examples/echo_server.py``) it sends ``--count`` messages, one every
``--interval`` seconds: stop that server and start it again to watch the
client reconnect. ``--max-attempts`` gives up after that many failed attempts
in a row. The library's warnings are logged to stderr.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable

import trio

import trio_ws

DEMO_COUNT = 6
DEMO_RESTART_AFTER = 3

#: Quick retries for a demonstration; the defaults (0.5 s growing to 30 s)
#: suit a real service better.
BACKOFF = trio_ws.Backoff(initial=0.2, max_delay=5.0)


async def echo(ws: trio_ws.WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


def report_failure(attempt: int, delay: float, error: BaseException) -> None:
    print(f"attempt {attempt} failed: {type(error).__name__}; retrying in {delay:.2f} s")


async def converse(
    url: str,
    count: int,
    interval: float,
    *,
    max_attempts: int | None = None,
    on_failure: Callable[[int, float, BaseException], None] = report_failure,
    on_echo: Callable[[int], None] | None = None,
) -> None:
    """Send ``count`` numbered messages, reconnecting whenever needed."""
    echoed = 0  # the conversation's state: it survives the connections
    used = 0
    async with trio_ws.reconnect(
        url, backoff=BACKOFF, max_attempts=max_attempts, on_failure=on_failure
    ) as connections:
        async for ws in connections:
            used += 1
            print(f"connected to {url} (connection #{used})")
            try:
                while echoed < count:
                    await ws.send(f"message {echoed + 1}")
                    print(f"  echoed: {await ws.receive()!r}")
                    echoed += 1
                    if on_echo is not None:
                        on_echo(echoed)
                    await trio.sleep(interval)
            except trio_ws.ConnectionClosed as exc:
                print(f"connection lost: {exc.info}")
            if echoed == count:
                break  # leaving the block closes the connection with 1000
    print(f"done: {count} messages echoed over {used} connections")


async def demo(interval: float) -> None:
    """Run an echo server that restarts once, and the client."""
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio_ws.serve, echo, "127.0.0.1")
        server: trio_ws.Server = await nursery.start(serve, 0)
        port = server.port
        print(f"no URL given: started an echo server on port {port}")
        client_noticed = trio.Event()

        async def restart() -> None:
            print("server: stopping")
            await server.aclose()  # open connections get 1001 Going Away
            await client_noticed.wait()
            await nursery.start(serve, port)
            print(f"server: started again on port {port}")

        def on_echo(echoed: int) -> None:
            if echoed == DEMO_RESTART_AFTER:
                nursery.start_soon(restart)

        def on_failure(attempt: int, delay: float, error: BaseException) -> None:
            report_failure(attempt, delay, error)
            client_noticed.set()

        await converse(
            f"ws://127.0.0.1:{port}/",
            DEMO_COUNT,
            interval,
            on_failure=on_failure,
            on_echo=on_echo,
        )
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", nargs="?", help="an echo server (default: run our own)")
    parser.add_argument("--count", type=int, default=10, help="messages to send (with a URL)")
    parser.add_argument("--interval", type=float, help="seconds between messages")
    parser.add_argument("--max-attempts", type=int, help="give up after this many failures")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.url is None:
            trio.run(demo, 0.05 if args.interval is None else args.interval)
        else:
            interval = 1.0 if args.interval is None else args.interval
            trio.run(
                functools.partial(
                    converse, args.url, args.count, interval, max_attempts=args.max_attempts
                )
            )
    except trio_ws.HandshakeError as exc:  # ReconnectFailed, or not worth retrying
        print(f"could not connect: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
