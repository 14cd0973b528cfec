"""websockets (17.4) on asyncio: its asyncio client against its asyncio server.

The reference for large messages: websockets masks payloads with its own C
extension. ``compression=None`` on both sides, as for every implementation, unless
``run.py --compression default``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from control import compression
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve

from ._websockets_api import echo, handler

__all__ = ["connect", "echo", "serve"]


@asynccontextmanager
async def serve() -> AsyncIterator[int]:
    async with ws_serve(handler, "127.0.0.1", 0, **compression()) as server:
        sockets = list(server.sockets)
        yield sockets[0].getsockname()[1]


def connect(url: str) -> ws_connect:
    return ws_connect(url, proxy=None, **compression())
