"""Serialised, cancel-safe writing of frames to one connection's stream.

One write lock guards the stream. On a plain TCP socket the task that calls
``send()`` writes its frame itself (no task switch) with ``socket.send``,
which reports exactly how much was written; if it is cancelled part-way
through a frame, the rest of the frame is handed, together with the lock, to
the connection's writer task, which finishes it. So the stream never carries
a partial frame. On other streams (TLS, memory streams), where a cancelled
``send_all`` leaves the stream unusable, every frame is written by the
writer task and callers only wait for it.

Frames are encoded while the lock is held, so frames reach the wire in the
order they were encoded (which stateful encoders such as compression need).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from typing import Any

import outcome
import trio

from ._protocol import Protocol

__all__ = ["Kind", "NotOpen", "Writer"]

#: Exceptions that mean the stream can no longer be written.
STREAM_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class NotOpen(Exception):
    """The connection state forbids this frame (for example data after close)."""


class Kind(enum.Enum):
    MESSAGE = 1  # a message, framed when it is written
    FRAME = 2  # a message already framed: (frame bytes, is_text), shared by a broadcast
    PING = 3
    PONG = 4
    CLOSE = 5
    RAW = 6  # bytes already framed (the rest of a frame a cancelled send began)


class _State(enum.Enum):
    QUEUED = 1
    STARTED = 2
    CANCELLED = 3


class _Job:
    __slots__ = ("kind", "payload", "size", "state", "task")

    def __init__(
        self, kind: Kind, payload: Any, task: trio.lowlevel.Task | None, size: int = 0
    ) -> None:
        self.kind = kind
        self.payload = payload
        self.task = task
        self.state = _State.QUEUED
        self.size = size  # counted in queued_bytes while queued


class Writer:
    """Everything written to a stream after the opening handshake goes through here."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: Protocol,
        on_broken: Callable[[BaseException], None],
    ) -> None:
        self._stream = stream
        self._protocol = protocol
        self._on_broken = on_broken
        # Direct writes need exact progress reports, which only a socket gives.
        self._sock = stream.socket if isinstance(stream, trio.SocketStream) else None
        self._jobs: deque[_Job] = deque()
        self._busy = False  # the write lock
        self._handed_off = False  # the lock was handed to the writer task
        self._lot = trio.lowlevel.ParkingLot()  # where the writer task waits
        #: Set when a write failed; nothing more will be written.
        self.broken: BaseException | None = None
        #: True when an encoded frame must be written even if its send() is
        #: cancelled before any byte went out (stateful encoders).
        self.stateful_encoding = False
        #: Messages written (by type) and bytes handed to the stream.
        self.text_out = 0
        self.binary_out = 0
        self.bytes_out = 0
        self._queued_bytes = 0

    # -- encoding ------------------------------------------------------------

    def _encode(self, kind: Kind, payload: Any) -> bytes | None:
        proto = self._protocol
        if kind is Kind.MESSAGE:
            if not proto.can_send_data:
                raise NotOpen
            return proto.encode_message(payload)
        if kind is Kind.RAW:
            return payload  # type: ignore[no-any-return]
        if kind is Kind.FRAME:
            if not proto.can_send_data:
                raise NotOpen
            return payload[0]  # type: ignore[no-any-return]
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
        if self._sock is not None and not self._busy and not self._jobs:
            if self.stateful_encoding:
                # Encoding commits us to sending: check for cancellation first.
                # (Otherwise socket.send checks before writing any byte.)
                await trio.lowlevel.checkpoint_if_cancelled()
            self._busy = True
            try:
                data = self._encode(kind, payload)
            except BaseException:
                self._release()
                raise
            if data is None:
                self._release()
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            await self._write_direct(data)
            self._count(kind, payload, len(data))
            return
        job = _Job(kind, payload, trio.lowlevel.current_task())
        self._jobs.append(job)
        if not self._busy:
            self._lot.unpark()

        def abort(_: Any) -> trio.lowlevel.Abort:
            if job.state is _State.QUEUED:
                job.state = _State.CANCELLED
            job.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def _write_direct(self, data: bytes) -> None:
        sock = self._sock
        assert sock is not None
        sent = 0
        try:
            sent = await sock.send(data)
            if sent < len(data):
                with memoryview(data) as view:
                    while sent < len(data):
                        sent += await sock.send(view[sent:])
        except trio.Cancelled:
            if sent or self.stateful_encoding:
                # Hand the rest of the frame, and the lock, to the writer task.
                self._jobs.appendleft(_Job(Kind.RAW, bytes(data[sent:]), None))
                self._handed_off = True
                self._lot.unpark()
            else:
                self._release()
            raise
        except STREAM_ERRORS as exc:
            self._release()
            self._break(exc)
            raise NotOpen from exc
        self._release()

    def _count(self, kind: Kind, payload: Any, size: int) -> None:
        self.bytes_out += size
        if kind is Kind.MESSAGE:
            is_text = type(payload) is str
        elif kind is Kind.FRAME:
            is_text = payload[1]
        else:
            return
        if is_text:
            self.text_out += 1
        else:
            self.binary_out += 1

    def post(self, kind: Kind, payload: Any) -> None:
        """Queue a frame for the writer task without waiting (pongs, close replies)."""
        if self.broken is not None:
            return
        self._jobs.append(_Job(kind, payload, None))
        if not self._busy:
            self._lot.unpark()

    def enqueue(self, kind: Kind, payload: Any, size: int) -> None:
        """Queue a message (``MESSAGE``) or an already framed one (``FRAME``)
        for the writer task without waiting: the broadcast path. It keeps its
        place among send() calls. ``size`` counts in :attr:`queued_bytes`
        until it is written; the caller enforces any limit first."""
        if self.broken is not None:
            raise NotOpen
        self._jobs.append(_Job(kind, payload, None, size))
        self._queued_bytes += size
        if not self._busy:
            self._lot.unpark()

    def drop_queued_messages(self) -> int:
        r"""Drop the :meth:`enqueue`\ d messages not yet started (a slow
        client being closed); return how many."""
        dropped = 0
        for job in self._jobs:
            broadcast = job.task is None and job.kind in (Kind.MESSAGE, Kind.FRAME)
            if broadcast and job.state is _State.QUEUED:
                job.state = _State.CANCELLED
                dropped += 1
        return dropped

    @property
    def queued(self) -> int:
        """Frames waiting for the writer task."""
        return len(self._jobs)

    @property
    def queued_bytes(self) -> int:
        r"""Bytes of the :meth:`enqueue`\ d messages still waiting."""
        return self._queued_bytes

    def _release(self) -> None:
        self._busy = False
        if self._jobs:
            self._lot.unpark()

    # -- the writer task -----------------------------------------------------

    async def run(self) -> None:
        """The writer task: write queued frames until the stream breaks or the
        task is cancelled (when the connection is torn down)."""
        jobs = self._jobs
        while self.broken is None:
            if not jobs or (self._busy and not self._handed_off):
                await self._lot.park()
                continue
            self._busy = True
            self._handed_off = False
            try:
                while jobs:
                    job = jobs.popleft()
                    self._queued_bytes -= job.size
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

    async def _write_job(self, job: _Job) -> None:
        try:
            data = self._encode(job.kind, job.payload)
        except Exception as exc:
            self._finish(job, outcome.Error(exc))
            return
        if data is not None:
            await self._stream.send_all(data)
            self._count(job.kind, job.payload, len(data))
        self._finish(job, outcome.Value(None))

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
        while self._jobs:
            job = self._jobs.popleft()
            job.state = _State.CANCELLED
            self._finish(job, outcome.Error(NotOpen()))
        self._queued_bytes = 0
        self._lot.unpark_all()

    @property
    def idle(self) -> bool:
        """True when nothing is being written or waiting to be."""
        return not self._busy and not self._jobs
