"""The echo handler and loop of both websockets implementations: its trio
and asyncio connections have the same ``send``/``recv`` API."""

from __future__ import annotations

from typing import Any

from control import Payload


async def handler(ws: Any) -> None:
    """The server side: send back every message."""
    async for message in ws:
        await ws.send(message)


async def echo(ws: Any, message: Payload, count: int) -> Payload:
    """The timed client loop (see ``echo_impls``)."""
    reply: Payload = message
    for _ in range(count):
        await ws.send(message)
        reply = await ws.recv()
    return reply
