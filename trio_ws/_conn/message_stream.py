"""A message received piece by piece: what ``WebSocket.receive_stream()`` gives."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING

import trio

from .._wire.events import Message, Piece
from .writer import NotOpen

if TYPE_CHECKING:
    from .._errors import ConnectionClosed
    from .reader import Reader

__all__ = ["MessageStream"]


class MessageStream:
    """The next message, received as the peer's frames arrive::

        async with ws.receive_stream() as message:
            async for chunk in message:  # str or bytes, as message.is_text says
                ...

    Entering the block waits for the message to begin (cancel-safe: if
    cancelled, no message is taken). Each chunk is what one read brought in
    (at most 64 KiB; empty frames give no chunk), so a large message never
    has to be held whole;
    ``max_message_size`` still applies to its total and ends the connection
    with 1009 when exceeded. Leaving the block before the last chunk drops
    the rest of the message. Meanwhile other tasks' ``receive()`` calls wait
    for this message to end. A message that had already arrived whole comes
    as one chunk.
    """

    def __init__(
        self, reader: Reader, closed_error: Callable[[], Awaitable[ConnectionClosed]]
    ) -> None:
        self._reader = reader
        self._closed_error = closed_error
        self._first: Message | None = None
        self._done = False
        self._entered = False
        #: True for a text message (chunks are ``str``), False for binary.
        self.is_text = False

    async def __aenter__(self) -> MessageStream:
        if self._entered:
            raise RuntimeError("receive_stream() gives one message; call it again for the next")
        self._entered = True
        try:
            first = await self._reader.start_stream()
        except NotOpen:
            raise await self._closed_error() from None
        if type(first) is Piece:
            self._first, self._done = first.data, first.last
        else:
            self._first, self._done = first, True  # type: ignore[assignment]
        self.is_text = isinstance(self._first, str)
        return self

    def __aiter__(self) -> MessageStream:
        return self

    async def __anext__(self) -> Message:
        """The next non-empty chunk (cancel-safe: a cancelled call takes none)."""
        if self._first is not None:
            await trio.lowlevel.checkpoint()
            chunk, self._first = self._first, None
            if chunk:
                return chunk
        while not self._done:
            try:
                piece = await self._reader.next_piece()
            except NotOpen:
                raise await self._closed_error() from None
            self._done = piece.last
            if piece.data:
                return piece.data
        await trio.lowlevel.checkpoint()
        raise StopAsyncIteration

    async def read_all(self) -> Message:
        """The rest of the message, joined (mainly for tests and small messages)."""
        chunks = [chunk async for chunk in self]
        return "".join(chunks) if self.is_text else b"".join(chunks)  # type: ignore[arg-type]

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._done:
            self._done = True
            self._reader.abandon_stream()
