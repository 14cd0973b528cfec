"""websockets (17.4) on asyncio: its asyncio client against its asyncio server.

The reference for large messages: websockets masks payloads with its own C
extension. ``compression=None`` on both sides, as for every implementation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from control import Payload
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve


async def _handler(ws: Any) -> None:
    async for message in ws:
        await ws.send(message)


@asynccontextmanager
async def serve() -> AsyncIterator[int]:
    async with ws_serve(_handler, "127.0.0.1", 0, compression=None) as server:
        sockets = list(server.sockets)
        yield sockets[0].getsockname()[1]


def connect(url: str) -> ws_connect:
    return ws_connect(url, compression=None, proxy=None)


async def echo(ws: ClientConnection, message: Payload, count: int) -> Payload:
    reply: Payload = message
    for _ in range(count):
        await ws.send(message)
        reply = await ws.recv()
    return reply
