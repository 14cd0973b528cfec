"""Just enough of RESP (the Redis protocol, version 2) for the backplane's
two streams, without I/O: encoding commands and parsing replies.

The node publishes and reads pub/sub messages on connections of its own
(see link.py) rather than through the client library: one ``send_all`` for a
batch of PUBLISH commands, and every message of one socket read handed on in
one step. Everything else (presence, probes) goes through coredis.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeAlias

__all__ = ["Parser", "RedisReplyError", "Reply", "command", "publish"]


class RedisReplyError(Exception):
    """An error reply (``-ERR ...``) from Redis."""


#: What a reply parses to (simple strings and bulk strings are both bytes).
Reply: TypeAlias = bytes | int | list["Reply"] | RedisReplyError | None


class _Incomplete(Exception):
    """The buffer ends inside a reply."""


def command(*args: bytes | str | int) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def publish(channel: bytes, data: bytes) -> bytes:
    """``PUBLISH channel data``, the hot path's command, encoded directly."""
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(channel),
        channel,
        len(data),
        data,
    )


class Parser:
    """Replies from a byte stream fed in pieces: ``feed(data)``, then
    ``for reply in parser.replies(): ...``."""

    def __init__(self, max_buffer: int = 2**30) -> None:
        self._buffer = bytearray()
        self._max_buffer = max_buffer

    def feed(self, data: bytes | bytearray) -> None:
        self._buffer += data
        if len(self._buffer) > self._max_buffer:
            raise RedisReplyError(f"a reply longer than {self._max_buffer} bytes")

    def replies(self) -> Iterator[Reply]:
        """Each complete reply in the buffer, in order."""
        buffer = self._buffer
        position = 0
        try:
            while position < len(buffer):
                reply, position = self._parse(buffer, position)
                yield reply
        except _Incomplete:
            pass
        finally:
            del buffer[:position]

    def _parse(self, buffer: bytearray, start: int) -> tuple[Reply, int]:
        end = buffer.find(b"\r\n", start)
        if end < 0:
            raise _Incomplete
        kind = buffer[start]
        line = bytes(buffer[start + 1 : end])
        after = end + 2
        if kind == 0x24:  # $ bulk string
            size = int(line)
            if size < 0:
                return None, after
            if len(buffer) < after + size + 2:
                raise _Incomplete
            return bytes(buffer[after : after + size]), after + size + 2
        if kind == 0x2A:  # * array
            count = int(line)
            if count < 0:
                return None, after
            items: list[Reply] = []
            for _ in range(count):
                item, after = self._parse(buffer, after)
                items.append(item)
            return items, after
        if kind == 0x3A:  # : integer
            return int(line), after
        if kind == 0x2B:  # + simple string
            return line, after
        if kind == 0x2D:  # - error
            return RedisReplyError(line.decode("utf-8", "replace")), after
        raise RedisReplyError(f"not a RESP reply: {bytes(buffer[start : end + 2])!r}")
