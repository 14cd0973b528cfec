"""Handing messages to connections without waiting: the one seam between a
connection and what fans messages out to many of them (the hub today; a
backplane or an ASGI bridge later).

- :class:`Framings` frames a whole message once for every connection that
  would frame it the same way (same side, same compression settings), and is
  owned by whoever fans out (a hub has one): no process-wide state.
- :class:`Delivery` is one connection's side of the seam: ``offer()`` hands
  it a message (pre-framed where its settings allow) within queue limits,
  without waiting, and says what became of it (:class:`Outcome`);
  ``shed_and_close()`` drops what is queued and closes it, for a client that
  fell behind. Nothing else of a connection is touched from outside it.

No I/O and no waiting here: the connection's writer does the writing.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, cast

from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage

from .._wire.deflate import Deflate, DeflateExtension
from .._wire.protocol import PLAIN, deflate_key

if TYPE_CHECKING:
    from .writer import Writer

__all__ = ["PLAIN", "Delivery", "Framings", "Outcome", "deflate_key"]


class Outcome(enum.IntEnum):
    """What became of a message offered to a connection."""

    #: Written at once, or queued for the connection's writer task.
    QUEUED = 1
    #: Not queued: the connection's queue is at its limit.
    FULL = 0
    #: Not queued: the connection is closing, or its stream broke.
    CLOSED = -1


def _framer(key: Hashable) -> tuple[Connection, DeflateExtension | None]:
    """A server-side wsproto connection that frames as connections with this
    key do (used only to frame, never to talk)."""
    if key == PLAIN:
        return Connection(ConnectionType.SERVER), None
    _, bits, level, memory_level, min_size, skip = cast(
        "tuple[str, int, int, int, int, bool]", key
    )
    settings = Deflate(
        server_max_window_bits=bits,
        server_no_context_takeover=True,
        level=level,
        memory_level=memory_level,
        min_size=min_size,
        skip_incompressible=skip,
    )
    extension = settings.extension(client=False, max_message_size=None)
    extension.accept("permessage-deflate; server_no_context_takeover")
    return Connection(ConnectionType.SERVER, [extension]), extension


class Framings:
    """Whole messages framed once per frame key, for many connections: a
    broadcast asks each recipient's key for its frame, and only the first
    asker of each key pays for the framing (and compression)."""

    __slots__ = ("_framers", "_last")

    def __init__(self) -> None:
        self._framers: dict[Hashable, tuple[Connection, DeflateExtension | None]] = {}
        # The last message framed for each key, and its frame.
        self._last: dict[Hashable, tuple[object, bytes]] = {}

    def plain(self, message: str | bytes) -> bytes:
        """The frame of server connections without extensions."""
        return self.frame(message, PLAIN)

    def frame(self, message: str | bytes, key: Hashable) -> bytes:
        """Frame a whole message as every server connection with this frame
        key would (uncompressed where they would leave it uncompressed: see
        ``Deflate.min_size`` and ``Deflate.skip_incompressible``). Raises
        TypeError for other types than str and bytes."""
        last = self._last.get(key)
        if last is not None and last[0] is message:
            return last[1]
        framer = self._framers.get(key)
        if framer is None:
            framer = self._framers[key] = _framer(key)
        connection, extension = framer
        event: TextMessage | BytesMessage
        if isinstance(message, str):
            event = TextMessage(data=message)
        elif isinstance(message, bytes):
            event = BytesMessage(data=message)
        else:
            raise TypeError(
                "a WebSocket message is str (text) or bytes (binary), not "
                f"{type(message).__name__}"
            )
        if extension is not None and extension.leaves_uncompressed(message):
            # Tiny, or binary data that looks incompressible: RSV1 clear.
            extension.skip_next = True
        frame = connection.send(event)
        self._last[key] = (message, frame)
        return frame

    @property
    def keys(self) -> int:
        """How many frame keys have a framer (each costs a compressor)."""
        return len(self._framers)


class Delivery:
    """One connection's side of the seam: what a hub keeps for each member.

    Made by the connection (``WebSocket._delivery()``); its methods never
    wait, never raise for the state of the connection, and are not
    checkpoints.
    """

    __slots__ = ("_aclose", "_close", "_key", "_writer", "offer_frame", "shares_plain_frame")

    def __init__(
        self,
        writer: Writer,
        frame_key: Hashable | None,
        close: Callable[[int, str, str], None],
        aclose: Callable[[int, str, str], Awaitable[None]],
    ) -> None:
        self._writer = writer
        self._key = frame_key
        self._close = close
        self._aclose = aclose
        #: True when this connection writes :meth:`Framings.plain` frames as
        #: they are; then :attr:`offer_frame` is the whole of an offer.
        self.shares_plain_frame = frame_key is PLAIN
        #: ``offer_frame(frame, is_text, size, max_frames, max_bytes)``:
        #: :meth:`offer` of an already framed message, for connections that
        #: :attr:`shares_plain_frame` (the broadcast loop's fast path).
        self.offer_frame = writer.offer

    def offer(
        self,
        message: str | bytes,
        plain_frame: bytes,
        size: int,
        max_frames: int,
        max_bytes: int,
        framings: Framings,
    ) -> Outcome:
        """Hand on ``message`` without waiting: written at once when nothing
        is queued ahead and the socket takes it, else queued for the writer
        task, unless ``max_frames`` frames or more than ``max_bytes`` bytes
        would then be waiting. ``plain_frame`` is its :meth:`Framings.plain`
        framing, written as is where this connection allows; otherwise the
        message is framed for this connection (through ``framings`` where
        other connections share its settings). ``size`` counts toward
        ``max_bytes`` while it waits."""
        key = self._key
        writer = self._writer
        if key is None:  # framed by this connection alone (a client, a compressor context)
            return writer.queue_message(message, size, max_frames, max_bytes)
        if key is not PLAIN:
            plain_frame = framings.frame(message, key)
        return writer.offer(plain_frame, type(message) is str, size, max_frames, max_bytes)

    def shed_and_close(self, code: int, reason: str, cause: str) -> int:
        """Drop the queued messages not yet started and start closing with
        ``code`` (a client that fell behind), without waiting. Returns how
        many messages were dropped."""
        dropped = self._writer.drop_queued_messages()
        self._close(code, reason, cause)
        return dropped

    async def aclose(self, code: int, reason: str, cause: str) -> None:
        """Close the connection (``ws.aclose()``, with ``cause`` kept in its
        close info) and wait until it is closed; cancelled, it aborts it."""
        await self._aclose(code, reason, cause)

    @property
    def queued(self) -> int:
        """Frames waiting to be written to this connection."""
        return self._writer.queued

    @property
    def queued_bytes(self) -> int:
        """Bytes of offered messages waiting to be written."""
        return self._writer.queued_bytes
