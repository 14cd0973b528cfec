"""The floor: a bare trio + wsproto echo loop, one task per side.

No background tasks, no queues, no locks: the server reads the socket, feeds
wsproto and writes each complete message straight back; the client writes one
message, then reads until its echo is complete. Any trio library built on
wsproto pays at least this; the gap between it and a library is the cost of
that library's design.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import trio
from control import Payload
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)


def _frame(ws: WSConnection, message: Payload) -> bytes:
    if isinstance(message, str):
        return ws.send(TextMessage(data=message))
    return ws.send(BytesMessage(data=message))


def _join(parts: list[Any]) -> Payload:
    """A message from the pieces wsproto handed over (str for text)."""
    if len(parts) == 1:
        return parts[0]  # type: ignore[no-any-return]
    return ("" if isinstance(parts[0], str) else b"").join(parts)


async def _echo_connection(stream: trio.SocketStream) -> None:
    ws = WSConnection(ConnectionType.SERVER)
    parts: list[Any] = []
    while True:
        data = await stream.receive_some()
        ws.receive_data(data or None)
        for event in ws.events():
            if isinstance(event, Message):
                parts.append(event.data)
                if event.message_finished:
                    message = _join(parts)
                    parts.clear()
                    await stream.send_all(_frame(ws, message))
            elif isinstance(event, Request):
                await stream.send_all(ws.send(AcceptConnection()))
            elif isinstance(event, Ping):
                await stream.send_all(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.REMOTE_CLOSING:
                    await stream.send_all(ws.send(event.response()))
                return
        if not data:
            return


@asynccontextmanager
async def serve() -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        start = functools.partial(trio.serve_tcp, _echo_connection, 0, host="127.0.0.1")
        listeners = await nursery.start(start)
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@dataclass
class Client:
    stream: trio.SocketStream
    ws: WSConnection


async def _receive_message(stream: trio.SocketStream, ws: WSConnection) -> Payload:
    parts: list[Any] = []
    while True:
        data = await stream.receive_some()
        if not data:
            raise ConnectionError("the server closed the connection")
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, Message):
                parts.append(event.data)
                if event.message_finished:
                    return _join(parts)
            elif isinstance(event, CloseConnection):
                raise ConnectionError(f"the server closed the connection: {event.code}")


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[Client]:
    parsed = urlsplit(url)
    assert parsed.hostname is not None
    assert parsed.port is not None
    stream = await trio.open_tcp_stream(parsed.hostname, parsed.port)
    async with stream:
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host=parsed.netloc, target=parsed.path or "/")))
        accepted = False
        while not accepted:
            data = await stream.receive_some()
            if not data:
                raise ConnectionError("the server closed the connection during the handshake")
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, RejectConnection):
                    raise ConnectionError(f"handshake rejected: {event.status_code}")
                accepted = accepted or isinstance(event, AcceptConnection)
        yield Client(stream, ws)
        # Closing handshake: send a close frame, read until the server hangs up.
        await stream.send_all(ws.send(CloseConnection(code=1000)))
        with trio.move_on_after(5):
            while await stream.receive_some():
                pass


async def echo(client: Client, message: Payload, count: int) -> Payload:
    stream, ws = client.stream, client.ws
    reply = message
    for _ in range(count):
        await stream.send_all(_frame(ws, message))
        reply = await _receive_message(stream, ws)
    return reply
