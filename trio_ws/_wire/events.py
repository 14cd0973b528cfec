"""What the message layer (protocol.py) hands up from the wire: whole
messages, pieces of streamed ones, the peer's control frames and failures;
and how much memory a received message takes in a queue. No I/O.
"""

from __future__ import annotations

import sys

import attrs

from .close import CloseCode

__all__ = [
    "CloseReceived",
    "Failure",
    "Incoming",
    "Message",
    "Piece",
    "PingReceived",
    "PongReceived",
    "length",
]

#: A complete WebSocket message: ``str`` for text, ``bytes`` for binary.
Message = str | bytes


@attrs.frozen
class PingReceived:
    payload: bytes


@attrs.frozen
class PongReceived:
    payload: bytes


@attrs.frozen(slots=True)
class Piece:
    """Part of a message being received as a stream (see receive_stream)."""

    data: str | bytes
    #: True for the message's last piece.
    last: bool


@attrs.frozen
class CloseReceived:
    """The peer's close frame."""

    code: int
    reason: str


@attrs.frozen
class Failure:
    """The peer broke a rule; the connection must be failed with ``code``.

    ``parser_usable`` is False when wsproto can parse no further frames (a
    framing or UTF-8 error), True when only the current message is refused
    (too big) and the peer's close frame can still be read.
    """

    code: int
    reason: str
    parser_usable: bool

    @property
    def cause(self) -> str:
        """The explanation kept in the connection's CloseInfo."""
        if self.code == CloseCode.PROTOCOL_ERROR:
            return f"protocol error: {self.reason}"
        if self.code == CloseCode.INVALID_PAYLOAD and self.reason != "invalid compressed data":
            return f"invalid UTF-8: {self.reason}"
        return self.reason


# A non-ASCII string's fixed part (and 1 byte of its terminator), from a new
# string: on 3.12+ the cached "é" also holds its UTF-8 form, 3 bytes more.
_EMPTY_STR_SIZE = sys.getsizeof(chr(233) * 2) - 2

Incoming = str | bytes | Piece | PingReceived | PongReceived | CloseReceived | Failure


def length(item: str | bytes | Piece) -> int:
    """The memory a received message or piece takes, as the queue counts it:
    its bytes; for text, its characters when ASCII, else what Python's
    string takes (1, 2 or 4 bytes a character: never more than its UTF-8
    size). O(1), no encoding."""
    data = item.data if isinstance(item, Piece) else item
    if type(data) is bytes or data.isascii():
        return len(data)
    return sys.getsizeof(data) - _EMPTY_STR_SIZE
