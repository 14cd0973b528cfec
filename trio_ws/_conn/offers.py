"""Handing a whole message to a connection's writer without waiting: the
broadcast path.

:class:`Offers` is the part of the writer (writer.py) that a hub's
broadcast loop calls once per recipient, through the connection's
``Delivery`` (delivery.py): :meth:`Offers.offer` hands on a frame that many
connections share, :meth:`Offers.queue_message` a message this connection
frames itself. On a socket with nothing else being written, the frame is
written at once, without a job or a task switch; otherwise it is queued for
the writer task within the caller's limits. These never wait and are not
checkpoints; the ``Outcome`` says what became of the message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .delivery import Outcome
from .write_jobs import Frames, Job, Message, NotOpen, Raw, SharedFrame, _rest, frame_message

if TYPE_CHECKING:
    from .._wire.protocol import Protocol
    from .close_state import CloseState

__all__ = ["Offers"]

_QUEUED, _FULL, _CLOSED = Outcome.QUEUED, Outcome.FULL, Outcome.CLOSED


class Offers:
    """The writer's path for messages handed on without waiting: a base
    class of ``Writer``, whose write lock, queue and writer task it uses."""

    # The writer's state that this part uses (set in Writer.__init__).
    __slots__ = (
        "_busy",
        "_fd",
        "_frame_size",
        "_jobs",
        "_protocol",
        "_queued_bytes",
        "_state",
        "binary_out",
        "broken",
        "bytes_out",
        "fragmenting",
        "text_out",
    )

    _busy: bool
    _jobs: list[Job]
    _fd: int
    _protocol: Protocol
    _frame_size: int | None
    _queued_bytes: int
    _state: CloseState
    fragmenting: bool
    broken: BaseException | None
    bytes_out: int
    text_out: int
    binary_out: int

    if TYPE_CHECKING:
        # ...and the writer's methods (see writer.py).
        def _write_now(self, data: Frames) -> int: ...
        def _count(self, size: int, text: bool | None) -> None: ...
        def _hand_off(self, rest: Raw) -> None: ...
        def _queue(self, job: Job) -> None: ...
        def _release(self) -> None: ...
        def _wake(self) -> None: ...

    def offer(
        self, frame: bytes, is_text: bool, size: int, max_frames: int, max_bytes: int
    ) -> Outcome:
        """Hand on a broadcast frame (the same bytes for every connection that
        shares it) without waiting: written now when nothing else is being
        written and the socket takes it, else queued for the writer task
        within the limits (see :meth:`_queue_within`, which also says what
        the result means). The broadcast loop's inner step."""
        if (
            self._busy
            or self._jobs
            or self._fd < 0
            or self.fragmenting
            or self._state.closing
            or self.broken is not None
        ):
            return self._queue_within(SharedFrame(frame, is_text), size, max_frames, max_bytes)
        # The same inline write as queue_message's, entered without a job:
        # going through _queue_within with a SharedFrame per connection and
        # broadcast measured 3.7 us per offer instead of 2.2, and in
        # bench/fanout.py (1000 clients, 64 B) 12.2 ms instead of 10.5 per
        # broadcast, 114k instead of 143k deliveries/s.
        self._busy = True
        return self._write_inline(frame, is_text, size)

    def queue_message(
        self, message: str | bytes, size: int, max_frames: int, max_bytes: int
    ) -> Outcome:
        """:meth:`offer` a message framed by this connection (when it is
        written: a client masks each frame, a compressor may keep context)."""
        if (
            self._busy
            or self._jobs
            or self._fd < 0
            or self.fragmenting
            or self._state.closing
            or self.broken is not None
        ):
            return self._queue_within(Message(message), size, max_frames, max_bytes)
        self._busy = True
        try:
            data = frame_message(self._protocol, message, True, self._frame_size)
        except NotOpen:
            self._release()
            return _QUEUED  # closing: the message is dropped, as a queued one would be
        except BaseException:
            self._release()
            raise
        return self._write_inline(data, type(message) is str, size)

    def _queue_within(
        self, job: Message | SharedFrame, size: int, max_frames: int, max_bytes: int
    ) -> Outcome:
        """:meth:`enqueue` a message of ``size`` bytes unless ``max_frames``
        frames or more than ``max_bytes`` bytes would then be waiting: returns
        QUEUED (queued; :meth:`offer` and :meth:`queue_message` also when
        written at once), FULL, or CLOSED once the connection is closing or
        its stream broke."""
        if self._state.closing or self.broken is not None:
            return _CLOSED
        waiting = self._queued_bytes
        if (waiting and waiting + size > max_bytes) or len(self._jobs) >= max_frames:
            return _FULL
        self.enqueue(job, size)
        return _QUEUED

    def enqueue(self, job: Message | SharedFrame, size: int) -> None:
        """Queue a whole message for the writer task without waiting (the
        broadcast path when it cannot be written at once), keeping its place
        among send() calls. ``size`` counts in :attr:`queued_bytes` while it
        waits; the caller enforces any limit first."""
        if self.broken is not None:
            raise NotOpen
        job.size = size
        self._queued_bytes += size
        self._queue(job)

    def _write_inline(self, data: Frames, text: bool | None, size: int) -> Outcome:
        """Write what the socket takes at once, holding the lock (and release
        it); the rest goes to the writer task, counting ``size`` bytes in
        :attr:`queued_bytes` while it waits. QUEUED, or CLOSED if the socket
        failed (reported through ``on_broken``)."""
        total = sum(map(len, data)) if type(data) is list else len(data)  # _size, inlined
        try:
            sent = self._write_now(data)
        except NotOpen:
            return _CLOSED
        if sent == total:
            # _count and _release, inlined: the broadcast loop's common case.
            self.bytes_out += total
            if text:
                self.text_out += 1
            elif text is not None:
                self.binary_out += 1
            self._busy = False
            if self._jobs:
                self._wake()
            return _QUEUED
        # The socket is full: the rest of the frame waits for the writer.
        self._count(sent, None)
        rest = Raw(_rest(data, sent), text)
        rest.size = size
        self._queued_bytes += size
        self._hand_off(rest)
        return _QUEUED
