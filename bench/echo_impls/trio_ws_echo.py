"""trio_ws: ``trio_ws.connect`` against ``trio_ws.serve``; compression off (as for every
implementation) unless ``run.py --compression default``, other options at their defaults."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from control import Payload, compression

import trio_ws


async def _handler(ws: trio_ws.WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


@asynccontextmanager
async def serve() -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(trio_ws.serve, _handler, "127.0.0.1", 0, **compression())
        )
        yield server.port
        nursery.cancel_scope.cancel()


def connect(url: str) -> trio_ws.connect:
    return trio_ws.connect(url, **compression())


async def echo(ws: trio_ws.WebSocket, message: Payload, count: int) -> Payload:
    reply = message
    for _ in range(count):
        await ws.send(message)
        reply = await ws.receive()
    return reply
