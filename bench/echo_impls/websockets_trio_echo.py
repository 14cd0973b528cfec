"""websockets.trio (websockets 17.4): its trio client against its trio server.

``compression=None`` on both sides, so that every implementation frames
messages uncompressed; other settings are the library's defaults (including
its keepalive pings every 20 s). ``proxy=None`` connects directly whatever the
environment's proxy settings.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from control import Payload
from websockets.trio.client import ClientConnection
from websockets.trio.client import connect as ws_connect
from websockets.trio.server import ServerConnection
from websockets.trio.server import serve as ws_serve


async def _handler(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


@asynccontextmanager
async def serve() -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        start = functools.partial(ws_serve, _handler, 0, host="127.0.0.1", compression=None)
        server = await nursery.start(start)
        yield server.listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


def connect(url: str) -> ws_connect:
    return ws_connect(url, compression=None, proxy=None)


async def echo(ws: ClientConnection, message: Payload, count: int) -> Payload:
    reply: Payload = message
    for _ in range(count):
        await ws.send(message)
        reply = await ws.recv()
    return reply
