"""The copy-free paths for data frames, beside wsproto.

wsproto frames and parses everything, and stays the authority on the
protocol; two spots of its pure-Python framing copy a large payload several
times, and those are the two this module takes over:

- :func:`frame_data`: a whole uncompressed message, the common case of
  ``send()``. wsproto copies the payload three times while framing it (five
  times for a client, which also masks it). Here the header is built on its
  own, so a server's frame is that header plus the caller's bytes, written
  together with one ``writev`` call, and a client's is the header, the mask
  key and one masked copy.
- :class:`FrameBuffer`: the byte buffer of wsproto's frame decoder, replaced
  on each of our connections by one that keeps the bytes read from the socket
  as they are and hands a frame's payload on without copying it when one read
  brought in exactly that payload.
- :func:`whole_messages`: reads the commonest frames of all, complete
  unfragmented text or binary messages, straight out of what the socket
  gave, while wsproto is between messages; with permessage-deflate
  negotiated, also those with RSV1 set, handed on still compressed (the
  protocol inflates them with the extension's decompressor). Anything else
  (control frames, fragments, partial frames, other RSV bits, anything
  doubtful: a length not minimally encoded, invalid UTF-8) stops it, and
  wsproto parses the rest and gives every verdict on it.
- :func:`frame_compressed`: a whole message compressed by the protocol with
  the extension's compressor, framed as :func:`frame_data` frames one.

All give byte for byte the results of wsproto's own code (the tests compare
them), only with fewer copies and less work. One more adjustment is for
memory: :func:`slim_event_queue`.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from wsproto.connection import Connection
from wsproto.frame_protocol import Buffer

from . import masking as _masking

__all__ = [
    "SMALL",
    "Compressed",
    "FrameBuffer",
    "between_messages",
    "frame_compressed",
    "frame_data",
    "frame_decoder",
    "header",
    "install_buffer",
    "slim_event_queue",
    "whole_messages",
]

_FIN = 0x80
_RSV1 = 0x40
_TEXT = 0x1
_BINARY = 0x2
_MASKED = 0x80
_DEFLATED_TEXT = _FIN | _RSV1 | _TEXT
_DEFLATED_BINARY = _FIN | _RSV1 | _BINARY

_pack16 = struct.Struct("!BBH").pack
_pack64 = struct.Struct("!BBQ").pack

#: Below this many payload bytes a frame is one bytes object (header and
#: payload copied together); from here on, a list of pieces for writev.
SMALL = 4096


def header(first_byte: int, length: int, mask_bit: int = 0) -> bytes:
    """A frame header (RFC 6455 section 5.2) without the masking key."""
    if length < 126:
        return bytes((first_byte, length | mask_bit))
    if length < 65536:
        return _pack16(first_byte, 126 | mask_bit, length)
    return _pack64(first_byte, 127 | mask_bit, length)


def _masked(payload: bytes | memoryview, first_byte: int) -> tuple[bytes, bytes]:
    """(header with a fresh masking key, masked payload) for a client frame."""
    key = os.urandom(4)  # RFC 6455 5.3: unpredictable, from a strong source
    return header(first_byte, len(payload), _MASKED) + key, _masking.mask(payload, key)


def frame_data(
    message: str | bytes | bytearray | memoryview, client: bool, frame_size: int | None
) -> bytes | list[Any]:
    """Frame a whole message without compression: one frame, or frames of at
    most ``frame_size`` payload bytes each (a text message may be split
    inside a character; the receiver checks UTF-8 over the whole message).
    Returns one bytes object or a list of pieces (bytes or views of
    ``message``) to write in order. Raises TypeError for other types."""
    if type(message) is str:
        payload: bytes | memoryview = message.encode()
        opcode = _TEXT
    elif type(message) is bytes:
        payload = message  # immutable: referenced, not copied
        opcode = _BINARY
    elif isinstance(message, (bytes, bytearray, memoryview)):
        # The caller may change a mutable buffer as soon as send() returns (or
        # is cancelled, while the rest of the frame still waits to be written).
        payload = bytes(message)
        opcode = _BINARY
    elif isinstance(message, str):
        payload = str(message).encode()
        opcode = _TEXT
    else:
        raise TypeError(
            "a WebSocket message is str (text) or bytes-like (binary), not "
            f"{type(message).__name__}"
        )
    if frame_size is not None and len(payload) > frame_size:
        return _split(memoryview(payload), opcode, client, frame_size)
    return _frame(payload, _FIN | opcode, client)


def frame_compressed(payload: bytes | memoryview, text: bool, client: bool) -> bytes | list[Any]:
    """Frame a whole message already compressed (permessage-deflate, its
    final ``00 00 ff ff`` removed): one frame with RSV1 set, as bytes or a
    list of pieces like :func:`frame_data`'s."""
    return _frame(payload, _FIN | _RSV1 | (_TEXT if text else _BINARY), client)


def _frame(payload: bytes | memoryview, first_byte: int, client: bool) -> bytes | list[Any]:
    size = len(payload)
    if client:
        head, masked = _masked(payload, first_byte)
        if size < SMALL:
            return head + masked
        return [head, masked]
    if size < SMALL:
        return header(first_byte, size) + payload
    return [header(first_byte, size), payload]


def _split(payload: memoryview, opcode: int, client: bool, frame_size: int) -> list[Any]:
    pieces: list[Any] = []
    total = len(payload)
    for start in range(0, total, frame_size):
        chunk = payload[start : start + frame_size]
        first_byte = (opcode if start == 0 else 0) | (_FIN if start + frame_size >= total else 0)
        if client:
            pieces.extend(_masked(chunk, first_byte))
        else:
            pieces.append(header(first_byte, len(chunk)))
            pieces.append(chunk)
    return pieces


class FrameBuffer:
    """A drop-in for ``wsproto.frame_protocol.Buffer`` that holds bytes.

    wsproto appends every read to a bytearray, then slices each payload out
    of it (two copies). Here a read becomes the buffer as it is when nothing
    is left over from the previous one, and a payload that is the whole of
    what is unread is handed on as that same object. Reads never carry over
    more than a partial frame header or control frame, so the rare
    concatenation copies only those few bytes plus the new read.
    """

    __slots__ = ("_data", "_start", "_used")

    def __init__(self, initial_bytes: bytes | None = None) -> None:
        self._data = b""
        self._start = 0  # where the uncommitted bytes begin
        self._used = 0  # where the next consume begins
        if initial_bytes:
            self.feed(initial_bytes)

    def feed(self, new_bytes: bytes | bytearray | memoryview) -> None:
        if self._start == len(self._data):
            self._data = new_bytes if type(new_bytes) is bytes else bytes(new_bytes)
        else:
            self._data = self._data[self._start :] + new_bytes
        self._start = self._used = 0

    def consume_at_most(self, nbytes: int) -> bytes:
        if not nbytes:
            return b""
        data = self._data
        start = self._used
        end = min(start + nbytes, len(data))
        self._used = end
        if start == 0 and end == len(data):
            return data
        return data[start:end]

    def consume_exactly(self, nbytes: int) -> bytes | None:
        if len(self._data) - self._used < nbytes:
            return None
        return self.consume_at_most(nbytes)

    def commit(self) -> None:
        self._start = self._used
        if self._start == len(self._data):
            self._data = b""
            self._start = self._used = 0

    def rollback(self) -> None:
        self._used = self._start

    def __len__(self) -> int:
        return len(self._data) - self._start


def install_buffer(connection: Connection) -> FrameBuffer | None:
    """Give wsproto's frame decoder of ``connection`` a :class:`FrameBuffer`,
    carrying over what it holds, and return it (None, leaving wsproto's
    buffer in place, if wsproto's internals are not as expected)."""
    decoder = getattr(getattr(connection, "_proto", None), "_frame_decoder", None)
    old = getattr(decoder, "buffer", None)
    if type(old) is not Buffer or old.bytes_used:
        return None
    buffer = FrameBuffer(bytes(old.buffer))
    decoder.buffer = buffer  # type: ignore[union-attr]
    return buffer


def frame_decoder(connection: Connection) -> Any:
    """wsproto's frame decoder of ``connection`` (whose ``header`` and
    ``payload_consumed`` tell the frame being parsed), or None if wsproto's
    internals are not as expected."""
    decoder = getattr(getattr(connection, "_proto", None), "_frame_decoder", None)
    if hasattr(decoder, "header") and hasattr(decoder, "payload_consumed"):
        return decoder
    return None


class _EventQueue(list):  # type: ignore[type-arg]
    """The little of a deque that wsproto's event queue uses."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


def slim_event_queue(connection: Connection) -> None:
    """Replace the empty deque in which wsproto's ``connection`` queues the one
    event it makes without parsing (a close when ``receive_data(None)``
    reports a lost stream, which we never call) with a list: an empty deque
    takes 760 bytes, about a twentieth of an idle connection."""
    events = getattr(connection, "_events", None)
    if type(events) is deque and not events:
        connection._events = _EventQueue()  # type: ignore[assignment]


def between_messages(connection: Connection, buffer: FrameBuffer) -> Callable[[], bool] | None:
    """A check that wsproto's parser of ``connection`` is between two messages
    with nothing buffered (where :func:`whole_messages` may read frames in
    its place without it noticing); None if wsproto's internals are not as
    expected, and then nothing is read outside wsproto."""
    proto = getattr(connection, "_proto", None)
    frames = getattr(proto, "_frame_decoder", None)
    messages = getattr(proto, "_message_decoder", None)
    if getattr(frames, "buffer", None) is not buffer or not (
        hasattr(frames, "header") and hasattr(messages, "opcode")
    ):
        return None

    return _BetweenMessages(frames, messages, buffer)


class _BetweenMessages:
    """The check :func:`between_messages` returns (an object with three slots
    rather than a closure: a third of the memory, kept per connection)."""

    __slots__ = ("_buffer", "_frames", "_messages")

    def __init__(self, frames: Any, messages: Any, buffer: FrameBuffer) -> None:
        self._frames = frames
        self._messages = messages
        self._buffer = buffer

    def __call__(self) -> bool:
        frames = self._frames
        buffer = self._buffer
        return (
            frames.header is None
            and self._messages.opcode is None
            and not len(buffer)
            and frames.buffer is buffer
        )


#: A compressed message's frame, as :func:`whole_messages` hands it on:
#: (text, payload still compressed, offset in the data where its frame begins).
Compressed = tuple[bool, bytes, int]


def whole_messages(
    data: bytes, masked: bool, max_size: int | None, compressed: bool = False
) -> tuple[list[str | bytes | Compressed], int]:
    """Read complete, unfragmented, uncompressed text and binary messages of
    at most ``max_size`` bytes from the start of ``data`` (frames masked or
    not, as ``masked`` says the peer must send them): return them and the
    offset where reading stopped, at the first frame that is anything else or
    anything more, which is left to wsproto whole.

    With ``compressed`` (permessage-deflate was negotiated), a frame with
    RSV1 set and at most ``max_size`` payload bytes is read too, and handed
    on as a :data:`Compressed` pair for the caller to inflate, in order;
    frames with RSV1 clear are read as without the extension."""
    found: list[str | bytes | Compressed] = []
    end = len(data)
    pos = 0
    mask_bit = _MASKED if masked else 0
    while end - pos >= 2:
        first = data[pos]
        second = data[pos + 1]
        if second & _MASKED != mask_bit:
            break
        if (first != _FIN | _TEXT and first != _FIN | _BINARY) and not (
            compressed and first in (_DEFLATED_TEXT, _DEFLATED_BINARY)
        ):
            break
        length = second & 0x7F
        start = pos + 2
        if length >= 126:
            if length == 126:
                start += 2
                if start > end:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                if length < 126:
                    break
            else:
                start += 8
                if start > end:
                    break
                length = int.from_bytes(data[pos + 2 : start], "big")
                if length < 65536 or length >> 63:
                    break
        if max_size is not None and length > max_size:
            break
        if masked:
            start += 4
        stop = start + length
        if stop > end:
            break
        payload: bytes | memoryview
        if first & _RSV1:
            payload = (
                _masking.mask(memoryview(data)[start:stop], data[start - 4 : start])
                if masked
                else data[start:stop]
            )
            found.append((first == _DEFLATED_TEXT, payload, pos))
            pos = stop
            continue
        if masked:
            payload = _masking.mask(memoryview(data)[start:stop], data[start - 4 : start])
        elif first == _FIN | _TEXT:
            payload = memoryview(data)[start:stop]  # decoded without a copy of its own
        else:
            payload = data[start:stop]
        if first == _FIN | _TEXT:
            try:
                found.append(str(payload, "utf-8"))
            except UnicodeDecodeError:
                break
        else:
            found.append(payload)  # type: ignore[arg-type]  # bytes: the masked or sliced copy
        pos = stop
    return found, pos
