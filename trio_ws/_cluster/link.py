"""A plain connection to Redis for the node's publisher and subscriber:
opened from the backplane's URL (``redis://``, ``rediss://`` with TLS,
``unix://``), authenticated, and nothing else. RESP is in resp.py."""

from __future__ import annotations

import ssl
from urllib.parse import parse_qs, unquote, urlsplit

import trio

from .resp import Parser, RedisReplyError, command

__all__ = ["Link", "open_link"]

#: Bytes asked of the socket per read.
READ_SIZE = 1 << 18


class Link:
    """One connection: ``send``, and ``replies()`` to read what came."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.parser = Parser()

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def read(self) -> None:
        """Read what the socket has into the parser; EOFError at its end."""
        data = await self.stream.receive_some(READ_SIZE)
        if not data:
            raise EOFError("Redis closed the connection")
        self.parser.feed(data)

    async def call(self, *args: bytes | str | int) -> object:
        """One command and its reply (only where nothing else is in flight)."""
        await self.send(command(*args))
        while True:
            for reply in self.parser.replies():
                if isinstance(reply, RedisReplyError):
                    raise reply
                return reply
            await self.read()

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self.stream)


async def open_link(url: str) -> Link:
    """Connect to the Redis of ``url`` and authenticate (AUTH) if it says so.
    Pub/sub channels belong to no database, so no SELECT."""
    parts = urlsplit(url)
    stream: trio.abc.Stream
    if parts.scheme == "unix":
        stream = await trio.open_unix_socket(parts.path)
    else:
        stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 6379)
        if parts.scheme == "rediss":
            context = ssl.create_default_context()
            stream = trio.SSLStream(stream, context, server_hostname=parts.hostname)
    link = Link(stream)
    try:
        query = parse_qs(parts.query)
        password = parts.password or next(iter(query.get("password", [])), None)
        username = parts.username
        if password is not None:
            if username:
                await link.call(b"AUTH", unquote(username), unquote(password))
            else:
                await link.call(b"AUTH", unquote(password))
    except BaseException:
        await link.aclose()
        raise
    return link
