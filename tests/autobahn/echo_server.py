"""A trio_ws echo server for the Autobahn|Testsuite ``fuzzingclient`` mode.

Usage: ``python tests/autobahn/echo_server.py PORT`` (``0`` picks a free port).

It listens on 127.0.0.1 only, sends every message back unchanged and, once
listening, prints one line ``ready PORT`` on stdout (and nothing else there).
Log records go to stderr. SIGINT and SIGTERM stop it cleanly.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys

import trio

import trio_ws

HOST = "127.0.0.1"
#: Autobahn's largest messages (cases 9.1.6 and 9.2.6) are 16 MiB.
DEFAULT_MAX_MESSAGE_SIZE = 32 * 2**20


async def echo(ws: trio_ws.WebSocket) -> None:
    """Send every message back; return when the peer closes."""
    async for message in ws:
        await ws.send(message)


async def serve_until_signalled(port: int, max_message_size: int | None, max_queue: int) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server: trio_ws.Server = await nursery.start(
                functools.partial(
                    trio_ws.serve,
                    echo,
                    HOST,
                    port,
                    max_message_size=max_message_size,
                    max_queue=max_queue,
                )
            )
            print(f"ready {server.port}", flush=True)
            async for signum in signals:
                logging.getLogger(__name__).info("signal %d: stopping", signum)
                await server.aclose()
                nursery.cancel_scope.cancel()
                break


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument(
        "--max-message-size",
        type=lambda text: None if text.lower() == "none" else int(text),
        default=DEFAULT_MAX_MESSAGE_SIZE,
        help="largest message accepted, in bytes, or 'none' (default: %(default)s)",
    )
    parser.add_argument("--max-queue", type=int, default=16)
    parser.add_argument("--log-level", default="INFO", help="for the trio_ws logger")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    trio.run(serve_until_signalled, args.port, args.max_message_size, args.max_queue)
    return 0


if __name__ == "__main__":
    sys.exit(main())
