"""An echo client: send messages, check that each comes back unchanged.

    python examples/echo_client.py ws://127.0.0.1:8765/ hello world
    python examples/echo_client.py                  # starts its own echo server

Without a URL the client starts the server of ``echo_server.py`` on a free
port in the same program, so the pair can be tried with one command. Without
messages it sends a few text messages and one binary message. The exit
status is 0 when every message came back, 1 otherwise.
"""

from __future__ import annotations

import argparse
import functools
import sys

import trio
from echo_server import echo

import trio_ws

DEFAULT_MESSAGES: list[str | bytes] = ["hello", "wörld, in UTF-8", b"\x00\x01\x02 binary"]


async def run_client(url: str, messages: list[str | bytes]) -> bool:
    """Send each message and wait for its echo; return True if all came back."""
    ok = True
    try:
        async with trio_ws.connect(url) as ws:
            print(f"connected to {url}")
            for message in messages:
                await ws.send(message)
                reply = await ws.receive()
                print(f"> {message!r}\n< {reply!r}")
                ok = ok and reply == message
    except trio_ws.HandshakeError as exc:
        print(f"could not connect: {exc}", file=sys.stderr)
        return False
    except trio_ws.ConnectionClosed as exc:
        print(f"connection lost: {exc}", file=sys.stderr)
        return False
    print(f"closed: {ws.close_info}")
    return ok


async def main(url: str | None, messages: list[str | bytes]) -> bool:
    if url is not None:
        return await run_client(url, messages)
    async with trio.open_nursery() as nursery:
        server: trio_ws.Server = await nursery.start(
            functools.partial(trio_ws.serve, echo, "127.0.0.1", 0)
        )
        print(f"no URL given: started an echo server on port {server.port}")
        ok = await run_client(f"ws://127.0.0.1:{server.port}/", messages)
        nursery.cancel_scope.cancel()
    return ok


def parse_args() -> tuple[str | None, list[str | bytes]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "words", nargs="*", metavar="[URL] MESSAGE", help="a ws:// or wss:// URL, then messages"
    )
    words = parser.parse_args().words
    url = None
    if words and words[0].startswith(("ws://", "wss://")):
        url = words.pop(0)
    return url, list(words) or DEFAULT_MESSAGES


if __name__ == "__main__":
    url, messages = parse_args()
    sys.exit(0 if trio.run(main, url, messages) else 1)
