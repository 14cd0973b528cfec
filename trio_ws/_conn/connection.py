"""The WebSocket connection: a Trio channel of messages."""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Literal

import trio

from .._http import Request, Response
from .._options import Options
from .._stats import ConnectionStats, Traffic
from .._wire.close import CloseCode, CloseInfo, check_close_code, check_close_reason
from .._wire.events import Message
from .._wire.protocol import Protocol
from .close_state import CloseState
from .keepalive import Keepalive, Ping
from .lifecycle import Lifecycle
from .message_stream import MessageStream
from .reader import Reader
from .writer import Kind, NotOpen, Writer

__all__ = ["BridgedStream", "WebSocket"]

logger = logging.getLogger("trio_ws")

_ids = itertools.count(1)

#: The path parameters of a connection that no router accepted.
_NO_PARAMS: Mapping[str, Any] = MappingProxyType({})


class BridgedStream(trio.abc.Stream):
    """A stream standing in for a socket that another server owns (the pipe
    of ``trio_ws.asgi``): it knows that socket's addresses, and the
    connection's pings are that server's, so :meth:`WebSocket.ping` raises."""

    #: Who owns the real connection, for error messages (``"the ASGI server"``).
    owner = "another server"
    #: The real socket's addresses, as ``local_address``/``remote_address`` give them.
    sockname: Any = None
    peername: Any = None


def _address(stream: trio.abc.Stream, which: Literal["sockname", "peername"]) -> Any:
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        try:
            return getattr(stream.socket, "get" + which)()
        except OSError:
            return None
    if isinstance(stream, BridgedStream):
        return getattr(stream, which)
    return None


class WebSocket(Lifecycle, trio.abc.Channel[Message]):
    """One open WebSocket connection, used like a Trio channel of messages
    (a :class:`trio.abc.Channel`).

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

    # The rest of its state is Lifecycle's.
    __slots__ = (
        "_endpoint",
        "_protocol",
        "_remote",
        "_stream_lot",
        "_stream_sender",
        "path_params",
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
        path_params: Mapping[str, Any] = _NO_PARAMS,
        endpoint: Callable[..., Awaitable[None]] | None = None,
    ) -> None:
        self._stream = stream
        self._protocol = protocol
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
        #: The path parameters of the route that accepted the connection
        #: (see :class:`Router`); empty without a router, and on the client.
        self.path_params = path_params
        # The client's address when a trusted proxy named it (set once, at
        # accept: lifecycle.set_client_address); None: the socket's peer.
        self._remote: Any = None
        # The route's handler (run by the router: lifecycle.endpoint_of).
        self._endpoint = endpoint
        self._nursery: trio.Nursery | None = None
        self._deferred: list[Callable[[], Awaitable[None]]] = []  # tasks to start
        # Where the connection is in its closing (and how it ended): the one
        # state the reader and writer read too.
        state = self._state = CloseState()
        self._writer = Writer(
            stream, protocol, state, self._on_broken, self._spawn, options.frame_size
        )
        self._reader = Reader(
            stream,
            protocol,
            state,
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
        # Events made only for those who wait (an idle connection holds
        # none: each costs about 280 bytes).
        self._settled_event: trio.Event | None = None
        self._closed_event: trio.Event | None = None
        self._close_deadline = 0.0
        self._pings: dict[bytes, Ping] = {}
        self._stream_sender: trio.lowlevel.Task | None = None  # see send_stream()
        self._stream_lot: trio.lowlevel.ParkingLot | None = None  # made when needed
        #: The round-trip time of the last answered ping (keepalive or
        #: :meth:`ping`), in seconds; None until one is answered.
        self.latency: float | None = None
        # Frames that arrived with the handshake (or that wsproto holds from it).
        self._reader.process(initial_data)

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
        """The client's address: the socket's peer (``(host, port)`` for
        TCP, a path for a Unix socket, or None), except on a server with
        ``trusted_proxies`` where a trusted proxy named the client in its
        forwarding header: then ``(host, port)`` from that header, port 0
        when it gave none (see docs/deployment.md)."""
        remote = self._remote
        return remote if remote is not None else _address(self._stream, "peername")

    @property
    def peer_address(self) -> Any:
        """The socket's own peer address, whatever a proxy's header says:
        the proxy's address behind one (see :attr:`remote_address`)."""
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
        state = self._state
        return state.info if state.closed else None

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
        return self._state.closing

    @property
    def closed(self) -> bool:
        """True once the connection is closed (closing handshake over, stream closed)."""
        return self._state.closed

    def __repr__(self) -> str:
        side = "client" if self._client else "server"
        state = self._state.phase.value
        return f"<WebSocket #{self.id} {side} {self.request.target!r} {state}>"

    # -- messages --------------------------------------------------------------

    async def send(
        self, message: str | bytes | bytearray | memoryview, *, compress: bool = True
    ) -> None:
        """Send one message: text for ``str``, binary for bytes-like data.

        When compression was negotiated, the message is compressed unless
        ``compress=False`` (for data known not to compress, such as images
        or encrypted payloads), it is shorter than ``Deflate.min_size``, or
        it is binary data of 1 KiB or more that looks incompressible
        (``Deflate.skip_incompressible``, on by default: a sample of it
        holds too many distinct byte values).

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
            await self._writer.send_message(message, compress)
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
                await self._writer.send(Kind.Fragment(chunk, False, compress))
                end = "" if isinstance(chunk, str) else b""
            # The last frame is empty: each chunk went out as soon as it came.
            await self._writer.send(Kind.Fragment(end, True, compress))
        except NotOpen:
            self._writer.end_stream()
            raise await self._closed_error() from None
        except BaseException:
            if self._writer.end_stream() and not self._state.closing:
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
        semantics as :meth:`receive`). Raises ValueError (:exc:`json.JSONDecodeError`)
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
        Raises :class:`ConnectionClosed` if the connection closes first, and
        RuntimeError on a connection served through ``trio_ws.asgi`` (the
        ASGI server owns pings there).
        """
        if isinstance(self._stream, BridgedStream):
            raise RuntimeError(
                f"ping() cannot work here: {self._stream.owner} owns this connection's "
                "pings and pongs (configure keepalive there)"
            )
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
                await self._writer.send(Kind.Ping(payload))
            except NotOpen:
                raise await self._closed_error() from None
            self._reader.read_now()
            await ping.answered.wait()  # type: ignore[union-attr]
        finally:
            self._pings.pop(payload, None)
        if ping.rtt is None:
            raise await self._closed_error()
        return ping.rtt

    # -- closing ---------------------------------------------------------------

    async def aclose(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection with ``code`` and ``reason``; return once it is
        closed.

        Performs the closing handshake (send a close frame, wait for the
        peer's) and shuts the TCP connection down, within ``close_timeout``
        seconds; after that the connection is aborted. Calling it again, or on
        a connection the peer closed, just waits for the close to finish.

        Cancellation: if cancelled, the connection is aborted at once (the
        stream is closed without waiting for the peer), as the
        :meth:`trio.abc.AsyncResource.aclose` contract asks.
        """
        check_close_code(code)
        check_close_reason(reason)
        await self._close(code, reason)

    async def wait_closed(self) -> CloseInfo:
        """Wait until the connection is closed; return how it ended.
        Cancellation: safe (the connection is unaffected)."""
        await self._wait_closed()
        assert self._state.info is not None
        return self._state.info


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
