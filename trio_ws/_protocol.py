"""The message layer over wsproto: bytes in, whole messages and control events out.

wsproto parses and serialises frames; this module assembles fragments into
messages, enforces the message size limit in bytes, and tells a peer's close
frame apart from a parse failure. No I/O, no clock, no tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import attrs
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

from . import _masking  # noqa: F401 - installs the compiled masker when available
from ._close import CloseCode

__all__ = [
    "CloseReceived",
    "Failure",
    "Message",
    "PingReceived",
    "PongReceived",
    "Protocol",
    "encode_shared",
]

#: A complete WebSocket message: ``str`` for text, ``bytes`` for binary.
Message = str | bytes


@attrs.frozen
class PingReceived:
    payload: bytes


@attrs.frozen
class PongReceived:
    payload: bytes


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
        if self.code == CloseCode.INVALID_PAYLOAD:
            return f"invalid UTF-8: {self.reason}"
        return self.reason


Incoming = str | bytes | PingReceived | PongReceived | CloseReceived | Failure


def _size(piece: str | bytes) -> int:
    """Size in bytes on the wire (before compression) of a message piece."""
    if type(piece) is str and not piece.isascii():
        return len(piece.encode("utf-8"))
    return len(piece)


# A server-side wsproto connection used only to frame messages for
# encode_shared(): server frames are unmasked, and without extensions a
# message's frame is the same bytes for every connection.
_SHARED_FRAMER = Connection(ConnectionType.SERVER)


def encode_shared(message: str | bytes | bytearray | memoryview) -> bytes:
    """Frame a whole message once, as any server connection without
    extensions would frame it (the broadcast path)."""
    if isinstance(message, str):
        return _SHARED_FRAMER.send(TextMessage(data=message))
    if isinstance(message, memoryview):
        message = message.tobytes()
    if isinstance(message, (bytes, bytearray)):
        return _SHARED_FRAMER.send(BytesMessage(data=message))
    raise TypeError(
        f"a WebSocket message is str (text) or bytes-like (binary), not {type(message).__name__}"
    )


class Protocol:
    """One open WebSocket connection's protocol state (after the handshake)."""

    __slots__ = ("_conn", "_discarding", "_extensions", "_max_size", "_parts", "_size", "dead")

    def __init__(
        self,
        connection: Connection,
        max_message_size: int | None,
        extensions: Sequence[Extension] = (),
    ) -> None:
        self._conn = connection
        self._extensions = tuple(extensions)
        self._max_size = max_message_size
        self._parts: list[str | bytes] = []
        self._size = 0
        # True while the rest of an over-sized message is being skipped.
        self._discarding = False
        #: True once wsproto can parse nothing more (after a protocol failure).
        self.dead = False

    @property
    def is_client(self) -> bool:
        return self._conn.client

    @property
    def state(self) -> ConnectionState:
        return self._conn.state

    # -- incoming ------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> list[Incoming]:
        """Feed bytes from the network; return what they completed, in order."""
        if self.dead:
            return []
        conn = self._conn
        if conn.state is ConnectionState.CLOSED:
            return []
        conn.receive_data(data)  # type: ignore[arg-type]  # wsproto copies it anyway
        out: list[Incoming] = []
        for event in conn.events():
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                item = self._on_data(event)  # type: ignore[arg-type]
                if item is not None:
                    out.append(item)
                    if type(item) is Failure:
                        break
            elif kind is Ping:
                out.append(PingReceived(bytes(event.payload)))  # type: ignore[attr-defined]
            elif kind is Pong:
                out.append(PongReceived(bytes(event.payload)))  # type: ignore[attr-defined]
            elif kind is CloseConnection:
                out.append(self._on_close(event))  # type: ignore[arg-type]
                break
        return out

    def _on_data(self, event: TextMessage | BytesMessage) -> Incoming | None:
        piece = cast("str | bytes", event.data)  # wsproto hands out bytes, not bytearray
        if self._discarding:
            if event.message_finished:
                self._discarding = False
            return None
        limit = self._max_size
        if event.message_finished and not self._parts:
            # The whole message arrived in one piece: the common case, no copy.
            if limit is not None and len(piece) > limit // 4 and _size(piece) > limit:
                return self._too_big(event.message_finished)
            return piece
        self._size += _size(piece)
        if limit is not None and self._size > limit:
            self._parts.clear()
            self._size = 0
            return self._too_big(event.message_finished)
        self._parts.append(piece)
        if not event.message_finished:
            return None
        parts = self._parts
        self._parts = []
        self._size = 0
        if type(piece) is str:
            return "".join(parts)  # type: ignore[arg-type]
        return b"".join(parts)  # type: ignore[arg-type]

    def _too_big(self, finished: bool) -> Failure:
        self._discarding = not finished
        return Failure(
            CloseCode.MESSAGE_TOO_BIG,
            f"message larger than {self._max_size} bytes",
            parser_usable=True,
        )

    def _on_close(self, event: CloseConnection) -> CloseReceived | Failure:
        # wsproto reports both a peer's close frame and its own parse
        # failures as CloseConnection. Only a real close frame moves the
        # state to REMOTE_CLOSING (or CLOSED when we had closed first).
        if self._conn.state in (ConnectionState.REMOTE_CLOSING, ConnectionState.CLOSED):
            return CloseReceived(event.code, event.reason or "")
        self.dead = True
        code = event.code
        if code != CloseCode.INVALID_PAYLOAD:
            code = CloseCode.PROTOCOL_ERROR
        return Failure(code, event.reason or "protocol error", parser_usable=False)

    # -- outgoing ------------------------------------------------------------

    def _send(self, event: Event) -> bytes:
        return self._conn.send(event)

    def encode_message(self, message: str | bytes | bytearray | memoryview) -> bytes:
        """Frame a whole message. Raise TypeError for other types and
        LocalProtocolError when the connection is no longer open."""
        if isinstance(message, str):
            return self._send(TextMessage(data=message))
        if isinstance(message, (bytes, bytearray)):
            return self._send(BytesMessage(data=message))
        if isinstance(message, memoryview):
            return self._send(BytesMessage(data=message.tobytes()))
        raise TypeError(
            f"a WebSocket message is str (text) or bytes-like (binary), not "
            f"{type(message).__name__}"
        )

    def encode_ping(self, payload: bytes) -> bytes:
        return self._send(Ping(payload=payload))

    def encode_pong(self, payload: bytes) -> bytes:
        return self._send(Pong(payload=payload))

    def encode_close(self, code: int, reason: str) -> bytes:
        """Frame a close frame; an empty frame for 1005 (the peer sent no code)."""
        if code == CloseCode.NO_STATUS_RCVD:
            # wsproto writes an empty close frame only for its own enum member.
            return self._send(CloseConnection(code=CloseReason.NO_STATUS_RCVD))
        return self._send(CloseConnection(code=code, reason=reason))

    @property
    def shares_frames(self) -> bool:
        """True when this connection's frames for a message are exactly those of
        :func:`encode_shared` (server side, no extension in use)."""
        return not self._conn.client and not self.extensions_in_use

    @property
    def extensions_in_use(self) -> bool:
        return any(ext.enabled() for ext in self._extensions)

    @property
    def can_send_data(self) -> bool:
        return self._conn.state is ConnectionState.OPEN

    @property
    def can_send_close(self) -> bool:
        return self._conn.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING)


__all__ += ["Incoming", "LocalProtocolError"]
