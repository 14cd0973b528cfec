"""What the writer writes: its jobs (one frame, or a message framed when its
turn comes), their kinds and states, and the byte arithmetic of partly
written frames. No I/O here; see _writer.py.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Awaitable, Callable
from typing import Any

import trio

__all__ = [
    "STREAM_ERRORS",
    "Frames",
    "Kind",
    "NotOpen",
    "Spawn",
    "descriptor",
]

#: Exceptions that mean the stream can no longer be written.
STREAM_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class NotOpen(Exception):
    """The connection state forbids this frame (for example data after close)."""


class Kind(enum.Enum):
    MESSAGE = 1  # a message, framed when it is written
    UNCOMPRESSED = 7  # the same, never compressed
    FRAME = 2  # a message already framed: (frame bytes, is_text), shared by a broadcast
    PING = 3
    PONG = 4
    CLOSE = 5
    RAW = 6  # bytes already framed (the rest of a frame a cancelled send began)
    FRAGMENT = 8  # one frame of a streamed message: (data, last, compress)
    EOF = 9  # shut the sending side down (after everything before it)


class _State(enum.Enum):
    QUEUED = 1
    STARTED = 2
    CANCELLED = 3


class _Job:
    __slots__ = ("kind", "payload", "size", "state", "task")

    def __init__(
        self, kind: Kind, payload: Any, task: trio.lowlevel.Task | None, size: int = 0
    ) -> None:
        self.kind = kind
        self.payload = payload
        self.task = task
        self.state = _State.QUEUED
        self.size = size  # counted in queued_bytes while queued


#: Whole messages: held back while a streamed message is being written.
_WHOLE_MESSAGES = frozenset({Kind.MESSAGE, Kind.UNCOMPRESSED, Kind.FRAME})

#: What is written in one go: one frame, or several (a message sent in
#: frames of at most ``frame_size``), written with one writev call.
Frames = bytes | memoryview | list[Any]  # list[bytes | memoryview]

#: The most buffers one writev call takes.
_IOV_MAX = 1024


def _size(data: Frames) -> int:
    return sum(map(len, data)) if type(data) is list else len(data)


def _rest(data: Frames, sent: int) -> Frames:
    """What remains of ``data`` after its first ``sent`` bytes."""
    if type(data) is not list:
        return memoryview(data)[sent:]  # type: ignore[arg-type]
    rest: list[bytes | memoryview] = []
    for frame in data:
        if sent >= len(frame):
            sent -= len(frame)
        else:
            rest.append(memoryview(frame)[sent:] if sent else frame)
            sent = 0
    return rest


#: Starts a task in the connection's nursery (shielded and guarded).
Spawn = Callable[[Callable[[], Awaitable[None]]], None]


def descriptor(stream: trio.abc.Stream) -> int:
    """The socket's file descriptor when frames can be written to it directly
    (a plain TCP socket, not on Windows, where os.write cannot write sockets)."""
    if isinstance(stream, trio.SocketStream) and os.name != "nt":
        return stream.socket.fileno()
    return -1
