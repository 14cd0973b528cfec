"""The WebSocket connection: a Trio channel of messages."""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Literal

import trio

from ._close import CloseCode, CloseInfo, check_close_code, check_close_reason
from ._errors import ConnectionClosed
from ._http import Request, Response
from ._keepalive import Keepalive, Ping, Step
from ._message_stream import MessageStream
from ._options import Options
from ._protocol import (
    PLAIN,
    CloseReceived,
    Failure,
    Incoming,
    Message,
    PingReceived,
    PongReceived,
    Protocol,
    shared_frame,
)
from ._reader import Reader
from ._stats import ConnectionStats, Traffic
from ._writer import STREAM_ERRORS, Kind, NotOpen, Writer

__all__ = ["WebSocket"]

logger = logging.getLogger("trio_ws")

_ids = itertools.count(1)

_MESSAGE = Kind.MESSAGE
_UNCOMPRESSED = Kind.UNCOMPRESSED


class _ConnectionLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[conn {self.extra['conn_id']}] {msg}", kwargs  # type: ignore[index]


def _address(stream: trio.abc.Stream, which: Literal["sockname", "peername"]) -> Any:
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        try:
            return getattr(stream.socket, "get" + which)()
        except OSError:
            return None
    return None


class WebSocket(trio.abc.Channel[Message]):
    """One open WebSocket connection, used like a Trio channel of messages.

    Messages are ``str`` (text) or ``bytes`` (binary). ``async for message in
    ws`` receives until the connection closes: it ends quietly on a 1000 or
    1001 close and raises :class:`ConnectionClosed` otherwise.

    You don't create these yourself: :func:`connect` and :func:`serve` do, and
    they own the connection's background tasks (reading, answering pings,
    closing), which end when the connection ends.

    Several tasks may use one connection at once: concurrent ``send()`` calls
    never interleave their frames, and each message goes to exactly one
    ``receive()``.
    """

    __slots__ = (
        "_awaiting_reply",
        "_client",
        "_close_deadline",
        "_close_frame",
        "_close_info",
        "_closed",
        "_closed_event",
        "_closing",
        "_deferred",
        "_frame_key",
        "_keepalive",
        "_nursery",
        "_options",
        "_pings",
        "_protocol",
        "_reader",
        "_settled",
        "_settled_event",
        "_stream",
        "_stream_lot",
        "_stream_sender",
        "_task_scopes",
        "_writer",
        "id",
        "latency",
        "request",
        "response",
        "subprotocol",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: Protocol,
        *,
        request: Request,
        response: Response | None = None,
        subprotocol: str | None = None,
        options: Options,
        initial_data: bytes = b"",
    ) -> None:
        self._stream = stream
        self._protocol = protocol
        self._frame_key = protocol.frame_key  # fixed by the handshake
        self._options = options
        self._client = protocol.is_client
        #: A process-wide unique number for this connection (used in logs).
        self.id: int = next(_ids)
        #: The opening request: what the client sent (headers include Host,
        #: Origin, Cookie).
        self.request = request
        #: The server's 101 response (client side only; None on the server).
        self.response = response
        #: The negotiated subprotocol, or None.
        self.subprotocol = subprotocol
        self._nursery: trio.Nursery | None = None
        self._deferred: list[Callable[[], Awaitable[None]]] = []  # tasks to start
        self._writer = Writer(stream, protocol, self._on_broken, self._spawn, options.frame_size)
        self._reader = Reader(
            stream,
            protocol,
            options.max_queue,
            self._on_event,
            self._on_eof,
            options.queue_bytes,
        )
        # The scopes of the background tasks, cancelled by _finish().
        self._task_scopes: list[trio.CancelScope] = []
        self._keepalive = (
            None
            if options.ping_interval is None
            else Keepalive(options.ping_interval, options.ping_seconds, trio.current_time())
        )
        self._close_info: CloseInfo | None = None
        # The close frame to send, once closing has started.
        self._close_frame: tuple[int, str] | None = None
        # Flags, with events made only for those who wait (an idle connection
        # holds none: each costs about 280 bytes).
        self._closing = False  # closing has started (either side)
        self._settled = False  # the closing handshake needs nothing more
        self._settled_event: trio.Event | None = None
        self._closed = False  # the stream is closed, background tasks ending
        self._closed_event: trio.Event | None = None
        self._close_deadline = 0.0
        self._awaiting_reply = False  # we sent the first close frame
        self._pings: dict[bytes, Ping] = {}
        self._stream_sender: trio.lowlevel.Task | None = None  # see send_stream()
        self._stream_lot: trio.lowlevel.ParkingLot | None = None  # made when needed
        #: The round-trip time of the last answered ping (keepalive or
        #: :meth:`ping`), in seconds; None until one is answered.
        self.latency: float | None = None
        # Frames that arrived with the handshake (or that wsproto holds from it).
        self._reader.process(initial_data)

    @property
    def _log(self) -> _ConnectionLogger:
        """The trio_ws logger, with this connection's id in every line (made
        when needed: most connections only log once)."""
        return _ConnectionLogger(logger, {"conn_id": self.id})

    # -- attributes ------------------------------------------------------------

    @property
    def path(self) -> str:
        """The request path, without the query string."""
        return self.request.path

    @property
    def local_address(self) -> Any:
        """This end's socket address, ``(host, port)`` for TCP, or None."""
        return _address(self._stream, "sockname")

    @property
    def remote_address(self) -> Any:
        """The peer's socket address, ``(host, port)`` for TCP, or None."""
        return _address(self._stream, "peername")

    @property
    def pending(self) -> int:
        """Messages received and buffered, not yet returned by :meth:`receive`."""
        return self._reader.queued

    def stats(self) -> ConnectionStats:
        """A snapshot of this connection's counters."""
        return ConnectionStats(
            traffic=self._traffic(),
            pending_in=self._reader.queued,
            pending_in_bytes=self._reader.queued_bytes,
            pending_out=self._writer.queued,
            pending_out_bytes=self._writer.queued_bytes,
            latency=self.latency,
        )

    def _traffic(self) -> Traffic:
        reader, writer = self._reader, self._writer
        return Traffic(
            reader.text_in,
            reader.binary_in,
            writer.text_out,
            writer.binary_out,
            reader.bytes_read,
            writer.bytes_out,
        )

    @property
    def is_client(self) -> bool:
        """True on the client side of the connection."""
        return self._client

    @property
    def close_info(self) -> CloseInfo | None:
        """How the connection ended (None while it is open or closing)."""
        return self._close_info if self._closed else None

    @property
    def close_code(self) -> int | None:
        """The close code once the connection is closed, else None."""
        info = self.close_info
        return None if info is None else info.code

    @property
    def close_reason(self) -> str | None:
        """The close reason once the connection is closed, else None."""
        info = self.close_info
        return None if info is None else info.reason

    @property
    def closing(self) -> bool:
        """True once the connection is closing or closed: no more messages can
        be sent, and none will arrive beyond those already buffered."""
        return self._closing

    @property
    def closed(self) -> bool:
        """True once the connection is closed (closing handshake over, stream closed)."""
        return self._closed

    def __repr__(self) -> str:
        side = "client" if self._client else "server"
        state = "closed" if self.closed else "closing" if self._closing else "open"
        return f"<WebSocket #{self.id} {side} {self.request.target!r} {state}>"

    # -- messages --------------------------------------------------------------

    async def send(
        self, message: str | bytes | bytearray | memoryview, *, compress: bool = True
    ) -> None:
        """Send one message: text for ``str``, binary for bytes-like data.

        When compression was negotiated, the message is compressed unless
        ``compress=False`` (for data known not to compress, such as images
        or encrypted payloads) or it is shorter than ``Deflate.min_size``.

        Cancellation: if ``send()`` is cancelled before any of the message was
        written, the message is not sent; if it is cancelled part-way, the
        connection finishes writing it in the background. The peer never sees
        a partial message, and later messages follow it intact.

        ``send()`` is always a cancellation point. It also lets other tasks
        run (a schedule point), except right after a :meth:`receive` by the
        same task, which already did: a receive/send loop yields once per
        message, not twice (see docs/timeouts.md).

        Raises :class:`ConnectionClosed` once the connection is closing or
        closed, and TypeError for other types.
        """
        try:
            await self._writer.send(_MESSAGE if compress else _UNCOMPRESSED, message)
        except NotOpen:
            raise await self._closed_error() from None

    async def send_stream(
        self,
        chunks: Iterable[str | bytes | bytearray | memoryview]
        | AsyncIterable[str | bytes | bytearray | memoryview],
        *,
        compress: bool = True,
    ) -> None:
        """Send one message made of ``chunks`` (all ``str`` for text, all
        bytes-like for binary), one frame per chunk as soon as it is produced,
        then an empty final frame, without holding the whole message in
        memory: ``chunks`` may be a generator or an async iterable that
        produces them as it goes. An empty iterable sends an empty binary
        message.

        While it runs, other tasks' messages wait (a message's frames cannot
        be interleaved with another's); pings, pongs and a close can still
        pass between the frames. One streamed message at a time: a second
        ``send_stream()`` waits for the first.

        Cancellation, or an exception from ``chunks``: if no frame of the
        message was written yet, nothing was sent. Otherwise the peer has
        part of the message and WebSocket offers no way to abandon it: the
        connection is closed with 1011 and the exception propagates.
        """
        while self._stream_sender is not None:
            if self._stream_lot is None:
                self._stream_lot = trio.lowlevel.ParkingLot()
            await self._stream_lot.park()
        self._stream_sender = trio.lowlevel.current_task()
        self._writer.begin_stream()
        try:
            end: str | bytes = b""  # an empty iterable sends an empty binary message
            async for chunk in _as_async(chunks):
                await self._writer.send(Kind.FRAGMENT, (chunk, False, compress))
                end = "" if isinstance(chunk, str) else b""
            # The last frame is empty: each chunk went out as soon as it came.
            await self._writer.send(Kind.FRAGMENT, (end, True, compress))
        except NotOpen:
            self._writer.end_stream()
            raise await self._closed_error() from None
        except BaseException:
            if self._writer.end_stream() and not self._closing:
                self._start_closing(
                    CloseCode.INTERNAL_ERROR,
                    "message interrupted",
                    "local",
                    "a streamed message was interrupted after its first frame",
                    failure=True,
                )
            raise
        finally:
            self._stream_sender = None
            if self._stream_lot is not None:
                self._stream_lot.unpark()

    async def receive(self) -> Message:
        """Receive the next message: ``str`` for text, ``bytes`` for binary.

        Cancellation: safe. A cancelled ``receive()`` takes no message, so a
        loop of ``with trio.move_on_after(t): await ws.receive()`` loses and
        reorders nothing.

        Messages that arrived before the connection closed are still
        returned; after them, raises :class:`ConnectionClosed`.
        """
        try:
            message = await self._reader.receive()
        except NotOpen:
            raise await self._closed_error() from None
        self._writer.turn_taken = trio.lowlevel.current_task()
        return message

    def receive_stream(self) -> MessageStream:
        """Receive the next message piece by piece, as its frames arrive,
        instead of whole: see :class:`MessageStream`. Use it as
        ``async with ws.receive_stream() as message: async for chunk in message``.
        Raises :class:`ConnectionClosed` (on entering or between chunks) once
        no more of the message can come."""
        return MessageStream(self._reader, self._closed_error)

    async def send_json(self, value: Any) -> None:
        """Send ``value`` encoded as JSON in a text message (same cancellation
        semantics as :meth:`send`)."""
        await self.send(json.dumps(value, separators=(",", ":"), ensure_ascii=False))

    async def receive_json(self) -> Any:
        """Receive one message and decode it as JSON (same cancellation
        semantics as :meth:`receive`). Raises ValueError (``json.JSONDecodeError``)
        when the message is not JSON; that message is consumed."""
        return json.loads(await self.receive())

    def __aiter__(self) -> WebSocket:
        return self

    async def __anext__(self) -> Message:
        # receive(), written out: one coroutine frame fewer on the stack an
        # idle connection waits in.
        try:
            message = await self._reader.receive()
        except NotOpen:
            error = await self._closed_error()
            if error.info.ok:
                raise StopAsyncIteration from None
            raise error from None
        self._writer.turn_taken = trio.lowlevel.current_task()
        return message

    # -- ping ----------------------------------------------------------------

    async def ping(self, payload: bytes = b"") -> float:
        """Send a ping and wait for the matching pong; return the round-trip
        time in seconds.

        A random 4-byte payload is used when none is given. A pong answers its
        ping and every earlier one (peers may skip pongs). Cancellation: safe;
        the ping may already have been sent, and its pong is then ignored.
        Raises :class:`ConnectionClosed` if the connection closes first.
        """
        payload = bytes(payload)
        if len(payload) > 125:
            raise ValueError("a ping payload is at most 125 bytes")
        if not payload:
            payload = os.urandom(4)
            while payload in self._pings:  # pragma: no cover - 1 in 4 billion
                payload = os.urandom(4)
        elif payload in self._pings:
            raise ValueError(f"a ping with payload {payload!r} is already waiting for its pong")
        ping = Ping(trio.current_time(), trio.Event())
        self._pings[payload] = ping
        try:
            try:
                await self._writer.send(Kind.PING, payload)
            except NotOpen:
                raise await self._closed_error() from None
            self._reader.read_now()
            await ping.answered.wait()  # type: ignore[union-attr]
        finally:
            self._pings.pop(payload, None)
        if ping.rtt is None:
            raise await self._closed_error()
        return ping.rtt

    def _on_pong(self, payload: bytes) -> None:
        if payload not in self._pings:
            return  # unsolicited pong: allowed, ignored
        now = trio.current_time()
        for key in list(self._pings):
            ping = self._pings.pop(key)
            ping.rtt = now - ping.sent_at
            if ping.answered is not None:
                ping.answered.set()
            if key == payload:
                self.latency = ping.rtt
                break

    # -- closing ---------------------------------------------------------------

    async def aclose(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection with ``code`` and ``reason``; return once it is
        closed.

        Performs the closing handshake (send a close frame, wait for the
        peer's) and shuts the TCP connection down, within ``close_timeout``
        seconds; after that the connection is aborted. Calling it again, or on
        a connection the peer closed, just waits for the close to finish.

        Cancellation: if cancelled, the connection is aborted at once (the
        stream is closed without waiting for the peer), as Trio's
        ``AsyncResource.aclose`` contract asks.
        """
        check_close_code(code)
        check_close_reason(reason)
        await self._close(code, reason)

    async def _close(self, code: int, reason: str, cause: str | None = None) -> None:
        """aclose(), with the library's explanation (``cause``) kept in close_info."""
        self._start_closing(code, reason, "local", cause)
        try:
            await self._wait_closed()
        except BaseException:
            await self._abort("close cancelled: connection aborted")
            raise

    async def wait_closed(self) -> CloseInfo:
        """Wait until the connection is closed; return how it ended.
        Cancellation: safe (the connection is unaffected)."""
        await self._wait_closed()
        assert self._close_info is not None
        return self._close_info

    async def _wait_closed(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        if self._closed_event is None:
            self._closed_event = trio.Event()
        await self._closed_event.wait()

    def _start_closing(
        self,
        code: int,
        reason: str,
        initiator: Literal["local", "peer"],
        cause: str | None = None,
        *,
        failure: bool = False,
        send_frame: bool = True,
    ) -> None:
        """Start the closing handshake (once). ``failure``: the library fails
        the connection (protocol error, message too big, keepalive timeout);
        its own code then stays in close_info whatever the peer replies."""
        if self._closing:
            return
        self._close_deadline = trio.current_time() + self._options.close_seconds
        self._close_info = CloseInfo(code, reason, initiator, cause)
        # After a graceful close of ours, the peer's reply settles the code.
        self._awaiting_reply = initiator == "local" and send_frame and not failure
        if send_frame:
            self._close_frame = (code, reason)
        self._closing = True
        self._writer.closing = True
        self._reader.end()
        self._reader.hurry()
        self._spawn(self._close_sequence)

    def _on_event(self, item: Incoming) -> None:
        kind = type(item)
        if kind is PingReceived:
            self._writer.post_pong(item.payload)  # type: ignore[union-attr]
        elif kind is PongReceived:
            self._on_pong(item.payload)  # type: ignore[union-attr]
        elif kind is CloseReceived:
            assert isinstance(item, CloseReceived)
            if self._awaiting_reply:
                # The peer's reply to our close: its code is the one that counts.
                self._awaiting_reply = False
                assert self._close_info is not None
                cause = self._close_info.cause
                self._close_info = CloseInfo(item.code, item.reason, "local", cause)
            elif not self._closing:
                self._start_closing(item.code, item.reason, "peer")
            self._settle()
        elif kind is Failure:
            assert isinstance(item, Failure)
            self._start_closing(item.code, item.reason, "local", item.cause, failure=True)
            if not item.parser_usable:
                self._settle()

    def _on_eof(self, error: BaseException | None) -> None:
        if not self._closing:
            cause = "connection lost without a close frame"
            if error is not None:
                cause += f" ({error.__class__.__name__}: {error})"
            self._start_closing(CloseCode.ABNORMAL_CLOSURE, "", "peer", cause, send_frame=False)
        self._settle()

    def _settle(self) -> None:
        """The closing handshake needs nothing more from the peer."""
        self._settled = True
        if self._settled_event is not None:
            self._settled_event.set()

    def _on_broken(self, error: BaseException) -> None:
        self._on_eof(error)

    # -- the broadcast path (used by the hub) --------------------------------

    def _offer(
        self, message: str | bytes, frame: bytes, size: int, max_frames: int, max_bytes: int
    ) -> int:
        """Hand ``message`` on without waiting, within the queue limits (see
        :meth:`Writer.offer`). ``frame`` is its :func:`encode_shared` framing,
        written as is where this connection allows (the hub calls the writer
        directly for those); otherwise the message is framed for this
        connection (compressed once per broadcast where settings are shared)."""
        key = self._frame_key
        writer = self._writer
        if key is not None:
            if key is not PLAIN:
                frame = shared_frame(message, key)
            return writer.offer(frame, type(message) is str, size, max_frames, max_bytes)
        return writer.queue_within(Kind.MESSAGE, message, size, max_frames, max_bytes)

    def _shed_and_close(self, code: int, reason: str, cause: str) -> int:
        """Drop the queued broadcast messages and start closing (without
        waiting): for a client that fell behind. Returns how many were dropped."""
        dropped = self._writer.drop_queued_messages()
        self._start_closing(code, reason, "local", cause, failure=True)
        return dropped

    async def _closed_error(self) -> ConnectionClosed:
        """The exception for an operation on a closing or closed connection,
        once the close is settled (at most ``close_timeout`` away; the wait
        can be cancelled like any other)."""
        await self._wait_closed()
        assert self._close_info is not None
        return ConnectionClosed(self._close_info)

    async def _abort(self, cause: str) -> None:
        """Close the stream now, without a closing handshake."""
        if self._closed:
            return
        info = self._close_info
        if info is None or self._awaiting_reply:
            initiator = info.initiator if info else "local"
            self._close_info = CloseInfo(CloseCode.ABNORMAL_CLOSURE, "", initiator, cause)
        self._awaiting_reply = False
        self._closing = True
        self._finish()
        await trio.aclose_forcefully(self._stream)

    def _finish(self) -> None:
        if self._closed:
            return
        self._reader.end()
        self._writer.fail_all(NotOpen())
        self._closed = True
        if self._closed_event is not None:
            self._closed_event.set()
        for ping in self._pings.values():
            if ping.answered is not None:
                ping.answered.set()
        for scope in self._task_scopes:
            scope.cancel()
        info = self._close_info
        assert info is not None
        self._log.info("%s", info)

    # -- background tasks ----------------------------------------------------

    def _start_background(self, nursery: trio.Nursery) -> None:
        """Start the connection's work in ``nursery``, the connection's own:
        the background task (reading while no ``receive()`` does, and
        keepalive); the closing handshake and the writer task are started
        when needed (on TLS the writer now, for good).

        Each task runs in a shielded cancel scope, so a cancelled owner can
        still close the connection cleanly; the connection itself ends them,
        within ``close_timeout`` of the close starting.
        """
        self._adopt(nursery)
        nursery.start_soon(self._background)

    def _adopt(self, nursery: trio.Nursery) -> None:
        """Make ``nursery`` the one that runs the connection's tasks (the
        caller runs :meth:`_background` itself, or has it started)."""
        self._nursery = nursery
        for task in self._deferred:
            nursery.start_soon(self._guard, task)
        self._deferred.clear()
        self._writer.start()
        if self._keepalive is not None and not self._reader.direct:
            self._spawn(self._keepalive_loop)

    def _spawn(self, task: Callable[[], Awaitable[None]]) -> None:
        """Start one more of the connection's tasks (see _start_background)."""
        if self._nursery is None:
            self._deferred.append(task)
        else:
            self._nursery.start_soon(self._guard, task)

    async def _guard(self, task: Callable[[], Awaitable[None]]) -> None:
        with trio.CancelScope(shield=True) as scope:
            await self._run_guarded(task, scope)

    async def _run_guarded(
        self, task: Callable[[], Awaitable[None]], scope: trio.CancelScope
    ) -> None:
        """Run ``task`` in ``scope``, which _finish() cancels; an internal
        error aborts the connection."""
        self._task_scopes.append(scope)
        if self._closed:
            scope.cancel()
        try:
            await task()
        except Exception:
            self._log.exception("internal error; aborting the connection")
            await self._abort("internal error")
        finally:
            self._task_scopes.remove(scope)

    async def _background(self, *, shield: bool = True) -> None:
        """The connection's one permanent task: reading while no
        ``receive()`` does (see Reader.run), and keepalive, whose deadline
        is this task's cancel scope's: when it passes, the reading is
        interrupted (which loses nothing), keepalive acts, and reading goes
        on. Returns at end-of-file or once the connection is closed.

        ``shield=False``: the task that owns the connection's nursery runs
        this itself (client connections started by start_connection), and
        handles its own cancellation.
        """
        # Only socket reads are interrupted for keepalive: see _keepalive_loop.
        keepalive = self._keepalive if self._reader.direct else None
        while True:
            active = keepalive is not None and not self._closing
            deadline = keepalive.deadline if active else math.inf  # type: ignore[union-attr]
            with trio.CancelScope(shield=shield, deadline=deadline) as scope:
                await self._run_guarded(self._reader.run, scope)
            if self._closed or not scope.cancelled_caught:
                return
            if keepalive is not None and not self._closing:
                self._keepalive_tick(keepalive)

    async def _keepalive_loop(self) -> None:
        """Keepalive in a task of its own, for streams other than plain
        sockets: Trio's TLS stream breaks if a read is cancelled during a
        renegotiation, so there the background task's reads are never
        interrupted. (TLS connections also keep a writer task; one more task
        adds little to what TLS itself holds per connection.)"""
        keepalive = self._keepalive
        assert keepalive is not None
        while not self._closing:
            await trio.sleep_until(keepalive.deadline)
            if not self._closing:
                self._keepalive_tick(keepalive)

    def _keepalive_tick(self, keepalive: Keepalive) -> None:
        """The keepalive deadline passed: ping, wait on, or fail the
        connection with 1011 when a pong (or the ping's own write, queued
        before it) took longer than ``ping_timeout``."""
        reader = self._reader
        step = keepalive.tick(trio.current_time(), reader.paused, reader.resumed_at)
        if step is Step.PING:
            payload = os.urandom(4)
            while payload in self._pings:  # pragma: no cover - 1 in 4 billion
                payload = os.urandom(4)
            ping = Ping(trio.current_time())
            self._pings[payload] = ping
            keepalive.sent(ping)
            self._writer.post(Kind.PING, payload)
            reader.read_now()
        elif step is Step.TIMEOUT:
            self._start_closing(
                CloseCode.INTERNAL_ERROR,
                "keepalive timeout",
                "local",
                f"keepalive timeout: no pong within {keepalive.timeout:g} s",
                failure=True,
            )

    async def _close_sequence(self) -> None:
        """Send our close frame, wait for the peer's, shut TCP down; abort when
        ``close_timeout`` runs out."""
        with trio.move_on_at(self._close_deadline) as scope:
            # Let the tasks that were woken with this close run first: a
            # receiver handed the last messages that came before it may still
            # answer them (what Autobahn calls strict), as before this task
            # was started on demand.
            await trio.lowlevel.checkpoint()
            if self._close_frame is not None:
                try:
                    await self._writer.send(Kind.CLOSE, self._close_frame)
                except NotOpen:
                    pass
            if not self._settled:
                self._settled_event = trio.Event()
                await self._settled_event.wait()
            # The closing handshake is over: shut TCP down. The server closes
            # first (RFC 6455 7.1.1); the client waits for it.
            # End-of-file goes through the writer, after any pong or frame
            # still being written (never beside it).
            if not self._client and isinstance(self._stream, trio.abc.HalfCloseableStream):
                try:
                    await self._writer.shut_down()
                except NotOpen:
                    pass
            if self._client or isinstance(self._stream, trio.abc.HalfCloseableStream):
                await self._reader.wait_eof()
            try:
                await self._stream.aclose()
            except STREAM_ERRORS:
                pass  # already closed or broken underneath: closed all the same
        if scope.cancelled_caught:
            if self._awaiting_reply:
                await self._abort("closing handshake timed out")
            else:
                await self._abort("TCP shutdown timed out")
        else:
            self._finish()


async def _as_async(
    items: Iterable[str | bytes | bytearray | memoryview]
    | AsyncIterable[str | bytes | bytearray | memoryview],
) -> AsyncIterator[str | bytes | bytearray | memoryview]:
    """Iterate a plain or an async iterable the same way."""
    if isinstance(items, (str, bytes, bytearray, memoryview)):
        raise TypeError("send_stream() takes an iterable of chunks; use send() for one message")
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
            await trio.lowlevel.checkpoint_if_cancelled()
