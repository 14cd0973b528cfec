"""websockets.trio (websockets 17.4): its trio client against its trio server.

``compression=None`` on both sides, so that every implementation frames
messages uncompressed (unless ``run.py --compression default``); other
settings are the library's defaults (including its keepalive pings every
20 s). ``proxy=None`` connects directly whatever the environment's proxy
settings.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from control import compression
from websockets.trio.client import connect as ws_connect
from websockets.trio.server import serve as ws_serve

from ._websockets_api import echo, handler

__all__ = ["connect", "echo", "serve"]


@asynccontextmanager
async def serve() -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        start = functools.partial(ws_serve, handler, 0, host="127.0.0.1", **compression())
        server = await nursery.start(start)
        yield server.listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


def connect(url: str) -> ws_connect:
    return ws_connect(url, proxy=None, **compression())
