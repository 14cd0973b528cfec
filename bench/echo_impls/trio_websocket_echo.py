"""trio-websocket 0.12.2: ``open_websocket_url`` against ``serve_websocket``,
default options."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import trio
from control import Payload
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)


async def _handler(request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass


@asynccontextmanager
async def serve() -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, _handler, "127.0.0.1", 0, None)
        yield server.port
        nursery.cancel_scope.cancel()


def connect(url: str) -> AbstractAsyncContextManager[WebSocketConnection]:
    return open_websocket_url(url)


async def echo(ws: WebSocketConnection, message: Payload, count: int) -> Payload:
    reply = message
    for _ in range(count):
        await ws.send_message(message)
        reply = await ws.get_message()
    return reply
