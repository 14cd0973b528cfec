"""A connection's lifecycle: its background tasks, what it does with the
peer's control frames, and closing it (the closing handshake, the TCP
shutdown, aborting). :class:`Lifecycle` is the part of :class:`WebSocket`
that does this; the functions below it are how the connection's owners (the
server, the client, a hub or pool) start, run and close it, so that nothing
outside the connection's own modules touches its private state.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

import trio

from .._errors import ConnectionClosed
from .._options import Options
from .._stats import Traffic
from .._wire.close import CloseCode
from .._wire.events import CloseReceived, Failure, Incoming, PingReceived, PongReceived
from .close_state import Action, CloseState
from .delivery import Delivery
from .idle_cut import explain_idle_cut, idle_cut_seconds
from .keepalive import Keepalive, Ping, Step
from .reader import Reader
from .writer import STREAM_ERRORS, Kind, NotOpen, Writer

if TYPE_CHECKING:
    from .connection import WebSocket

__all__ = [
    "Lifecycle",
    "close_explained",
    "connection_log",
    "delivery_of",
    "endpoint_of",
    "run_owned",
    "set_client_address",
    "start_background",
    "traffic_of",
]


logger = logging.getLogger("trio_ws")


class _ConnectionLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[conn {self.extra['conn_id']}] {msg}", kwargs  # type: ignore[index]


class Lifecycle:
    """The background work and the closing of a :class:`WebSocket` (a base
    class of it: the state lives in the connection's slots)."""

    # The connection's state that this part uses (set in WebSocket.__init__).
    __slots__ = (
        "_client",
        "_close_deadline",
        "_closed_event",
        "_deferred",
        "_keepalive",
        "_nursery",
        "_options",
        "_pings",
        "_reader",
        "_settled_event",
        "_state",
        "_stream",
        "_task_scopes",
        "_writer",
        "id",
        "latency",
    )

    _stream: trio.abc.Stream
    _options: Options
    _client: bool
    _writer: Writer
    _reader: Reader
    _nursery: trio.Nursery | None
    _deferred: list[Callable[[], Awaitable[None]]]
    _task_scopes: list[trio.CancelScope]
    _keepalive: Keepalive | None
    _state: CloseState
    _settled_event: trio.Event | None
    _closed_event: trio.Event | None
    _close_deadline: float
    _pings: dict[bytes, Ping]
    latency: float | None

    id: int

    @property
    def _log(self) -> _ConnectionLogger:
        """The trio_ws logger, with this connection's id in every line (made
        when needed: most connections only log once)."""
        return _ConnectionLogger(logger, {"conn_id": self.id})

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

    async def _close(self, code: int, reason: str, cause: str | None = None) -> None:
        """aclose(), with the library's explanation (``cause``) kept in close_info."""
        self._start_closing(code, reason, "local", cause)
        try:
            await self._wait_closed()
        except BaseException:
            await self._abort("close cancelled: connection aborted")
            raise

    async def _wait_closed(self) -> None:
        if self._state.closed:
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
        action = self._state.close(
            code, reason, initiator, cause, failure=failure, send_frame=send_frame
        )
        self._act(action)

    def _act(self, action: Action) -> None:
        """Do what the close state asks (see close_state.Action). The reader
        and writer read the state's flags themselves (``closing``): what is
        left here is waking whoever waits, and starting tasks."""
        if action is Action.START or action is Action.START_SETTLED:
            self._close_deadline = trio.current_time() + self._options.close_seconds
            self._reader.wake()
            self._spawn(self._close_sequence)
        settles = action is Action.SETTLE or action is Action.START_SETTLED
        if settles and self._settled_event is not None:
            self._settled_event.set()

    def _on_event(self, item: Incoming) -> None:
        kind = type(item)
        if kind is PingReceived:
            self._writer.post_pong(item.payload)  # type: ignore[union-attr]
        elif kind is PongReceived:
            self._on_pong(item.payload)  # type: ignore[union-attr]
        elif kind is CloseReceived:
            assert isinstance(item, CloseReceived)
            self._act(self._state.peer_closed(item.code, item.reason))
        elif kind is Failure:
            assert isinstance(item, Failure)
            action = self._state.failed(
                item.code, item.reason, item.cause, parser_usable=item.parser_usable
            )
            self._act(action)

    def _on_eof(self, error: BaseException | None) -> None:
        if not self._client and not self._state.closing:
            # Ended with no close frame either way: a proxy's idle timeout?
            idle = idle_cut_seconds(self._stream)
            if idle is not None:
                explain_idle_cut(self._log, idle, self._options.ping_interval)
        self._act(self._state.stream_ended(error))

    def _on_broken(self, error: BaseException) -> None:
        self._on_eof(error)

    # -- the broadcast path (see _delivery) ------------------------------------

    def _fall_behind(self, code: int, reason: str, cause: str) -> None:
        """Start closing a client that fell behind, without waiting."""
        self._start_closing(code, reason, "local", cause, failure=True)

    async def _closed_error(self) -> ConnectionClosed:
        """The exception for an operation on a closing or closed connection,
        once the close is settled (at most ``close_timeout`` away; the wait
        can be cancelled like any other)."""
        await self._wait_closed()
        assert self._state.info is not None
        return ConnectionClosed(self._state.info)

    async def _abort(self, cause: str) -> None:
        """Close the stream now, without (the rest of) a closing handshake."""
        if not self._state.aborted(cause):
            return
        self._finish()
        await trio.aclose_forcefully(self._stream)

    def _finish(self) -> None:
        """The stream is closed (the state says so already): release every
        waiter and end the connection's tasks."""
        self._reader.wake()
        self._writer.fail_all(NotOpen())
        if self._closed_event is not None:
            self._closed_event.set()
        for ping in self._pings.values():
            if ping.answered is not None:
                ping.answered.set()
        for scope in self._task_scopes:
            scope.cancel()
        self._log.info("%s", self._state.info)

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
        if self._state.closed:
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
            active = keepalive is not None and not self._state.closing
            deadline = keepalive.deadline if active else math.inf  # type: ignore[union-attr]
            with trio.CancelScope(shield=shield, deadline=deadline) as scope:
                await self._run_guarded(self._reader.run, scope)
            if self._state.closed or not scope.cancelled_caught:
                return
            if keepalive is not None and not self._state.closing:
                self._keepalive_tick(keepalive)

    async def _keepalive_loop(self) -> None:
        """Keepalive in a task of its own, for streams other than plain
        sockets: Trio's TLS stream breaks if a read is cancelled during a
        renegotiation, so there the background task's reads are never
        interrupted. (TLS connections also keep a writer task; one more task
        adds little to what TLS itself holds per connection.)"""
        keepalive = self._keepalive
        assert keepalive is not None
        while not self._state.closing:
            await trio.sleep_until(keepalive.deadline)
            if not self._state.closing:
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
            self._writer.post(Kind.Ping(payload))
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
            frame = self._state.frame
            if frame is not None:
                try:
                    await self._writer.send(Kind.Close(*frame))
                except NotOpen:
                    pass
            if not self._state.settled:
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
                if type(self._stream) is trio.SocketStream:
                    self._stream.socket.close()  # as aclose(), without its schedule point
                else:
                    await self._stream.aclose()
            except STREAM_ERRORS:
                pass  # already closed or broken underneath: closed all the same
        if scope.cancelled_caught:
            await self._abort(self._state.timeout_cause())
        elif self._state.finished():
            self._finish()


# -- for the connection's owners -------------------------------------------------


def start_background(ws: WebSocket, nursery: trio.Nursery) -> None:
    """Start ``ws``'s background tasks in ``nursery``, the connection's own
    (see Lifecycle._start_background)."""
    ws._start_background(nursery)


async def close_explained(ws: WebSocket, code: int, reason: str, cause: str | None) -> None:
    """``ws.aclose(code, reason)``, with the library's explanation ``cause``
    kept in its close info. Cancelled, it aborts the connection."""
    await ws._close(code, reason, cause)


def traffic_of(ws: WebSocket) -> Traffic:
    """``ws``'s traffic counters (for a server's totals)."""
    return ws._traffic()


def set_client_address(ws: WebSocket, address: object) -> None:
    """Make ``address`` ``ws.remote_address`` (a client named by a trusted
    proxy; ``ws.peer_address`` stays the socket's). Set once, at accept."""
    ws._remote = address


def connection_log(ws: WebSocket) -> logging.LoggerAdapter:  # type: ignore[type-arg]
    """The trio_ws logger with ``ws``'s id in every line."""
    return ws._log


async def run_owned(
    ws: WebSocket,
    nursery: trio.Nursery,
    task_status: trio.TaskStatus[WebSocket],
    exit_frame: Callable[[BaseException], tuple[int, str, str | None]],
) -> None:
    """Own ``ws`` from the task that runs ``nursery`` (its nursery): report
    it started, then run its background work until it is closed. On a plain
    socket this task does the background work itself (one task fewer per
    connection): unshielded, since a cancelled socket read loses nothing,
    until it is cancelled; then shielded while it closes with the code
    ``exit_frame(exc)`` gives. On TLS the connection's own (shielded) task
    does the work, and this one waits. Exceptions propagate; closing for
    good is the caller's (see _owner.close_for_exit)."""
    direct = ws._reader.direct
    if direct:
        ws._adopt(nursery)
    else:
        ws._start_background(nursery)
    task_status.started(ws)
    try:
        if direct:
            await ws._background(shield=False)
        else:
            await ws._wait_closed()
    except BaseException as exc:
        if direct:
            code, reason, cause = exit_frame(exc)
            with trio.CancelScope(shield=True):
                ws._start_closing(code, reason, "local", cause)
                await ws._background()  # reads the peer's reply
        raise


def delivery_of(ws: WebSocket) -> Delivery:
    """The connection's side of the delivery seam (see :mod:`._delivery`),
    for a hub to keep with its member."""
    return Delivery(ws._writer, ws._protocol.frame_key, ws._fall_behind, ws._close)


def endpoint_of(ws: WebSocket) -> Callable[..., Awaitable[None]] | None:
    """The handler of the route that accepted ``ws`` (None without a router),
    for the router to call."""
    return ws._endpoint
