"""The message layer over wsproto: bytes in, whole messages and control events out.

wsproto parses and serialises frames; this module assembles fragments into
messages, enforces the message size limit in bytes, and tells a peer's close
frame apart from a parse failure. No I/O, no clock, no tasks.
"""

from __future__ import annotations

from collections.abc import Hashable
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
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

from . import _masking  # noqa: F401 - installs the compiled masker when available
from ._close import CloseCode
from ._deflate import Deflate, DeflateExtension
from ._framing import (
    between_messages,
    frame_data,
    install_buffer,
    slim_event_queue,
    whole_messages,
)

__all__ = [
    "CloseReceived",
    "Failure",
    "Message",
    "Piece",
    "PingReceived",
    "PongReceived",
    "Protocol",
    "encode_shared",
    "shared_frame",
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


Incoming = str | bytes | Piece | PingReceived | PongReceived | CloseReceived | Failure


def _size(piece: str | bytes) -> int:
    """Size in bytes on the wire (before compression) of a message piece."""
    if type(piece) is str and not piece.isascii():
        return len(piece.encode("utf-8"))
    return len(piece)


#: The frame key of server connections without extensions (see Protocol.frame_key).
PLAIN = ("plain",)

# Server-side wsproto connections used only to frame broadcast messages, one
# per frame key, and the last message each one framed.
_framers: dict[Hashable, tuple[Connection, DeflateExtension | None]] = {}
_last_framed: dict[Hashable, tuple[object, bytes]] = {}


def _framer(key: Hashable) -> tuple[Connection, DeflateExtension | None]:
    if key == PLAIN:
        return Connection(ConnectionType.SERVER), None
    _, bits, level, memory_level, min_size = cast("tuple[str, int, int, int, int]", key)
    settings = Deflate(
        server_max_window_bits=bits,
        server_no_context_takeover=True,
        level=level,
        memory_level=memory_level,
        min_size=min_size,
    )
    extension = settings.extension(client=False, max_message_size=None)
    extension.accept("permessage-deflate; server_no_context_takeover")
    return Connection(ConnectionType.SERVER, [extension]), extension


def shared_frame(message: str | bytes | bytearray | memoryview, key: Hashable) -> bytes:
    """Frame a whole message as every server connection with this frame key
    would frame it: once per broadcast, not once per recipient. The last
    message framed for each key is remembered, so a broadcast loop asks
    for each key's frame once."""
    last = _last_framed.get(key)
    if last is not None and last[0] is message:
        return last[1]
    framer = _framers.get(key)
    if framer is None:
        framer = _framers[key] = _framer(key)
    connection, extension = framer
    if extension is not None and len(message) < extension.settings.min_size:
        extension.skip_next = True
    if isinstance(message, str):
        frame = connection.send(TextMessage(data=message))
    elif isinstance(message, (bytes, bytearray, memoryview)):
        frame = connection.send(BytesMessage(data=bytes(message)))
    else:
        raise TypeError(
            "a WebSocket message is str (text) or bytes-like (binary), not "
            f"{type(message).__name__}"
        )
    _last_framed[key] = (message, frame)
    return frame


def encode_shared(message: str | bytes | bytearray | memoryview) -> bytes:
    """Frame a whole message once, as any server connection without
    extensions would frame it (the broadcast path)."""
    return shared_frame(message, PLAIN)


class Protocol:
    """One open WebSocket connection's protocol state (after the handshake)."""

    __slots__ = (
        "_between_messages",
        "_conn",
        "_discarding",
        "_drop_stream",
        "_fragmenting",
        "_max_size",
        "_parts",
        "_size",
        "_streaming",
        "dead",
        "deflate",
        "stream_next",
    )

    def __init__(
        self,
        connection: Connection,
        max_message_size: int | None,
        deflate: DeflateExtension | None = None,
    ) -> None:
        self._conn = connection
        slim_event_queue(connection)
        buffer = install_buffer(connection)
        #: The negotiated permessage-deflate extension, or None.
        self.deflate = deflate if deflate is not None and deflate.enabled() else None
        # Whole uncompressed messages are read without wsproto while it is
        # between messages (see _framing.whole_messages).
        self._between_messages = (
            between_messages(connection, buffer)
            if buffer is not None and self.deflate is None
            else None
        )
        self._max_size = max_message_size
        self._fragmenting = False  # a streamed message is being sent
        #: The next message to start is to be handed out as pieces.
        self.stream_next = False
        self._streaming = False  # the current message is handed out as pieces
        self._drop_stream = False  # ...and its receiver left: drop the rest
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
        if conn.state is not ConnectionState.OPEN:
            if conn.state is ConnectionState.CLOSED:
                return []
        elif (
            self._between_messages is not None and type(data) is bytes and self._between_messages()
        ):
            messages, used = whole_messages(data, not conn.client, self._max_size)
            if messages:
                # Within the size limit: no Failure can come of these.
                on_data = self._on_data
                out = [item for m in messages if (item := on_data(m, True)) is not None]
                if used < len(data):
                    out.extend(self._parse(data[used:]))
                return out
        return self._parse(data)

    def _parse(self, data: bytes | bytearray) -> list[Incoming]:
        """Let wsproto parse ``data`` and turn its events into ours."""
        conn = self._conn
        conn.receive_data(data)  # type: ignore[arg-type]  # wsproto copies it anyway
        out: list[Incoming] = []
        for event in conn.events():
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                item = self._on_data(event.data, event.message_finished)  # type: ignore[attr-defined]
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

    def _on_data(self, piece: str | bytes, finished: bool) -> Incoming | None:
        """One piece of a message (wsproto hands out bytes, not bytearray)."""
        if self._discarding:
            if finished:
                self._discarding = False
            return None
        if self.stream_next and not self._parts and not self._streaming:
            # A message starts, and a receiver asked for it as a stream.
            self.stream_next = False
            self._streaming = True
        if self._streaming:
            return self._stream_piece(piece, finished)
        limit = self._max_size
        if finished and not self._parts:
            # The whole message arrived in one piece: the common case, no copy.
            if limit is not None and len(piece) > limit // 4 and _size(piece) > limit:
                return self._too_big(finished)
            return piece
        self._size += _size(piece)
        if limit is not None and self._size > limit:
            self._parts.clear()
            self._size = 0
            return self._too_big(finished)
        self._parts.append(piece)
        if not finished:
            return None
        parts = self._parts
        self._parts = []
        self._size = 0
        if type(piece) is str:
            return "".join(parts)  # type: ignore[arg-type]
        return b"".join(parts)  # type: ignore[arg-type]

    def _stream_piece(self, piece: str | bytes, last: bool) -> Piece | Failure | None:
        self._size += _size(piece)
        if self._max_size is not None and self._size > self._max_size:
            self._streaming = self._drop_stream = False
            self._size = 0
            return self._too_big(last)
        if last:
            self._streaming = False
            self._size = 0
        if self._drop_stream:
            self._drop_stream = not last
            return None
        return Piece(piece, last)

    # -- streamed messages (driven by the reader) ----------------------------

    def request_stream(self) -> Piece | None:
        """A receiver wants the next message as a stream. If one is half
        assembled, it becomes that stream: what arrived so far is returned as
        its first piece. Otherwise the next message to start is streamed."""
        if not self._parts:
            self.stream_next = True
            return None
        parts, self._parts = self._parts, []
        self._streaming = True
        if type(parts[0]) is str:
            return Piece("".join(parts), False)  # type: ignore[arg-type]
        return Piece(b"".join(parts), False)  # type: ignore[arg-type]

    def cancel_stream_request(self) -> None:
        """The receiver that asked for a stream gave up before it started."""
        self.stream_next = False

    def unstream(self, parts: list[str | bytes]) -> None:
        """Assemble the current streamed message after all (nobody took its
        first piece): ``parts`` are the pieces already handed out."""
        self._streaming = False
        self._parts = parts

    def drop_stream(self) -> None:
        """The receiver left the streamed message early: drop its rest."""
        if self._streaming:
            self._drop_stream = True

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
        reason = event.reason or "protocol error"
        if code == CloseCode.MESSAGE_TOO_BIG:
            # Only our deflate extension says this, while inflating.
            reason = f"message larger than {self._max_size} bytes"
        elif code == CloseCode.INVALID_PAYLOAD and reason == "error in extension":
            reason = "invalid compressed data"
        elif code != CloseCode.INVALID_PAYLOAD:
            code = CloseCode.PROTOCOL_ERROR
        return Failure(code, reason, parser_usable=False)

    # -- outgoing ------------------------------------------------------------

    def _send(self, event: Event) -> bytes:
        return self._conn.send(event)

    def encode_message(
        self,
        message: str | bytes | bytearray | memoryview,
        compress: bool = True,
        frame_size: int | None = None,
    ) -> bytes | list[bytes]:
        """Frame a whole message (compressed when the extension is in use,
        ``compress`` is true and the message is not tiny): one frame, or a
        list of frames of at most ``frame_size`` bytes (characters of text)
        each. Raise TypeError for other types and LocalProtocolError when the
        connection is no longer open."""
        ext = self.deflate
        if (
            not self._fragmenting
            and self._conn.state is ConnectionState.OPEN
            and (
                ext is None
                or not compress
                or (
                    isinstance(message, (str, bytes, bytearray, memoryview))
                    and len(message) < ext.settings.min_size
                )
            )
        ):
            # Uncompressed: the common case, framed without wsproto's copies.
            return frame_data(message, self._conn.client, frame_size)
        if (
            frame_size is not None
            and isinstance(message, (str, bytes, bytearray, memoryview))
            and len(message) > frame_size
        ):
            return self._encode_split(message, compress, frame_size)
        if isinstance(message, str):
            event: Event = TextMessage(data=message)
        elif isinstance(message, (bytes, bytearray)):
            event = BytesMessage(data=message)
        elif isinstance(message, memoryview):
            event = BytesMessage(data=message.tobytes())
        else:
            raise TypeError(
                f"a WebSocket message is str (text) or bytes-like (binary), not "
                f"{type(message).__name__}"
            )
        if ext is not None and (not compress or len(message) < ext.settings.min_size):
            ext.skip_next = True
        return self._send(event)

    def _encode_split(
        self, message: str | bytes | bytearray | memoryview, compress: bool, size: int
    ) -> list[bytes]:
        if isinstance(message, (bytes, bytearray)):
            message = memoryview(message)
        if not isinstance(message, (str, memoryview)):
            raise TypeError(
                f"a WebSocket message is str (text) or bytes-like (binary), not "
                f"{type(message).__name__}"
            )
        total = len(message)
        frames = []
        for start in range(0, total, size):
            piece = message[start : start + size]
            last = start + size >= total
            frames.append(self.encode_fragment(piece, last, compress, flush=False))
        return frames

    def encode_fragment(
        self,
        data: str | bytes | bytearray | memoryview,
        last: bool,
        compress: bool = True,
        *,
        flush: bool = True,
    ) -> bytes:
        """Frame one fragment of a streamed message (the first one decides
        text or binary and compression). Raise TypeError for other types or
        a type that changes within the message."""
        if isinstance(data, str):
            event: Event = TextMessage(data=data, message_finished=last)
        elif isinstance(data, memoryview):
            event = BytesMessage(data=data, message_finished=last)  # type: ignore[arg-type]
        elif isinstance(data, (bytes, bytearray)):
            event = BytesMessage(data=data, message_finished=last)
        else:
            raise TypeError(f"a message fragment is str or bytes-like, not {type(data).__name__}")
        ext = self.deflate
        if ext is not None:
            if not compress and not self._fragmenting:
                ext.skip_next = True  # decided once, at the message's first frame
            ext.flush_fragments = flush
        frame = self._send(event)
        self._fragmenting = not last
        return frame

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
    def frame_key(self) -> Hashable | None:
        """Connections with the same key frame a message into the same bytes
        (see :func:`shared_frame`); None when this one's frames are its own
        (a client masks each frame; a compressor that keeps its context
        depends on the messages before)."""
        if self._conn.client:
            return None
        ext = self.deflate
        if ext is None:
            return PLAIN
        if not ext.server_no_context_takeover:
            return None
        settings = ext.settings
        return (
            "deflate",
            ext.server_max_window_bits,
            settings.level,
            settings.memory_level,
            settings.min_size,
        )

    @property
    def compressor_keeps_context(self) -> bool:
        """True when framing a message changes how later ones are framed."""
        ext = self.deflate
        if ext is None:
            return False
        if self._conn.client:
            return not ext.client_no_context_takeover
        return not ext.server_no_context_takeover

    @property
    def can_send_data(self) -> bool:
        return self._conn.state is ConnectionState.OPEN

    @property
    def can_send_close(self) -> bool:
        return self._conn.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING)


__all__ += ["Incoming", "LocalProtocolError"]
