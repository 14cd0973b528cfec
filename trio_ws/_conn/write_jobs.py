"""What the writer writes: its jobs, one class per kind (a message framed
when its turn comes, a frame shared by a broadcast, one frame of a streamed
message, control frames, the rest of a frame a cancelled send began,
end-of-file), each knowing how it is framed and how it counts in the stats;
and the byte arithmetic of partly written frames. No I/O here; see _writer.py.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

import trio

if TYPE_CHECKING:
    from .._wire.protocol import Protocol

__all__ = [
    "STREAM_ERRORS",
    "Close",
    "EndOfFile",
    "Fragment",
    "Frames",
    "Job",
    "Kind",
    "Message",
    "NotOpen",
    "Ping",
    "Pong",
    "Raw",
    "SharedFrame",
    "Spawn",
    "descriptor",
    "frame_message",
]

#: Exceptions that mean the stream can no longer be written.
STREAM_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class NotOpen(Exception):
    """The connection state forbids this frame (for example data after close)."""


#: What is written in one go: one frame, or several (a message sent in
#: frames of at most ``frame_size``), written with one writev call.
Frames = bytes | memoryview | list[Any]  # list[bytes | memoryview]

#: A message's data: text for ``str``, binary for the rest.
Data = str | bytes | bytearray | memoryview


class _State(enum.Enum):
    QUEUED = 1
    STARTED = 2
    CANCELLED = 3


class Job:
    """Something for the writer to write. ``task`` is the sender waiting for
    it (None: nobody waits, it was posted or enqueued); ``size`` counts in
    the writer's ``queued_bytes`` while it waits."""

    __slots__ = ("size", "state", "task")

    #: A whole message: held back while a streamed message is being written
    #: (no other message's frame may come between a streamed message's).
    whole_message: ClassVar[bool] = False

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = None
        self.state = _State.QUEUED
        self.size = 0

    def encode(self, protocol: Protocol, frame_size: int | None) -> Frames | None:
        """Frame it (under the write lock, so frames reach the wire in the
        order they were framed): the frames to write, or None when it is
        skipped. Raises :class:`NotOpen` if the connection state forbids it."""
        raise NotImplementedError

    def text_message(self) -> bool | None:
        """How it counts in the writer's stats once written: True when it
        completes a text message, False a binary one, None no message."""
        return None


def frame_message(
    protocol: Protocol, message: Data, compress: bool, frame_size: int | None
) -> Frames:
    """:meth:`Message.encode` without the job (the writer's direct path)."""
    if not protocol.can_send_data:
        raise NotOpen
    return protocol.encode_message(message, compress, frame_size)


class Message(Job):
    """A message, framed when it is written (compressed if ``compress`` and
    the extension is in use): ``send()``, or a broadcast framed per connection."""

    __slots__ = ("compress", "data")
    whole_message = True

    def __init__(self, data: Data, compress: bool = True) -> None:
        self.task = None
        self.state = _State.QUEUED
        self.size = 0
        self.data = data
        self.compress = compress

    def encode(self, protocol: Protocol, frame_size: int | None) -> Frames:
        return frame_message(protocol, self.data, self.compress, frame_size)

    def text_message(self) -> bool:
        return type(self.data) is str


class SharedFrame(Job):
    """A message already framed, the same bytes for many connections (a broadcast)."""

    __slots__ = ("frame", "is_text")
    whole_message = True

    def __init__(self, frame: bytes, is_text: bool) -> None:
        self.task = None
        self.state = _State.QUEUED
        self.size = 0
        self.frame = frame
        self.is_text = is_text

    def encode(self, protocol: Protocol, frame_size: int | None) -> Frames:
        if not protocol.can_send_data:
            raise NotOpen
        return self.frame

    def text_message(self) -> bool:
        return self.is_text


class Fragment(Job):
    """One frame of a streamed message (``send_stream()``); the message counts
    once, at its ``last`` frame."""

    __slots__ = ("compress", "data", "last")

    def __init__(self, data: Data, last: bool, compress: bool = True) -> None:
        self.task = None
        self.state = _State.QUEUED
        self.size = 0
        self.data = data
        self.last = last
        self.compress = compress

    def encode(self, protocol: Protocol, frame_size: int | None) -> Frames:
        if not protocol.can_send_data:
            raise NotOpen
        return protocol.encode_fragment(self.data, self.last, self.compress)

    def text_message(self) -> bool | None:
        return type(self.data) is str if self.last else None


class Ping(Job):
    """A ping (``ws.ping()``, keepalive)."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.task = None
        self.state = _State.QUEUED
        self.size = 0
        self.payload = payload

    def encode(self, protocol: Protocol, frame_size: int | None) -> Frames:
        if not protocol.can_send_data:
            raise NotOpen
        return protocol.encode_ping(self.payload)


class Pong(Job):
    """A pong owed to the peer; its ``payload`` may be replaced while it
    waits (see ``Writer.post_pong``)."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.task = None
        self.state = _State.QUEUED
        self.size = 0
        self.payload = payload

    def encode(self, protocol: Protocol, frame_size: int | None) -> Frames | None:
        if not protocol.can_send_data:
            return None  # owed to a peer that is closing: skipped
        return protocol.encode_pong(self.payload)


class Close(Job):
    """Our close frame; skipped if the state no longer allows one."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.task = None
        self.state = _State.QUEUED
        self.size = 0
        self.code = code
        self.reason = reason

    def encode(self, protocol: Protocol, frame_size: int | None) -> Frames | None:
        if not protocol.can_send_close:
            return None
        return protocol.encode_close(self.code, self.reason)


class Raw(Job):
    """The rest of frames already framed, whose first bytes were written
    (or, for a stateful encoder, none): always written, whatever the state.
    It counts as the message it ends (``text``, as :meth:`Job.text_message`)."""

    __slots__ = ("rest", "text")

    def __init__(self, rest: Frames, text: bool | None) -> None:
        self.task = None
        self.state = _State.QUEUED
        self.size = 0
        self.rest = rest
        self.text = text

    def encode(self, protocol: Protocol, frame_size: int | None) -> Frames:
        return self.rest

    def text_message(self) -> bool | None:
        return self.text


class EndOfFile(Job):
    """Shut the sending side down, after everything queued before it (the
    writer handles it: nothing is framed)."""

    __slots__ = ()

    def encode(self, protocol: Protocol, frame_size: int | None) -> None:
        return None


class Kind:
    """The job classes by name, where their bare names would clash (with
    ``_protocol.Message``, ``_keepalive.Ping``): ``Kind.Ping(payload)``."""

    Message = Message
    SharedFrame = SharedFrame
    Fragment = Fragment
    Ping = Ping
    Pong = Pong
    Close = Close
    Raw = Raw
    EndOfFile = EndOfFile


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
