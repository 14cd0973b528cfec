"""Reading one connection's stream: the message queue and who reads, when.

On a plain TCP socket a task blocked in ``receive()`` reads the socket itself,
so a message reaches it without a task switch. Whenever no task is receiving,
the connection's reader task reads instead (after a short delay, so that a
receive loop does not have to hand over each time it comes back): it answers
pings, notices close frames and dead peers, and fills the message queue up to
``max_queue`` messages, then stops reading until there is room again. That
is the backpressure: a peer that outpaces the application fills its own TCP
window, not our memory. Socket reads are atomic under cancellation, so a
cancelled ``receive()`` loses nothing.

On other streams (TLS, memory streams) only the reader task reads, because a
cancelled TLS read can break the stream.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Awaitable, Callable

import trio

from .._wire.events import Incoming, Message, Piece, length
from .._wire.protocol import Protocol
from .close_state import CloseState
from .write_jobs import STREAM_ERRORS, NotOpen, descriptor

__all__ = ["READ_SIZE", "Reader"]

#: Bytes asked of the stream per read: enough for a 64 KiB frame and its
#: header in one read, and just under the 128 KiB above which glibc's malloc
#: maps fresh pages for each buffer (a read's buffer is allocated at this size
#: first, then shrunk to what arrived).
READ_SIZE = 126976
#: How long the reader task waits, after the last receive() returned, before
#: it starts reading in the background (direct mode only).
BACKGROUND_READ_DELAY = 0.005


class _Wait(enum.Enum):
    NONE = 0
    RECEIVERS = 1  # a task is receiving; it reads for itself
    SPACE = 2  # the queue is full
    OTHER_READER = 3  # closing, but a receiver is still in a read
    DELAY = 4  # waiting a moment before reading in the background


class Reader:
    """The incoming side of one connection.

    It asks the connection's close state (``state``) whether closing has
    started: from then on no more messages are queued (receivers get
    :class:`NotOpen` once the queue is drained) and the reader task reads at
    once, full queue or not, until end-of-file. The owner moves that state:
    ``on_event`` gets the peer's control frames and failures, ``on_eof`` the
    end of the stream (which must start closing: ``CloseState.stream_ended``),
    and calls :meth:`wake` when closing starts.
    """

    __slots__ = (
        "_delay_next_read",
        "_eof_event",
        "_fd",
        "_max_queue",
        "_max_queue_bytes",
        "_messages",
        "_on_eof",
        "_on_event",
        "_protocol",
        "_queued_bytes",
        "_reading",
        "_receive_some",
        "_receivers",
        "_recv_lot",
        "_state",
        "_stream",
        "_stream_owner",
        "_task_lot",
        "_task_wait",
        "binary_in",
        "bytes_read",
        "direct",
        "discarded",
        "eof",
        "resumed_at",
        "text_in",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: Protocol,
        state: CloseState,
        max_queue: int,
        on_event: Callable[[Incoming], None],
        on_eof: Callable[[BaseException | None], None],
        max_queue_bytes: float = math.inf,
    ) -> None:
        self._stream = stream
        self._protocol = protocol
        self._state = state
        self._max_queue = max_queue
        self._max_queue_bytes = max_queue_bytes
        self._on_event = on_event
        self._on_eof = on_eof
        #: A plain socket: receivers read it themselves, and a read can be
        #: cancelled without harm (on TLS, only outside a renegotiation).
        self.direct = isinstance(stream, trio.SocketStream)
        # On a socket, read its descriptor directly (see _read_once); on
        # Windows, through trio's socket, one wrapper layer less than the stream.
        self._fd = descriptor(stream)
        self._receive_some: Callable[[int], Awaitable[bytes | bytearray]] | None = None
        if self._fd < 0:
            self._receive_some = (
                stream.socket.recv
                if isinstance(stream, trio.SocketStream)
                else stream.receive_some
            )
        # A list, not a deque: an empty deque costs 760 bytes, an empty list
        # 56, and the queue is short (at most max_queue, plus one read's worth).
        self._messages: list[Message | Piece] = []
        # Their size: bytes, or characters of text (what max_queue_bytes bounds).
        self._queued_bytes = 0
        self._stream_owner: trio.lowlevel.Task | None = None  # see start_stream()
        self._receivers = 0  # tasks inside receive()
        self._reading = False  # someone is inside receive_some()
        # Where receivers wait for someone else's read (made when first needed).
        self._recv_lot: trio.lowlevel.ParkingLot | None = None
        self._task_lot = trio.lowlevel.ParkingLot()
        self._task_wait = _Wait.NONE
        self._delay_next_read = False
        #: True once the stream reported end-of-file or an error: an I/O fact
        #: this reader observes (the close state learns it through on_eof),
        #: kept here because the closing sequence waits for it after the
        #: state settled (see :meth:`wait_eof`).
        self.eof = False
        self._eof_event: trio.Event | None = None  # made for wait_eof()
        #: When reading last resumed after a pause (see ``paused``).
        self.resumed_at = -math.inf
        #: Messages dropped because they arrived once closing had started.
        self.discarded = 0
        #: Bytes read from the stream, and messages received by type.
        self.bytes_read = 0
        self.text_in = 0
        self.binary_in = 0

    @property
    def paused(self) -> bool:
        """True while nothing is read because the message queue is full."""
        return self._full() and not self._state.closing

    def _full(self) -> bool:
        """The queue holds ``max_queue`` messages or ``max_queue_bytes``."""
        return (
            len(self._messages) >= self._max_queue or self._queued_bytes >= self._max_queue_bytes
        )

    def _pop(self) -> Message | Piece:
        """Take the first queued message or piece."""
        item = self._messages.pop(0)
        self._queued_bytes -= length(item)
        return item

    async def wait_eof(self) -> None:
        """Wait until the stream reported end-of-file or an error."""
        if self.eof:
            await trio.lowlevel.checkpoint()
            return
        if self._eof_event is None:
            self._eof_event = trio.Event()
        await self._eof_event.wait()

    async def _park_receiver(self) -> None:
        """Wait for whoever reads (or streams) to let this receiver go on."""
        if self._recv_lot is None:
            self._recv_lot = trio.lowlevel.ParkingLot()
        await self._recv_lot.park()

    def _unpark_receivers(self) -> None:
        if self._recv_lot:
            self._recv_lot.unpark_all()

    @property
    def queued(self) -> int:
        """Messages received and not yet taken by ``receive()``."""
        return len(self._messages)

    @property
    def queued_bytes(self) -> int:
        """What they take in memory, as ``max_queue_bytes`` counts it."""
        return self._queued_bytes

    # -- receiving -----------------------------------------------------------

    async def receive(self) -> Message:
        """Return the next message. Raise :class:`NotOpen` once the queue is
        drained and no more messages will come. Cancel-safe: a cancelled call
        takes no message. While another task receives a message as a stream,
        waits for that stream to end."""
        messages = self._messages
        self._receivers += 1
        try:
            blocked = False
            if messages and self._stream_owner is None:
                await trio.lowlevel.checkpoint()
                blocked = True
            while not messages or self._stream_owner is not None:
                if self._stream_owner is not None:
                    await self._park_receiver()
                    blocked = True
                else:
                    blocked = await self._wait() or blocked
            message = messages.pop(0)
            # length(message), inlined for the common case: bytes or ASCII text.
            self._queued_bytes -= (
                len(message)  # type: ignore[arg-type]  # whole: see below
                if type(message) is bytes or message.isascii()  # type: ignore[union-attr]
                else length(message)
            )
            if not blocked:  # taken: this checkpoint cannot lose it
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._left()
        return message  # type: ignore[return-value]  # whole: pieces belong to streams

    async def _wait(self) -> bool:
        """Wait for something to arrive: read the socket ourselves if that is
        our turn, else wait for whoever reads. NotOpen if nothing will come.
        Returns False if it neither blocked nor let other tasks run (data was
        there to read): the caller owes the scheduler a checkpoint."""
        if self._state.closing:
            raise NotOpen
        if self._protocol.backlog and not self._reading:
            self.process_backlog()  # parsing only: any task may, even on TLS
            return False
        if self.direct and not self._reading:
            return await self._read_once()
        await self._park_receiver()
        return True

    async def _next_queued(self) -> Message | Piece:
        """``_wait()`` until something is queued and take it, with one
        scheduling point (after taking it, where it cannot be cancelled)."""
        blocked = False
        messages = self._messages
        while not messages:
            blocked = await self._wait() or blocked
        item = self._pop()
        if not blocked:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return item

    def _left(self) -> None:
        """A receiver leaves: wake the reader task if it waits on us."""
        self._receivers -= 1
        if self._receivers == 0 and self._task_wait is _Wait.RECEIVERS:
            self._wake_task(delay=True)
        if self._task_wait is _Wait.SPACE and not self._full():
            # As above: a receiver that just took a message will likely be
            # back to read for itself.
            self._wake_task(delay=self.direct)

    # -- messages received as streams -------------------------------------------

    async def start_stream(self) -> Piece | Message:
        """Claim the next message as a stream; return its first piece (a whole
        message if one was already assembled). One stream at a time; others
        wait. Cancel-safe: if cancelled, nothing was taken."""
        messages = self._messages
        self._receivers += 1
        try:
            while self._stream_owner is not None:
                await self._park_receiver()
            self._stream_owner = trio.lowlevel.current_task()
            try:
                if messages:
                    await trio.lowlevel.checkpoint()
                if messages and type(messages[0]) is not Piece:
                    whole = self._pop()
                    self._end_stream()
                    return whole
                first = self._protocol.request_stream()
                if first is not None:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    return first
                if messages:
                    return self._pop()
                return await self._next_queued()
            except BaseException:
                self._protocol.cancel_stream_request()
                self._unclaim()
                self._end_stream()
                raise
        finally:
            self._left()

    async def next_piece(self) -> Piece:
        """The next piece of the claimed stream. Cancel-safe."""
        messages = self._messages
        self._receivers += 1
        try:
            if messages:
                await trio.lowlevel.checkpoint()
            piece = self._pop() if messages else await self._next_queued()
        finally:
            self._left()
        assert type(piece) is Piece
        if piece.last:
            self._end_stream()
        return piece

    def abandon_stream(self) -> None:
        """The stream's receiver left before its last piece: drop the rest."""
        messages = self._messages
        while messages and type(messages[0]) is Piece:
            if self._pop().last:  # type: ignore[union-attr]
                break
        else:
            self._protocol.drop_stream()  # the rest is dropped as it arrives
        self._end_stream()

    def _unclaim(self) -> None:
        """Pieces were queued for a stream whose receiver gave up before
        taking any: hand the message back to receive(), whole."""
        messages = self._messages
        parts: list[str | bytes] = []
        while messages and type(messages[0]) is Piece:
            piece = messages.pop(0)
            parts.append(piece.data)  # type: ignore[union-attr]
            if piece.last:  # type: ignore[union-attr]
                joined = "".join(parts) if type(parts[0]) is str else b"".join(parts)  # type: ignore[arg-type]
                messages.insert(0, joined)
                return
        if parts:
            # The message goes back to being assembled: out of the queue.
            self._queued_bytes -= sum(map(length, parts))
            self._protocol.unstream(parts)

    def _end_stream(self) -> None:
        self._stream_owner = None
        self._unpark_receivers()

    def wake(self) -> None:
        """Closing has started (or the stream is closed): every waiting
        receiver looks again (and gets :class:`NotOpen` once the queue is
        drained), and the reader task reads now, even if the queue is full,
        until end-of-file."""
        self._unpark_receivers()
        self._wake_task()

    def read_now(self) -> None:
        """Something awaits the peer (a pong): skip the background-read delay."""
        if self._task_wait is _Wait.DELAY:
            self._wake_task()

    def _wake_task(self, *, delay: bool = False) -> None:
        self._task_wait = _Wait.NONE
        self._delay_next_read = delay
        self._task_lot.unpark()

    # -- reading -------------------------------------------------------------

    async def _read_once(self) -> bool:
        """Read once and process what came. Returns whether it blocked (or
        otherwise let other tasks run); on a socket, data already waiting is
        read without a trip through the scheduler, and the caller owes it a
        checkpoint. A cancellation point; cancelled, it has read nothing.

        On a socket it reads the descriptor itself (written out here rather
        than in a helper: an idle connection waits in this frame, and each
        frame on that stack costs about 200 bytes)."""
        self._reading = True
        blocked = True
        data: bytes | bytearray
        fd = self._fd
        try:
            if fd >= 0:
                await trio.lowlevel.checkpoint_if_cancelled()
                try:
                    data = os.read(fd, READ_SIZE)
                    blocked = False
                except BlockingIOError:
                    data = b""  # (not waiting in here: that would keep the exception alive)
                while blocked:
                    await trio.lowlevel.wait_readable(fd)
                    try:
                        data = os.read(fd, READ_SIZE)
                        break
                    except BlockingIOError:
                        pass
            else:
                assert self._receive_some is not None
                data = await self._receive_some(READ_SIZE)
        except STREAM_ERRORS as exc:
            self._reading = False
            self._set_eof(exc)
            return blocked
        except BaseException:  # cancelled: nothing was read; let someone else read
            self._reading = False
            self._after_read()
            raise
        self._reading = False
        if not data:
            self._set_eof(None)
            return blocked
        self.bytes_read += len(data)
        self.process(data)
        self._after_read()
        return blocked

    def process(self, data: bytes | bytearray) -> None:
        """Feed bytes read from the stream (or left over from the handshake).
        What does not fit in the queue stays unparsed (see process_backlog)."""
        self._take(self._protocol.receive_data(data, *self._room()))

    def process_backlog(self) -> None:
        """Parse what the protocol kept back when the queue was full."""
        self._take(self._protocol.resume(*self._room()))

    def _room(self) -> tuple[float, float]:
        """How much more the queue takes: bytes, messages (no limit once
        closing: whatever comes is dropped)."""
        if self._state.closing:
            return math.inf, math.inf
        return (
            self._max_queue_bytes - self._queued_bytes,
            self._max_queue - len(self._messages),
        )

    def _take(self, items: list[Incoming]) -> None:
        messages = self._messages
        state = self._state  # read per item: a close among them ends the queue
        for item in items:
            kind = type(item)
            if kind is str:
                self.text_in += 1
            elif kind is bytes:
                self.binary_in += 1
            elif kind is Piece:
                if item.last:  # type: ignore[union-attr]
                    if type(item.data) is str:  # type: ignore[union-attr]
                        self.text_in += 1
                    else:
                        self.binary_in += 1
            else:
                self._on_event(item)
                continue
            if state.closing:
                self.discarded += 1
            else:
                messages.append(item)  # type: ignore[arg-type]
                self._queued_bytes += length(item)  # type: ignore[arg-type]  # a message or piece

    def _after_read(self) -> None:
        self._unpark_receivers()
        if self._task_wait is _Wait.OTHER_READER:
            self._wake_task()

    def _set_eof(self, error: BaseException | None) -> None:
        if not self.eof:
            self.eof = True
            if self._eof_event is not None:
                self._eof_event.set()
            self._on_eof(error)  # which starts closing, if it had not
        self._unpark_receivers()
        self._task_lot.unpark_all()

    async def run(self) -> None:
        """The reader task's work: read whenever no receiver does, until
        end-of-file. May be cancelled at any wait (the connection's keepalive
        timer does so) and run again: nothing read is lost."""
        lot = self._task_lot
        state = self._state
        self._task_wait = _Wait.NONE
        while not self.eof:
            if not state.closing:  # closing: read at once, whatever else
                if self._full():
                    self._task_wait = _Wait.SPACE
                    await lot.park()
                    self.resumed_at = trio.current_time()  # woken: there is room
                    continue
                if self.direct:
                    if self._receivers:
                        self._task_wait = _Wait.RECEIVERS
                        await lot.park()
                        continue
                    if self._delay_next_read:
                        self._delay_next_read = False
                        self._task_wait = _Wait.DELAY
                        with trio.move_on_after(BACKGROUND_READ_DELAY):
                            await lot.park()
                        self._task_wait = _Wait.NONE
                        continue
            if self._reading:
                self._task_wait = _Wait.OTHER_READER
                await lot.park()
                continue
            if self._protocol.backlog:
                self.process_backlog()
                self._unpark_receivers()
                await trio.lowlevel.cancel_shielded_checkpoint()
                continue
            if not await self._read_once():
                await trio.lowlevel.cancel_shielded_checkpoint()
