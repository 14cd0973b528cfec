"""One connection, opened by a function that returns it, shared by two tasks.

    python examples/background_connection.py [URL]

``start_connection(nursery, url)`` opens a connection whose background tasks
live in ``nursery``, so it outlives the function that opened it. Here a
reader task prints everything that arrives while a writer task sends
commands; neither waits for the other. When the server closes the
connection, the reader's ``async for`` ends, the nursery has nothing left to
run, and the program ends.

Without a URL the program starts its own server: it answers each command in
upper case, pushes a notification now and then, and closes the connection
with 1000 when it receives ``quit``.
"""

from __future__ import annotations

import functools
import sys

import trio

import trio_ws

COMMANDS = ["hello", "how are you", "still there?", "quit"]


async def upper_case_service(ws: trio_ws.WebSocket) -> None:
    """Answers commands and pushes notifications, independently."""
    async with trio.open_nursery() as nursery:

        async def notifications() -> None:
            n = 0
            while True:
                n += 1
                try:
                    await ws.send(f"notification {n}")
                except trio_ws.ConnectionClosed:
                    return
                await trio.sleep(0.015)

        nursery.start_soon(notifications)
        try:
            async for command in ws:
                if command == "quit":
                    await ws.send("bye")
                    break
                await ws.send(str(command).upper())
        except trio_ws.ConnectionClosed:
            pass  # the client went away without a normal close
        nursery.cancel_scope.cancel()
    # Returning closes the connection with 1000.


async def open_session(nursery: trio.Nursery, url: str) -> trio_ws.WebSocket:
    """Open a connection owned by ``nursery``; it stays open after we return."""
    ws = await trio_ws.start_connection(nursery, url, headers={"User-Agent": "example/1.0"})
    print(f"connected to {url} (connection {ws.id})")
    return ws


async def reader(ws: trio_ws.WebSocket) -> None:
    async for message in ws:
        print(f"  reader: {message!r}")
    print(f"  reader: connection closed: {ws.close_info}")


async def writer(ws: trio_ws.WebSocket) -> None:
    for command in COMMANDS:
        print(f"  writer: sending {command!r}")
        try:
            await ws.send(command)
        except trio_ws.ConnectionClosed:
            return
        await trio.sleep(0.02)


async def run(url: str) -> None:
    async with trio.open_nursery() as nursery:
        ws = await open_session(nursery, url)  # returns; the connection stays open
        nursery.start_soon(reader, ws)
        nursery.start_soon(writer, ws)
    # The nursery ended because the connection did: nothing is left running.
    info = ws.close_info
    assert info is not None
    print(f"done: closed with {info.code}, by the peer: {info.by_peer}")


async def main(url: str | None) -> None:
    if url is not None:
        await run(url)
        return
    async with trio.open_nursery() as server_nursery:
        server: trio_ws.Server = await server_nursery.start(
            functools.partial(trio_ws.serve, upper_case_service, "127.0.0.1", 0)
        )
        await run(f"ws://127.0.0.1:{server.port}/")
        server_nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else None)
