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

from .._wire.protocol import Protocol
from .close_state import CloseState
from .offers import Offers
from .write_jobs import (
    _IOV_MAX,
    STREAM_ERRORS,
    Data,
    EndOfFile,
    Fragment,
    Frames,
    Job,
    Kind,
    Message,
    NotOpen,
    Pong,
    Raw,
    Spawn,
    _rest,
    _size,
    _State,
    descriptor,
    frame_message,
)

__all__ = [
    "STREAM_ERRORS",
    "Job",
    "Kind",
    "NotOpen",
    "Writer",
    "descriptor",
]

#: Pongs queued at most (see Writer.post_pong): enough for a burst of pings
#: to get one pong each (Autobahn's cases 2.10 and 2.11 send 10 at once).
MAX_QUEUED_PONGS = 16


class Writer(Offers):
    """Everything written to a stream after the opening handshake goes through here.

    Messages handed on without waiting (broadcasts) take the path of its
    base class, :class:`Offers` (offers.py). Whether closing has started, it
    asks the connection's close state (``state``): from then on no broadcast
    is taken. Whether the stream can still be written is its own record,
    :attr:`broken`.
    """

    # The rest of its state is that of Offers, its base class.
    __slots__ = (
        "_handed_off",
        "_held",
        "_lot",
        "_on_broken",
        "_pong",
        "_pongs",
        "_running",
        "_spawn",
        "_stream",
        "_stream_frames",
        "stateful_encoding",
        "turn_taken",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: Protocol,
        state: CloseState,
        on_broken: Callable[[BaseException], None],
        spawn: Spawn,
        frame_size: int | None = None,
    ) -> None:
        self._stream = stream
        self._frame_size = frame_size
        self._protocol = protocol
        self._state = state
        self._on_broken = on_broken
        self._spawn = spawn
        self._fd = descriptor(stream)  # -1: every frame goes through the writer task
        # A list, not a deque: an empty deque costs 760 bytes, an empty list 56.
        self._jobs: list[Job] = []
        self._busy = False  # the write lock
        self._handed_off = False  # the lock was handed to the writer task
        self._running = False  # the writer task exists
        #: True between the first and the last frame of a streamed message:
        #: no other message's frame may be written then (control frames may).
        self.fragmenting = False
        self._held: list[Job] = []  # whole messages waiting for the stream to end
        self._stream_frames = 0
        self._lot: trio.lowlevel.ParkingLot | None = None  # where the writer task waits
        #: Set when a write failed, end-of-file was sent or the stream was
        #: closed (:meth:`fail_all`): nothing more is written. An I/O fact about
        #: the stream, kept here: the close state learns of a failed write
        #: through ``on_broken``, and the writer checks this one flag, not
        #: the close state, before each write (a closing connection still
        #: writes its close frame, pongs and the rest of a frame).
        self.broken: BaseException | None = None
        #: True when an encoded frame must be written even if its send() is
        #: cancelled before any byte went out (stateful encoders).
        self.stateful_encoding = protocol.compressor_keeps_context
        #: Messages written (by type) and bytes handed to the stream.
        self.text_out = 0
        self.binary_out = 0
        self.bytes_out = 0
        self._queued_bytes = 0
        # The last pong queued, and how many are queued (see post_pong).
        self._pong: Pong | None = None
        self._pongs = 0
        #: The task whose receive() let other tasks run since its last send():
        #: its next send() on a socket need not do so again.
        self.turn_taken: trio.lowlevel.Task | None = None

    def start(self) -> None:
        """Start the permanent writer task where one is needed (not a socket)."""
        if self._fd < 0:
            self._running = True
            self._spawn(self._run)

    # -- encoding ------------------------------------------------------------

    def _encode(self, job: Job) -> Frames | None:
        data = job.encode(self._protocol, self._frame_size)
        if type(job) is Fragment:
            self._stream_frames += 1
            if job.last:
                self._end_stream()
        return data

    def _count(self, size: int, text: bool | None) -> None:
        """``size`` bytes were handed to the stream; ``text``: they completed
        a text message (True), a binary one (False) or none (None)."""
        self.bytes_out += size
        if text is None:
            return
        if text:
            self.text_out += 1
        else:
            self.binary_out += 1

    # -- the caller's side ---------------------------------------------------

    async def send_message(self, message: Data, compress: bool = True) -> None:
        """Send one whole message, framed (and compressed if ``compress`` and
        the extension is in use) when its turn comes: :meth:`send` of a
        :class:`Message`, but on a socket with nothing ahead of it, written
        by this task without allocating a job (the common case).

        Cancellation: as :meth:`send`.
        """
        if (
            self._fd >= 0
            and not self._busy
            and not self._jobs
            and not self.fragmenting
            and self.broken is None
        ):
            # Cancellation point: nothing is encoded or written if cancelled.
            await trio.lowlevel.checkpoint_if_cancelled()
            self._busy = True
            try:
                data = frame_message(self._protocol, message, compress, self._frame_size)
            except BaseException:
                self._release()
                raise
            await self._write_direct(data, type(message) is str)
            return
        await self.send(Message(message, compress))

    async def send(self, job: Job) -> None:
        """Encode and write one job (a frame, or a message framed when its
        turn comes) and wait until it is written. A whole message sent while
        a streamed one is in progress waits for the stream to end.

        Cancellation: if cancelled before any byte of the frame was written,
        the frame is not sent (unless ``stateful_encoding``); otherwise the
        writer task finishes it. Either way the stream stays well-formed.
        Raises :class:`NotOpen` if the connection state forbids the frame or
        the stream broke (the breakage is reported through ``on_broken``).
        """
        if (
            self._fd >= 0
            and not self._busy
            and not self._jobs
            and self.broken is None
            and not (self.fragmenting and job.whole_message)
        ):
            # Cancellation point: nothing is encoded or written if cancelled.
            await trio.lowlevel.checkpoint_if_cancelled()
            self._busy = True
            try:
                data = self._encode(job)
            except BaseException:
                self._release()
                raise
            await self._write_direct(data, job.text_message())
            return
        if self.broken is not None:
            await trio.lowlevel.checkpoint()
            raise NotOpen
        job.task = trio.lowlevel.current_task()
        self._queue(job)
        await self._wait_for(job)

    def _queue(self, job: Job) -> None:
        """Queue ``job`` for the writer task; a whole message sent while a
        streamed one is in progress waits for the stream to end, then goes
        out in its turn."""
        if self.fragmenting and job.whole_message:
            self._held.append(job)
            return
        self._jobs.append(job)
        if not self._busy:
            self._wake()

    @staticmethod
    async def _wait_for(job: Job) -> None:
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

    async def _write_direct(self, data: Frames | None, text: bool | None) -> None:
        """Write whole frames (None: nothing), holding the lock; release it
        (or hand it off, with the rest, if cancelled part-way). Then let
        other tasks run, unless this task did in receive() since its last
        send (see :attr:`turn_taken`)."""
        if data is not None:
            total = _size(data)
            sent = self._write_now(data)
            if sent < total:
                try:
                    while sent < total:
                        await trio.lowlevel.wait_writable(self._fd)
                        sent += self._write_now(_rest(data, sent))
                except trio.Cancelled:
                    if sent or self.stateful_encoding:
                        self._count(sent, None)
                        self._hand_off(Raw(_rest(data, sent), text))
                    else:
                        self._release()
                    raise
                except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
                    self._release()
                    self._break(exc)
                    raise NotOpen from exc
            self._count(total, text)
        self._release()
        if self.turn_taken is trio.lowlevel.current_task():
            # This task let others run in receive() since its last send:
            # that was its turn; a receive/send loop yields once per message.
            self.turn_taken = None
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()

    def _hand_off(self, rest: Raw) -> None:
        """Give the rest of the frames, and the lock, to the writer task."""
        # Views of our own frames (bytes): nothing the caller could change.
        self._jobs.insert(0, rest)
        self._handed_off = True
        self._wake()

    def post(self, job: Job) -> None:
        """Queue a job for the writer task without waiting (keepalive pings)."""
        if self.broken is not None:
            return
        self._queue(job)

    def post_pong(self, payload: bytes) -> None:
        """Queue a pong for the writer task without waiting. Once
        ``MAX_QUEUED_PONGS`` are waiting to be written, the last of them
        takes this newer payload instead (RFC 6455 5.5.3 allows answering
        only the most recent ping): a peer that sends pings and never reads
        holds a few pongs here, not one per ping, while a burst of pings from
        a peer that reads still gets a pong each."""
        pong = self._pong
        if self._pongs >= MAX_QUEUED_PONGS and pong is not None:
            pong.payload = payload
            return
        if self.broken is not None:
            return
        self._pong = Pong(payload)
        self._pongs += 1
        self._jobs.append(self._pong)
        if not self._busy:
            self._wake()

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
            if job.task is None and job.whole_message and job.state is _State.QUEUED:
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
                if type(job) is Pong:
                    self._pongs -= 1
                    if job is self._pong:
                        self._pong = None
                if job.state is _State.CANCELLED:
                    continue
                job.state = _State.STARTED
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

    async def _write_job(self, job: Job) -> None:
        if type(job) is EndOfFile:
            await self._shut_down()
            self._finish(job, outcome.Value(None))
            return
        try:
            data = self._encode(job)
        except Exception as exc:
            self._finish(job, outcome.Error(exc))
            return
        if data is not None:
            for frame in data if type(data) is list else (data,):
                await self._stream.send_all(frame)  # type: ignore[arg-type]
            self._count(_size(data), job.text_message())
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
        job = EndOfFile()
        job.task = trio.lowlevel.current_task()
        self._queue(job)
        await self._wait_for(job)

    async def _shut_down(self) -> None:
        """Send end-of-file, after every frame queued before it; nothing is
        written after it (later frames fail with NotOpen). On a plain socket
        at once, with no schedule point (closing a connection takes enough)."""
        stream = self._stream
        try:
            if type(stream) is trio.SocketStream:
                if not stream.socket.did_shutdown_SHUT_WR:
                    stream.socket.shutdown(trio.socket.SHUT_WR)
            elif isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
        finally:
            self.fail_all(NotOpen())

    @staticmethod
    def _finish(job: Job, result: outcome.Outcome[None]) -> None:
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
        self._pong = None
        self._pongs = 0
        if self._lot is not None:
            self._lot.unpark_all()
