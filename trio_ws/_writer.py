"""Serialised, cancel-safe writing of frames to one connection's stream.

One write lock guards the stream. On a plain TCP socket the task that calls
``send()`` writes its frame itself, with non-blocking ``os.write`` calls on
the socket's descriptor, which report exactly how much was written; if it is
cancelled while waiting to write the rest of a frame, the rest is handed,
together with the lock, to a writer task, which finishes it. So the stream
never carries a partial frame. The writer task is started only when
something has to wait (another writer holds the lock, the socket is full, a
pong is owed) and ends when nothing is left; a broadcast to a socket that can
take the frame at once writes it without any task switch.

On other streams (TLS, memory streams), where a cancelled ``send_all`` leaves
the stream unusable, a permanent writer task writes every frame and callers
only wait for it.

Frames are encoded while the lock is held, so frames reach the wire in the
order they were encoded (which stateful encoders such as compression need).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import outcome
import trio

from ._delivery import Outcome
from ._protocol import Protocol
from ._write_jobs import (
    _IOV_MAX,
    _WHOLE_MESSAGES,
    STREAM_ERRORS,
    Frames,
    Kind,
    NotOpen,
    Spawn,
    _Job,
    _rest,
    _size,
    _State,
    descriptor,
)

__all__ = [
    "STREAM_ERRORS",
    "Kind",
    "NotOpen",
    "Writer",
    "descriptor",
]

_QUEUED, _FULL, _CLOSED = Outcome.QUEUED, Outcome.FULL, Outcome.CLOSED


class Writer:
    """Everything written to a stream after the opening handshake goes through here."""

    __slots__ = (
        "_busy",
        "_fd",
        "_frame_size",
        "_handed_off",
        "_held",
        "_jobs",
        "_lot",
        "_on_broken",
        "_pong",
        "_protocol",
        "_queued_bytes",
        "_running",
        "_spawn",
        "_stream",
        "_stream_frames",
        "binary_out",
        "broken",
        "bytes_out",
        "closing",
        "fragmenting",
        "stateful_encoding",
        "text_out",
        "turn_taken",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: Protocol,
        on_broken: Callable[[BaseException], None],
        spawn: Spawn,
        frame_size: int | None = None,
    ) -> None:
        self._stream = stream
        self._frame_size = frame_size
        self._protocol = protocol
        self._on_broken = on_broken
        self._spawn = spawn
        self._fd = descriptor(stream)  # -1: every frame goes through the writer task
        # A list, not a deque: an empty deque costs 760 bytes, an empty list 56.
        self._jobs: list[_Job] = []
        self._busy = False  # the write lock
        self._handed_off = False  # the lock was handed to the writer task
        self._running = False  # the writer task exists
        #: True between the first and the last frame of a streamed message:
        #: no other message's frame may be written then (control frames may).
        self.fragmenting = False
        self._held: list[_Job] = []  # whole messages waiting for the stream to end
        self._stream_frames = 0
        self._lot: trio.lowlevel.ParkingLot | None = None  # where the writer task waits
        #: Set when a write failed or the connection ended: nothing more is written.
        self.broken: BaseException | None = None
        #: True when an encoded frame must be written even if its send() is
        #: cancelled before any byte went out (stateful encoders).
        self.stateful_encoding = protocol.compressor_keeps_context
        #: Messages written (by type) and bytes handed to the stream.
        self.text_out = 0
        self.binary_out = 0
        self.bytes_out = 0
        self._queued_bytes = 0
        # The pong queued and not yet started, if any (see post_pong).
        self._pong: _Job | None = None
        #: Set when the connection starts closing: broadcasts skip it.
        self.closing = False
        #: The task whose receive() let other tasks run since its last send():
        #: its next send() on a socket need not do so again.
        self.turn_taken: trio.lowlevel.Task | None = None

    def start(self) -> None:
        """Start the permanent writer task where one is needed (not a socket)."""
        if self._fd < 0:
            self._running = True
            self._spawn(self._run)

    # -- encoding ------------------------------------------------------------

    def _encode(self, kind: Kind, payload: Any) -> Frames | None:
        proto = self._protocol
        if kind is Kind.MESSAGE or kind is Kind.UNCOMPRESSED:
            if not proto.can_send_data:
                raise NotOpen
            return proto.encode_message(payload, kind is Kind.MESSAGE, self._frame_size)
        if kind is Kind.RAW:
            return payload  # type: ignore[no-any-return]
        if kind is Kind.FRAME:
            if not proto.can_send_data:
                raise NotOpen
            return payload[0]  # type: ignore[no-any-return]
        if kind is Kind.FRAGMENT:
            if not proto.can_send_data:
                raise NotOpen
            data, last, compress = payload
            frame = proto.encode_fragment(data, last, compress)
            self._stream_frames += 1
            if last:
                self._end_stream()
            return frame
        if kind is Kind.CLOSE:
            if not proto.can_send_close:
                return None
            return proto.encode_close(*payload)
        if not proto.can_send_data:
            if kind is Kind.PING:
                raise NotOpen
            return None  # a pong owed to a peer that is closing: skip it
        if kind is Kind.PING:
            return proto.encode_ping(payload)
        return proto.encode_pong(payload)

    def _count(self, kind: Kind, payload: Any, size: int) -> None:
        self.bytes_out += size
        if kind is Kind.MESSAGE or kind is Kind.UNCOMPRESSED:
            is_text = type(payload) is str
        elif kind is Kind.FRAME:
            is_text = payload[1]
        elif kind is Kind.FRAGMENT and payload[1]:
            is_text = type(payload[0]) is str  # a streamed message counts once, at its end
        else:
            return
        if is_text:
            self.text_out += 1
        else:
            self.binary_out += 1

    # -- the caller's side ---------------------------------------------------

    async def send(self, kind: Kind, payload: Any) -> None:
        """Encode and write one frame.

        Cancellation: if cancelled before any byte of the frame was written,
        the frame is not sent (unless ``stateful_encoding``); otherwise the
        writer task finishes it. Either way the stream stays well-formed.
        Raises :class:`NotOpen` if the connection state forbids the frame or
        the stream broke (the breakage is reported through ``on_broken``).
        """
        if self.broken is not None:
            await trio.lowlevel.checkpoint()
            raise NotOpen
        if self.fragmenting and kind in _WHOLE_MESSAGES:
            await self._wait_held(kind, payload)
            return
        if self._fd >= 0 and not self._busy and not self._jobs:
            # Cancellation point: nothing is encoded or written if cancelled.
            await trio.lowlevel.checkpoint_if_cancelled()
            self._busy = True
            try:
                data = self._encode(kind, payload)
            except BaseException:
                self._release()
                raise
            if data is not None:
                await self._write_direct(data)
                self._count(kind, payload, _size(data))
            else:
                self._release()
            if self.turn_taken is trio.lowlevel.current_task():
                # This task let others run in receive() since its last send:
                # that was its turn; a receive/send loop yields once per message.
                self.turn_taken = None
            else:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return
        job = _Job(kind, payload, trio.lowlevel.current_task())
        self._jobs.append(job)
        if not self._busy:
            self._wake()
        await self._wait_for(job)

    async def _wait_held(self, kind: Kind, payload: Any) -> None:
        """A whole message sent while a streamed one is in progress: it waits
        for the stream to end, then goes out in its turn."""
        job = _Job(kind, payload, trio.lowlevel.current_task())
        self._held.append(job)
        await self._wait_for(job)

    @staticmethod
    async def _wait_for(job: _Job) -> None:
        def abort(_: Any) -> trio.lowlevel.Abort:
            if job.state is _State.QUEUED:
                job.state = _State.CANCELLED
            job.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _write_now(self, data: Frames) -> int:
        """Write what the socket takes at once, without waiting. Raises
        NotOpen (after reporting the breakage) if the socket failed."""
        try:
            if type(data) is list:
                return os.writev(self._fd, data[:_IOV_MAX])
            return os.write(self._fd, data)  # type: ignore[arg-type]
        except BlockingIOError:
            return 0
        except OSError as exc:
            self._release()
            self._break(exc)
            raise NotOpen from exc

    async def _write_direct(self, data: Frames) -> None:
        """Write whole frames, holding the lock; release it (or hand it off)."""
        total = _size(data)
        sent = self._write_now(data)
        if sent == total:
            self._release()
            return
        try:
            while sent < total:
                await trio.lowlevel.wait_writable(self._fd)
                sent += self._write_now(_rest(data, sent))
        except trio.Cancelled:
            if sent or self.stateful_encoding:
                self._hand_off(_rest(data, sent))
            else:
                self._release()
            raise
        except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            self._release()
            self._break(exc)
            raise NotOpen from exc
        self._release()

    def _hand_off(self, rest: Frames) -> None:
        """Give the rest of the frames, and the lock, to the writer task."""
        # Views of our own frames (bytes): nothing the caller could change.
        self._jobs.insert(0, _Job(Kind.RAW, rest, None))
        self._handed_off = True
        self._wake()

    def post(self, kind: Kind, payload: Any) -> None:
        """Queue a frame for the writer task without waiting (keepalive pings)."""
        if self.broken is not None:
            return
        self._jobs.append(_Job(kind, payload, None))
        if not self._busy:
            self._wake()

    def post_pong(self, payload: bytes) -> None:
        """Queue a pong for the writer task without waiting. While one is
        still waiting to be written, it just takes this newer payload (RFC
        6455 5.5.3 allows answering only the most recent ping): a peer that
        sends pings and never reads holds one pong here, not one per ping."""
        pong = self._pong
        if pong is not None and pong.state is _State.QUEUED:
            pong.payload = payload
            return
        if self.broken is not None:
            return
        self._pong = _Job(Kind.PONG, payload, None)
        self._jobs.append(self._pong)
        if not self._busy:
            self._wake()

    def enqueue(self, kind: Kind, payload: Any, size: int) -> None:
        """Send a message (``MESSAGE``) or an already framed one (``FRAME``)
        without waiting: the broadcast path. Written at once when the socket
        takes it; otherwise queued for the writer task, keeping its place
        among send() calls. ``size`` counts in :attr:`queued_bytes` while it
        waits; the caller enforces any limit first."""
        if self.broken is not None:
            raise NotOpen
        if self.fragmenting:
            self._held.append(_Job(kind, payload, None, size))
            self._queued_bytes += size
            return
        if self._fd >= 0 and not self._busy and not self._jobs:
            self._busy = True
            try:
                data = self._encode(kind, payload)
            except NotOpen:
                self._release()
                return  # closing: the message is dropped, as a queued one would be
            except BaseException:
                self._release()
                raise
            assert data is not None
            total = _size(data)
            sent = self._write_now(data)
            self._count(kind, payload, total)
            if sent == total:
                self._release()
                return
            # The socket is full: the rest of the frame waits for the writer.
            self._hand_off(_rest(data, sent))
            self._queued_bytes += size
            self._jobs[0].size = size
            return
        self._jobs.append(_Job(kind, payload, None, size))
        self._queued_bytes += size
        if not self._busy:
            self._wake()

    def queue_message(
        self, message: str | bytes, size: int, max_frames: int, max_bytes: int
    ) -> Outcome:
        """:meth:`enqueue` a message (framed when written) unless it does not fit."""
        return self._queue_within(Kind.MESSAGE, message, size, max_frames, max_bytes)

    def _queue_within(
        self, kind: Kind, payload: Any, size: int, max_frames: int, max_bytes: int
    ) -> Outcome:
        """:meth:`enqueue` a message of ``size`` bytes unless ``max_frames``
        frames or more than ``max_bytes`` bytes would then be waiting: returns
        QUEUED (queued, or written at once), FULL, or CLOSED once the
        connection is closing or its stream broke."""
        if self.closing or self.broken is not None:
            return _CLOSED
        waiting = self._queued_bytes
        if (waiting and waiting + size > max_bytes) or len(self._jobs) >= max_frames:
            return _FULL
        try:
            self.enqueue(kind, payload, size)
        except NotOpen:
            return _CLOSED
        return _QUEUED

    def offer(
        self, frame: bytes, is_text: bool, size: int, max_frames: int, max_bytes: int
    ) -> Outcome:
        """Hand on a broadcast frame without waiting: written now when nothing
        else is being written and the socket takes it, else queued for the
        writer task within the limits (see :meth:`_queue_within`, which also
        says what the result means). The broadcast loop's inner step: the
        common case is all inline."""
        if self._busy or self._jobs or self._fd < 0 or self.fragmenting:
            return self._queue_within(Kind.FRAME, (frame, is_text), size, max_frames, max_bytes)
        if self.closing or self.broken is not None:
            return _CLOSED
        try:
            sent = os.write(self._fd, frame)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._break(exc)
            return _CLOSED
        total = len(frame)
        self.bytes_out += total
        if is_text:
            self.text_out += 1
        else:
            self.binary_out += 1
        if sent < total:
            # The socket is full: the rest of the frame waits for the writer.
            self._busy = True
            self._hand_off(memoryview(frame)[sent:])
            self._queued_bytes += size
            self._jobs[0].size = size
        return _QUEUED

    def begin_stream(self) -> None:
        """A streamed message starts: from now on, whole messages wait for it
        to end (those queued before it still go first)."""
        self.fragmenting = True
        self._stream_frames = 0

    def end_stream(self) -> int:
        """The streamed message's sender is done, normally or not; return how
        many of its frames were encoded (if any, but not its last, the peer
        holds part of a message)."""
        frames = self._stream_frames
        if self.fragmenting:
            self._end_stream()
        return frames

    def _end_stream(self) -> None:
        self.fragmenting = False
        if self._held:
            # The messages held back go next, in their order.
            self._jobs[:0] = self._held
            self._held.clear()
            if not self._busy:
                self._wake()

    def _release(self) -> None:
        self._busy = False
        if self._jobs:
            self._wake()

    def _wake(self) -> None:
        if self._running:
            if self._lot is not None:
                self._lot.unpark()
        elif self.broken is None:
            self._running = True
            self._spawn(self._run)

    @property
    def queued(self) -> int:
        """Frames waiting for the writer task."""
        return len(self._jobs)

    @property
    def queued_bytes(self) -> int:
        """Bytes of the :meth:`enqueue`\\ d messages still waiting."""
        return self._queued_bytes

    def drop_queued_messages(self) -> int:
        """Drop the :meth:`enqueue`\\ d messages not yet started (a slow
        client being closed); return how many."""
        dropped = 0
        for job in self._jobs:
            broadcast = job.task is None and job.kind in (Kind.MESSAGE, Kind.FRAME)
            if broadcast and job.state is _State.QUEUED:
                job.state = _State.CANCELLED
                dropped += 1
        return dropped

    # -- the writer task -----------------------------------------------------

    async def _run(self) -> None:
        """The writer task: write queued frames. On a socket it ends when none
        are left; elsewhere it waits for more until the connection ends."""
        permanent = self._fd < 0
        jobs = self._jobs
        try:
            while self.broken is None:
                if not jobs or (self._busy and not self._handed_off):
                    if not permanent and not jobs:
                        return
                    if self._lot is None:
                        self._lot = trio.lowlevel.ParkingLot()
                    await self._lot.park()
                    continue
                await self._drain()
        finally:
            self._running = False

    async def _drain(self) -> None:
        jobs = self._jobs
        self._busy = True
        self._handed_off = False
        try:
            while jobs:
                job = jobs.pop(0)
                self._queued_bytes -= job.size
                if job.state is _State.CANCELLED:
                    continue
                job.state = _State.STARTED
                if job is self._pong:
                    self._pong = None
                try:
                    await self._write_job(job)
                finally:
                    if job.task is not None:
                        # The stream broke or this task was cancelled (the
                        # connection is going away): release the caller.
                        self._finish(job, outcome.Error(NotOpen()))
        except STREAM_ERRORS as exc:
            self._break(exc)
        finally:
            self._busy = False

    async def _write_job(self, job: _Job) -> None:
        if job.kind is Kind.EOF:
            await self._shut_down()
            self._finish(job, outcome.Value(None))
            return
        try:
            data = self._encode(job.kind, job.payload)
        except Exception as exc:
            self._finish(job, outcome.Error(exc))
            return
        if data is not None:
            for frame in data if type(data) is list else (data,):
                await self._stream.send_all(frame)  # type: ignore[arg-type]
            if job.kind is not Kind.RAW:
                self._count(job.kind, job.payload, _size(data))
            else:
                self.bytes_out += _size(data)
        self._finish(job, outcome.Value(None))

    async def shut_down(self) -> None:
        """Send end-of-file on a half-closeable stream, once every frame
        queued before has been written, holding the write lock like a frame
        (so it never runs while a frame is being written). Afterwards nothing
        more is written. Raises :class:`NotOpen` if the stream broke first.
        Cancellation: if cancelled while waiting its turn, nothing is sent."""
        if not self._busy and not self._jobs:
            # Nothing is being written: now (after a failed write too, since
            # the stream may still take an end-of-file).
            await trio.lowlevel.checkpoint_if_cancelled()
            self._busy = True
            try:
                await self._shut_down()
            except STREAM_ERRORS as exc:
                self._break(exc)
                raise NotOpen from exc
            finally:
                self._release()
            return
        if self.broken is not None:
            await trio.lowlevel.checkpoint()
            raise NotOpen
        job = _Job(Kind.EOF, None, trio.lowlevel.current_task())
        self._jobs.append(job)
        if not self._busy:
            self._wake()
        await self._wait_for(job)

    async def _shut_down(self) -> None:
        """Send end-of-file, after every frame queued before it; nothing is
        written after it (later frames fail with NotOpen)."""
        stream = self._stream
        try:
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
        finally:
            self.fail_all(NotOpen())

    @staticmethod
    def _finish(job: _Job, result: outcome.Outcome[None]) -> None:
        task = job.task
        if task is not None:
            job.task = None
            trio.lowlevel.reschedule(task, result)

    def _break(self, exc: BaseException) -> None:
        if self.broken is None:
            self.broken = exc
            self._on_broken(exc)
        self.fail_all(exc)

    def fail_all(self, exc: BaseException) -> None:
        """Fail every queued frame with :class:`NotOpen` (the connection is going
        away because of ``exc``); nothing more will be written."""
        if self.broken is None:
            self.broken = exc
        for job in (*self._jobs, *self._held):
            job.state = _State.CANCELLED
            self._finish(job, outcome.Error(NotOpen()))
        self._jobs.clear()
        self._held.clear()
        self._queued_bytes = 0
        if self._lot is not None:
            self._lot.unpark_all()
