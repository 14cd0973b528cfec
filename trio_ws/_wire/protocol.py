"""The message layer over wsproto: bytes in, whole messages and control events out.

wsproto parses and serialises frames (but for whole messages, which
framing.py reads and frames itself, compressed or not); this module
assembles fragments into messages, enforces the message size limit in
bytes, and tells a peer's close frame apart from a parse failure. No I/O,
no clock, no tasks.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

from wsproto.connection import Connection, ConnectionState
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

from . import masking as _masking  # noqa: F401 - installs the compiled masker when available
from .close import CloseCode
from .deflate import DeflateExtension
from .events import CloseReceived, Failure, Incoming, Piece, PingReceived, PongReceived, length
from .framing import (
    Compressed,
    between_messages,
    frame_compressed,
    frame_data,
    frame_decoder,
    install_buffer,
    slim_event_queue,
    whole_messages,
)

__all__ = ["PLAIN", "LocalProtocolError", "Protocol", "deflate_key"]


def _size(piece: str | bytes) -> int:
    """Size in bytes on the wire (before compression) of a message piece."""
    if type(piece) is str and not piece.isascii():
        return len(piece.encode("utf-8"))
    return len(piece)


#: Frames of a fragmented message that count only their payload against
#: ``max_message_size``; each later one counts at least FRAME_MIN_CHARGE
#: bytes (see Protocol._charge): a flood of empty continuation frames must
#: reach a limit too.
FREE_FRAMES = 16
FRAME_MIN_CHARGE = 64
#: A piece of a fragmented message shorter than this (bytes, or characters)
#: is merged into the one before, so that many small fragments are held as
#: a few strings, not one object each (about 50 bytes apiece); larger pieces
#: are kept as they came, and joined once, when the message is complete.
MERGE_BELOW = 4096


#: The frame key of server connections without extensions: they all frame a
#: message into the same bytes, those of :meth:`Framings.plain`.
PLAIN = ("plain",)


def deflate_key(bits: int, level: int, memory_level: int, min_size: int, skip: bool) -> Hashable:
    """The frame key of server connections that compress without keeping a
    context: those with equal settings (``skip``: skip_incompressible) frame
    a message into equal bytes."""
    return ("deflate", bits, level, memory_level, min_size, skip)


class Protocol:
    """One open WebSocket connection's protocol state (after the handshake)."""

    __slots__ = (
        "_between_messages",
        "_buffer",
        "_conn",
        "_decoder",
        "_discarding",
        "_drop_stream",
        "_fragmenting",
        "_frame_bytes",
        "_frames",
        "_max_size",
        "_parts",
        "_size",
        "_streaming",
        "backlog",
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
        buffer = self._buffer = install_buffer(connection)
        #: The negotiated permessage-deflate extension, or None.
        self.deflate = deflate if deflate is not None and deflate.enabled() else None
        # Whole messages are read without wsproto while it is between
        # messages (see _framing.whole_messages); compressed ones are inflated
        # here with the extension's decompressor, in order.
        self._between_messages = (
            between_messages(connection, buffer) if buffer is not None else None
        )
        self._max_size = max_message_size
        self._fragmenting = False  # a streamed message is being sent
        #: The next message to start is to be handed out as pieces.
        self.stream_next = False
        self._streaming = False  # the current message is handed out as pieces
        self._drop_stream = False  # ...and its receiver left: drop the rest
        # The pieces of the message being assembled from fragments, where
        # small pieces are merged (see _on_data): never one object per frame.
        self._parts: list[str | bytes] = []
        self._size = 0  # bytes counted against max_message_size so far
        self._frames = 0  # frames of the current message so far
        self._frame_bytes = 0  # ...and bytes of the current frame so far
        #: True when parsing stopped early because the caller had no room:
        #: wsproto still holds bytes to parse (see :meth:`resume`).
        self.backlog = False
        # wsproto's frame decoder, to read a frame's announced length early.
        self._decoder = frame_decoder(connection)
        # True while the rest of an over-sized message is being skipped.
        self._discarding = False
        #: True once wsproto can parse nothing more (after a protocol failure).
        #: A fact about the parser, not the close lifecycle (this layer has no
        #: close state): the connection's close state learns it from
        #: ``Failure.parser_usable`` and settles.
        self.dead = False

    @property
    def is_client(self) -> bool:
        return self._conn.client

    @property
    def state(self) -> ConnectionState:
        return self._conn.state

    # -- incoming ------------------------------------------------------------

    def receive_data(
        self, data: bytes | bytearray, room: float = math.inf, slots: float = math.inf
    ) -> list[Incoming]:
        """Feed bytes from the network; return what they completed, in order.

        ``room`` (bytes) and ``slots`` (messages) say how much the caller can
        queue: once the messages returned reach either, parsing stops and the
        rest stays buffered in wsproto (:attr:`backlog` is then True) until
        :meth:`resume`. Compressed messages are inflated only as they are
        parsed, so a few KiB of deflate data never become more than ``room``
        (plus one message) at once."""
        if self.dead:
            return []
        conn = self._conn
        if conn.state is not ConnectionState.OPEN:
            if conn.state is ConnectionState.CLOSED:
                return []
        elif (
            self._between_messages is not None and type(data) is bytes and self._between_messages()
        ):
            ext = self.deflate
            messages, used = whole_messages(
                data,
                not conn.client,
                self._max_size,
                ext is not None and ext._inbound_compressed is None,
            )
            if messages:
                on_data = self._on_data
                if ext is None:
                    # Within the size limit: no Failure can come of these.
                    out = [item for m in messages if (item := on_data(m, True)) is not None]  # type: ignore[arg-type]  # never Compressed
                else:
                    out, stopped = self._inflated(messages, ext, room, slots)
                    if out and type(out[-1]) is Failure:
                        return out  # the parser is dead, or the message refused
                    if stopped is not None:
                        # The caller's room is full: the rest waits in wsproto,
                        # still compressed, until resume().
                        conn.receive_data(data[stopped:])
                        self.backlog = True
                        return out
                if used < len(data):
                    for item in out:
                        room -= length(item)  # type: ignore[arg-type]  # never a Failure here
                    conn.receive_data(data[used:])
                    out.extend(self._events(room, slots - len(out)))
                return out
        conn.receive_data(data)  # type: ignore[arg-type]  # wsproto copies it anyway
        return self._events(room, slots)

    def _inflated(
        self,
        messages: list[str | bytes | Compressed],
        ext: DeflateExtension,
        room: float,
        slots: float,
    ) -> tuple[list[Incoming], int | None]:
        """What :func:`whole_messages` read on a connection with the
        extension, compressed messages inflated in order (the context may
        carry over from one to the next); and None, or where in the data the
        first compressed message left uninflated begins, when the caller's
        ``room`` or ``slots`` ran out before it (as in :meth:`_events`: a few
        KiB of deflate data never become more than ``room`` plus one message).
        At the first message that fails, a Failure ends the list and the
        parser: its frame was consumed here, and the decompressor's state is
        lost."""
        out: list[Incoming] = []
        client = self._conn.client
        on_data = self._on_data
        for m in messages:
            if type(m) is tuple:
                text, payload, start = m
                if room <= 0 or slots <= 0:
                    return out, start
                inflated = ext.inflate_message(payload, client)
                if type(inflated) is not bytes:
                    self.dead = True
                    if inflated is CloseReason.MESSAGE_TOO_BIG:
                        out.append(self._too_big(True, parser_usable=False))
                    else:
                        reason = "invalid compressed data"
                        out.append(Failure(CloseCode.INVALID_PAYLOAD, reason, parser_usable=False))
                    return out, None
                if text:
                    try:
                        m = str(inflated, "utf-8")
                    except UnicodeDecodeError as exc:
                        self.dead = True
                        failure = Failure(CloseCode.INVALID_PAYLOAD, str(exc), parser_usable=False)
                        out.append(failure)
                        return out, None
                else:
                    m = inflated
            item = on_data(m, True)  # type: ignore[arg-type]  # str or bytes by now
            if item is not None:
                out.append(item)
                if type(item) is Failure:  # over the limit: not after a bounded inflate
                    return out, None
                room -= length(item)  # type: ignore[arg-type]  # str or bytes
                slots -= 1
        return out, None

    def resume(self, room: float = math.inf, slots: float = math.inf) -> list[Incoming]:
        """Go on parsing what :meth:`receive_data` left buffered for lack of
        room (see there); nothing new is fed."""
        if self.dead or self._conn.state is ConnectionState.CLOSED:
            self.backlog = False
            return []
        return self._events(room, slots)

    def _events(self, room: float, slots: float) -> list[Incoming]:
        """Turn wsproto's events into ours until the caller's room runs out."""
        self.backlog = False
        out: list[Incoming] = []
        for event in self._conn.events():
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                item = self._on_data(
                    event.data,  # type: ignore[attr-defined]
                    event.message_finished,  # type: ignore[attr-defined]
                    event.frame_finished,  # type: ignore[attr-defined]
                )
                if item is not None:
                    out.append(item)
                    if type(item) is Failure:
                        # What follows (the peer's close frame, perhaps) is
                        # still to be parsed when the parser is usable.
                        self.backlog = item.parser_usable and self._buffered()
                        return out
                    room -= length(item)  # type: ignore[arg-type]  # str, bytes or Piece
                    slots -= 1
                    if room <= 0 or slots <= 0:
                        self.backlog = self._buffered()
                        return out
            elif kind is Ping:
                out.append(PingReceived(bytes(event.payload)))  # type: ignore[attr-defined]
            elif kind is Pong:
                out.append(PongReceived(bytes(event.payload)))  # type: ignore[attr-defined]
            elif kind is CloseConnection:
                out.append(self._on_close(event))  # type: ignore[arg-type]
                return out
        failure = self._announced_too_big()
        if failure is not None:
            out.append(failure)
        return out

    def _buffered(self) -> bool:
        """Whether wsproto holds bytes it has not parsed yet (True when
        that cannot be known)."""
        buffer = self._buffer
        return buffer is None or len(buffer) > 0

    def _announced_too_big(self) -> Failure | None:
        """A frame whose header alone shows the message over the limit is
        refused before its payload arrives (wsproto would wait for it)."""
        limit = self._max_size
        decoder = self._decoder
        head = decoder.header if decoder is not None else None
        if limit is None or head is None or self._discarding:
            return None
        announced: int = head.payload_len - decoder.payload_consumed
        if head.opcode.iscontrol():
            return None
        if self.deflate is not None:
            # Maybe compressed (continuation frames carry no RSV1): inflating
            # shrinks incompressible data by deflate's block overhead, 5 bytes
            # per stored block, and a peer's blocks can be small (2 KiB at
            # zlib's memory level 5: 2,561 bytes over 1 MiB). zlib's widest
            # bound (deflateBound) is n + n/8 + n/64 + 5: below 8/7 of n.
            announced -= announced // 7 + 64
        if self._size + announced <= limit:
            return None
        self._streaming = self._drop_stream = False
        self.dead = True  # wsproto is mid-frame: it can parse nothing more for us
        return self._too_big(True, parser_usable=False)

    def _charge(self, piece: str | bytes, frame_end: bool) -> bool:
        """Count a piece of a message against max_message_size; False when
        over. Beyond the first FREE_FRAMES frames of a message, a frame of
        fewer than FRAME_MIN_CHARGE bytes (however many reads brought it)
        counts that much, so that a flood of tiny or empty frames also
        reaches the limit."""
        size = _size(piece)
        if frame_end:
            self._frames += 1
            frame = self._frame_bytes + size
            self._frame_bytes = 0
            if self._frames > FREE_FRAMES and frame < FRAME_MIN_CHARGE:
                size += FRAME_MIN_CHARGE - frame
        else:
            self._frame_bytes += size
        self._size += size
        return self._max_size is None or self._size <= self._max_size

    def _on_data(
        self, piece: str | bytes, finished: bool, frame_end: bool = True
    ) -> Incoming | None:
        """One piece of a message (wsproto hands out bytes, not bytearray);
        ``frame_end``: the piece ends its frame."""
        if self._discarding:
            if finished:
                self._discarding = False
            return None
        if self.stream_next and not self._parts and not self._streaming:
            # A message starts, and a receiver asked for it as a stream.
            self.stream_next = False
            self._streaming = True
        if self._streaming:
            return self._stream_piece(piece, finished, frame_end)
        parts = self._parts
        if finished and not parts:
            # The whole message arrived in one piece: the common case, no copy.
            limit = self._max_size
            if limit is not None and len(piece) > limit // 4 and _size(piece) > limit:
                return self._too_big(finished)
            return piece
        if not self._charge(piece, frame_end):
            return self._too_big(finished)
        if parts and len(parts[-1]) < MERGE_BELOW:
            parts[-1] += piece  # type: ignore[operator]  # the same type throughout
        else:
            parts.append(piece)
        if not finished:
            return None
        self._parts = []
        self._size = self._frames = 0
        if type(piece) is str:
            return "".join(parts)  # type: ignore[arg-type]
        return b"".join(parts)  # type: ignore[arg-type]

    def _stream_piece(
        self, piece: str | bytes, last: bool, frame_end: bool
    ) -> Piece | Failure | None:
        if not self._charge(piece, frame_end):
            self._streaming = self._drop_stream = False
            return self._too_big(last)
        if last:
            self._streaming = False
            self._size = self._frames = 0
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

    def _too_big(self, finished: bool, *, parser_usable: bool = True) -> Failure:
        """Refuse the current message with 1009; with a usable parser, skip
        the rest of it as it arrives."""
        self._parts = []
        self._size = self._frames = self._frame_bytes = 0
        self._discarding = not finished and parser_usable
        return Failure(
            CloseCode.MESSAGE_TOO_BIG,
            f"message larger than {self._max_size} bytes",
            parser_usable=parser_usable,
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
        ``compress`` is true, the message is not tiny and, if binary, looks
        compressible: see ``Deflate.skip_incompressible``): one frame, or a
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
                    and ext.leaves_uncompressed(message)
                )
            )
        ):
            # Uncompressed: the common case, framed without wsproto's copies.
            return frame_data(message, self._conn.client, frame_size)
        if (
            ext is not None
            and not self._fragmenting
            and self._conn.state is ConnectionState.OPEN
            and isinstance(message, (str, bytes, bytearray, memoryview))
            and (frame_size is None or len(message) <= frame_size)
        ):
            # A whole compressed message in one frame: deflated here with the
            # extension's compressor, framed without wsproto.
            client, text = self._conn.client, isinstance(message, str)
            data = str(message).encode() if text else bytes(message)  # type: ignore[arg-type]
            return frame_compressed(ext.deflate_message(data, client), text, client)
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
        if ext is not None and (not compress or ext.leaves_uncompressed(message)):
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
        (see :class:`Framings`); None when this one's frames are its own
        (a client masks each frame; a compressor that keeps its context
        depends on the messages before)."""
        if self._conn.client:
            return None
        ext = self.deflate
        if ext is None:
            return PLAIN
        if not ext.server_no_context_takeover:
            return None
        s = ext.settings
        bits = ext.server_max_window_bits
        return deflate_key(bits, s.level, s.memory_level, s.min_size, s.skip_incompressible)

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
