"""A deliberately low-level WebSocket peer for tests: it writes whatever
frames a test asks for (broken ones included) and reads the other side's
frames with wsproto."""

from __future__ import annotations

import os
import struct

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import Extension
from wsproto.utilities import generate_accept_token

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
) -> bytes:
    """Build one frame by hand (RFC 6455 5.2)."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


class RawClient:
    """A client that has done the handshake and then speaks raw frames."""

    def __init__(self, stream: trio.SocketStream, conn: Connection) -> None:
        self.stream = stream
        self.conn = conn
        self.events: list[Event] = []

    @classmethod
    async def connect(
        cls, port: int, path: str = "/", extensions: list[Extension] | None = None
    ) -> RawClient:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        ws = WSConnection(ConnectionType.CLIENT)
        request = Request(host=f"127.0.0.1:{port}", target=path, extensions=extensions or [])
        await stream.send_all(ws.send(request))
        while True:
            data = await stream.receive_some(65536)
            assert data, "server closed during the handshake"
            ws.receive_data(data)
            if any(isinstance(e, AcceptConnection) for e in ws.events()):
                break
        assert ws.connection is not None
        client = cls(stream, ws.connection)
        client.events.extend(client.conn.events())
        return client

    async def ping_pong(self) -> None:
        """Ping and wait for the pong: proves the server is reading."""
        await self.send(frame(PING, b"rawpeer"))
        while not isinstance(await self.next_event(), Pong):
            pass

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def next_event(self) -> Event | None:
        """The next event from the server; None at end of stream."""
        while not self.events:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                return None
            self.conn.receive_data(data)
            self.events.extend(self.conn.events())
        return self.events.pop(0)

    async def until_close(self) -> tuple[int, str] | None:
        """Read until the server's close frame; return (code, reason), or None
        when the stream ended without one. Messages are collected in ``messages``."""
        self.messages: list[str | bytes] = getattr(self, "messages", [])
        while True:
            event = await self.next_event()
            if event is None:
                return None
            if isinstance(event, CloseConnection):
                return event.code, event.reason or ""
            if isinstance(event, (TextMessage, BytesMessage)):
                self.messages.append(event.data)
            elif isinstance(event, (Ping, Pong)):
                pass

    async def aclose(self) -> None:
        await self.stream.aclose()


async def raw_accept(stream: trio.SocketStream, extra: bytes = b"", then: bytes = b"") -> None:
    """Act as a bare server: :func:`raw_answer`, then stay silent forever."""
    await raw_answer(stream, extra, then)
    await trio.sleep_forever()


async def raw_answer(stream: trio.SocketStream, extra: bytes = b"", then: bytes = b"") -> None:
    """Read the client's request, answer 101 with the right accept key plus
    ``extra`` header lines, then send ``then`` (frames) in the same write."""
    request = await stream.receive_some(65536)
    key = request.split(b"Sec-WebSocket-Key: ")[1].split(b"\r\n")[0]
    await stream.send_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
        + generate_accept_token(key)
        + b"\r\n"
        + extra
        + b"\r\n"
        + then
    )
