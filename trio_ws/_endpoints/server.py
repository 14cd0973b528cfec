"""The WebSocket server: ``serve``, ``serve_listeners`` and ``Server``."""

from __future__ import annotations

import errno
import logging
import math
import socket
import ssl
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING

import trio

from .._conn.connection import WebSocket
from .._conn.lifecycle import (
    close_explained,
    connection_log,
    set_client_address,
    start_background,
    traffic_of,
)
from .._errors import ConnectionClosed, consists_of, split_off
from .._options import ConnectionOptions, Options, options_from
from .._stats import ServerStats, Traffic, total
from .._wire.close import CloseCode
from .accept import AcceptFailures, accept_connections
from .forwarded import X_FORWARDED_FOR, TrustedProxies, trusted_proxies_from
from .routes import Routes
from .server_handshake import HandshakePolicy, OriginRule, ProcessRequest, accept_handshake

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Unpack  # for type checkers only

__all__ = ["Handler", "Server", "check_serve_arguments", "serve", "serve_listeners"]

logger = logging.getLogger("trio_ws")

#: A connection handler: called with each open connection, in its own task.
Handler = Callable[[WebSocket], Awaitable[None]]

_SHUTDOWN_REASON = "server shutting down"

#: The address families whose listeners have a port (others, such as Unix
#: sockets, are served alike but have none).
_IP_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class Server:
    """A running server, as returned by ``await nursery.start(trio_ws.serve, ...)``
    (or ``serve_listeners``)."""

    def __init__(
        self,
        handler: Handler,
        listeners: list[trio.SocketListener],
        *,
        ssl_context: ssl.SSLContext | None,
        process_request: ProcessRequest | None,
        subprotocols: Sequence[str],
        origins: Sequence[OriginRule] | None,
        max_connections: int | None,
        options: Options,
        trusted_proxies: TrustedProxies | None = None,
    ) -> None:
        self._handler = handler
        # Who may name the client (see forwarded.py); None: nobody.
        self._trusted = trusted_proxies
        #: The listening sockets.
        self.listeners = listeners
        self._ssl_context = ssl_context
        #: The connection settings every connection of this server uses.
        self.options = options
        self._max_connections = max_connections
        self._policy = HandshakePolicy(
            process_request=process_request,
            subprotocols=tuple(subprotocols),
            origins=None if origins is None else tuple(origins),
            reserve_slot=self._reserve_slot,
            options=options,
            routes=handler if isinstance(handler, Routes) else None,
        )
        self._connections: set[WebSocket] = set()
        #: The tasks of the handshakes holding a slot under max_connections.
        self._reserved: set[trio.lowlevel.Task] = set()
        self._scope: trio.CancelScope | None = None
        self._done = trio.Event()
        self._accepted = 0
        self._rejected: Counter[str] = Counter()
        self._close_codes: Counter[int] = Counter()
        self._closed_traffic = Traffic()

    @property
    def ports(self) -> list[int]:
        """The port of every TCP listener (one per address family with port 0)."""
        return [
            listener.socket.getsockname()[1]
            for listener in self.listeners
            if listener.socket.family in _IP_FAMILIES
        ]

    @property
    def port(self) -> int:
        """The port of the first TCP listener: the one to use after ``port=0``
        (IndexError for a server without one, such as ``serve_unix``'s)."""
        ports = self.ports
        if not ports:
            raise IndexError("this server has no TCP listener (a Unix socket? see unix_path)")
        return ports[0]

    @property
    def unix_path(self) -> str | None:
        """The path of the first Unix-socket listener (``serve_unix``), or
        None. An abstract socket's name starts with ``"\\0"``."""
        for listener in self.listeners:
            if listener.socket.family == getattr(socket, "AF_UNIX", None):
                try:
                    name = listener.socket.getsockname()
                except OSError:  # closed: the server stopped
                    return None
                return name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name
        return None

    @property
    def connections(self) -> frozenset[WebSocket]:
        """The connections open right now (handshake complete, not yet closed)."""
        return frozenset(self._connections)

    def stats(self) -> ServerStats:
        """A snapshot of the server's counters: connections, refusals by
        reason, close codes, and the traffic of all its connections."""
        traffic = total(traffic_of(ws) for ws in self._connections)
        return ServerStats(
            open_connections=len(self._connections),
            accepted=self._accepted,
            rejected=MappingProxyType(dict(self._rejected)),
            close_codes=MappingProxyType(dict(self._close_codes)),
            traffic=self._closed_traffic + traffic,
        )

    def _reserve_slot(self) -> bool:
        """HandshakePolicy.reserve_slot: hold one of the max_connections slots
        for the handshake running in this task, or return False when open
        connections and handshakes holding a slot fill them all. Check and
        reservation are one step, with no checkpoint in between."""
        limit = self._max_connections
        if limit is None:
            return True
        if len(self._connections) + len(self._reserved) >= limit:
            return False
        self._reserved.add(trio.lowlevel.current_task())
        return True

    async def aclose(self) -> None:
        """Stop the server: stop listening, close every connection with 1001
        Going Away and wait for the handlers to end, within ``close_timeout``
        (connections still open then are aborted).

        Cancellation: cancelling ``aclose()`` only stops the waiting; the
        shutdown goes on in the server's own task and still ends within
        ``close_timeout``."""
        if self._scope is not None:
            self._scope.cancel()
        await self._done.wait()

    async def _serve(self, task_status: trio.TaskStatus[Server]) -> None:
        try:
            with trio.CancelScope() as self._scope:
                async with trio.open_nursery() as nursery:
                    failures = AcceptFailures()
                    for listener in self.listeners:
                        await nursery.start(
                            accept_connections, listener, nursery, self.serve_stream, failures
                        )
                    for port in sorted(set(self.ports)):
                        logger.info("listening on port %d", port)
                    for listener in self.listeners:
                        if listener.socket.family not in _IP_FAMILIES:
                            logger.info("listening on %r", listener.socket.getsockname())
                    task_status.started(self)
        finally:
            for listener in self.listeners:
                listener.socket.close()  # one whose loop never started
            self._done.set()

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """One connection, in the task the accept loop started for it (or
        on a stream handed over as if accepted: :mod:`trio_ws.testing` runs
        in-memory streams through it): the opening handshake, the handler,
        the close. Returns when the connection is over. The handler's part is
        written out here rather than in helpers: an idle connection waits
        under this frame, and each frame on that stack costs about 200 bytes.
        Nothing one connection does may take the server down.

        Cancellation (the server stopping): the handler is cancelled, the
        connection closed with 1001; the stream is closed on every path."""
        try:
            try:
                ws = await self._open(stream)
            except Exception:
                logger.exception("internal error while opening a connection")
                return
            if ws is None:
                return
            # No checkpoint since _open released the slot: it is this connection's.
            self._accepted += 1
            self._connections.add(ws)
            if self._trusted is not None:
                set_client_address(ws, self._trusted.client(ws.peer_address, ws.request.headers))
            try:
                async with trio.open_nursery() as nursery:
                    start_background(ws, nursery)
                    code: int = CloseCode.NORMAL_CLOSURE
                    reason = ""
                    cause: str | None = None
                    try:
                        await self._handler(ws)
                    except BaseException as exc:
                        # A closed connection (the peer left) and a shutdown are
                        # not handler failures; anything else is, even in a group.
                        cancelled, rest = split_off(exc, trio.Cancelled)
                        _, failure = split_off(rest, ConnectionClosed)
                        if failure is not None:
                            if not consists_of(failure, Exception):
                                raise  # KeyboardInterrupt and the like
                            connection_log(ws).error("connection handler raised", exc_info=failure)
                            code, reason = CloseCode.INTERNAL_ERROR, "internal server error"
                            cause = f"application error: handler raised {failure!r}"
                        if cancelled is not None:
                            raise cancelled from None
                    finally:
                        if trio.current_effective_deadline() == -math.inf:
                            # The server is being cancelled (shut down).
                            code, reason = CloseCode.GOING_AWAY, _SHUTDOWN_REASON
                            cause = "server shutdown"
                        if not ws.closed:  # (the peer's close usually ends it first)
                            with trio.CancelScope(shield=True):
                                await close_explained(ws, code, reason, cause)
            except Exception:
                logger.exception("internal error while serving a connection")
            finally:
                self._connections.discard(ws)
                info = ws.close_info
                end_code = info.code if info is not None else CloseCode.ABNORMAL_CLOSURE
                self._close_codes[end_code] += 1
                self._closed_traffic = self._closed_traffic + traffic_of(ws)
        finally:
            # (Skipped when the connection closed its socket already.)
            if not isinstance(stream, trio.SocketStream) or stream.socket.fileno() >= 0:
                await trio.aclose_forcefully(stream)

    async def _open(self, stream: trio.abc.Stream) -> WebSocket | None:
        """The opening handshake (TLS first, if any), within ``open_timeout``:
        the open connection, or None if it did not open (the caller closes the
        stream). The slot the handshake may hold under ``max_connections`` is
        released here on every path; the caller adds an open connection to
        ``_connections`` before its next checkpoint, so the slot passes to it.

        Cancellation: propagates, after the slot is released."""
        outcome: WebSocket | str = "handshake_failed"
        try:
            with trio.move_on_after(self.options.open_seconds):
                outcome = await self._handshake(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            logger.debug("handshake failed: %s", exc)
        finally:
            if self._reserved:
                self._reserved.discard(trio.lowlevel.current_task())
        if isinstance(outcome, str):
            self._rejected[outcome] += 1
            return None
        return outcome

    async def _handshake(self, stream: trio.abc.Stream) -> WebSocket | str:
        if self._ssl_context is not None:
            stream = trio.SSLStream(stream, self._ssl_context, server_side=True)
            await stream.do_handshake()
        return await accept_handshake(stream, self._policy)


async def serve(
    handler: Handler,
    host: str | None,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    process_request: ProcessRequest | None = None,
    subprotocols: Sequence[str] = (),
    origins: Sequence[OriginRule] | None = None,
    max_connections: int | None = None,
    backlog: int | None = None,
    reuse_port: bool = False,
    trusted_proxies: Sequence[str] | None = None,
    forwarded_header: str = X_FORWARDED_FOR,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
    **options: Unpack[ConnectionOptions],
) -> None:
    """Serve WebSocket connections on ``host``:``port``, calling
    ``await handler(ws)`` in a new task for each one.

    With ``server = await nursery.start(trio_ws.serve, handler, host, port)``
    it returns a :class:`Server` once listening (``port=0`` picks a free port:
    see ``server.port``); called directly, it serves until cancelled.

    Connections belong to the server: cancelling the nursery that runs it, or
    ``await server.aclose()``, stops listening and closes every connection
    with 1001 Going Away, within ``close_timeout``. When a handler returns,
    its connection is closed with 1000; when it raises, the error is logged
    with the connection id and the connection is closed with 1011, while the
    server and every other connection carry on.

    ``host`` None listens on all interfaces. ``ssl_context`` serves ``wss://``.
    ``subprotocols`` lists the subprotocols the server speaks, in order of
    preference. ``process_request(request)`` (sync or async) sees every HTTP
    request first and returns None for the default behaviour, a
    :class:`Response` to answer it itself (reject an upgrade, or answer a plain
    HTTP request such as a health check), or an :class:`Accept` to accept the
    upgrade with a chosen subprotocol and extra headers. Plain HTTP requests
    get 426 Upgrade Required by default; malformed or oversized requests get
    400 or 431.

    ``origins`` guards against cross-site WebSocket hijacking: when given, an
    upgrade whose Origin header is not an exact string of the list, or does
    not fully match one of its ``re.Pattern`` entries, gets 403 (a ``None``
    entry admits requests without an Origin, as non-browser clients send).
    ``max_connections`` caps the open connections, handshakes in progress
    included: an upgrade takes a slot before ``process_request`` runs and
    gives it back if it does not open; beyond it, upgrades get 503 with
    ``Retry-After``. Both are checked before ``process_request``.
    When accept() fails for lack of file descriptors or memory, the server
    waits (up to 1 s) and retries, logging a warning at most every 10 s.

    ``reuse_port=True`` binds each listening socket with ``SO_REUSEPORT``, so
    that several processes (or several servers of one process) can listen on
    the same ``port`` at once, the kernel spreading new connections among
    them (on Linux; see docs/workers.md). It is meant with an explicit
    ``port``: with ``port=0`` each server gets a port of its own. It raises
    ValueError where the platform has no ``SO_REUSEPORT``.
    To serve on sockets opened some other way, see :func:`serve_listeners`;
    on a Unix socket, :func:`serve_unix`.

    ``trusted_proxies`` (None by default: nobody) lists the reverse proxies
    whose word on the client's address is believed: addresses and networks
    (``"127.0.0.1"``, ``"10.0.0.0/8"``, ``"::1"``) and ``"unix"`` for peers on
    a Unix socket. For a connection from one of them, ``ws.remote_address``
    is the client its ``forwarded_header`` names (``"X-Forwarded-For"``, the
    default, or ``"Forwarded"``, RFC 7239), read from the right, past every
    trusted hop; ``ws.peer_address`` stays the socket's peer (see
    docs/deployment.md).

    ``**options`` are the connection options every connection of the server
    uses, each described under :class:`Options` and typed by
    :class:`ConnectionOptions`: ``open_timeout``, ``close_timeout``,
    ``max_message_size``, ``max_queue``, ``max_queue_bytes``,
    ``ping_interval``, ``ping_timeout``, ``frame_size`` and ``compression``
    (``server.options`` holds them). They are checked before the port is
    bound: an unknown name raises TypeError naming the closest valid one, a
    bad value ValueError.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer from 0 to 65535, not {port!r}")
    if reuse_port and not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port=True: this platform has no SO_REUSEPORT")
    # Before binding: no port taken for nothing.
    check_serve_arguments(max_connections, options, serve)
    trusted_proxies_from(trusted_proxies, forwarded_header)
    if reuse_port:
        listeners = await _open_reuse_port_listeners(host, port, backlog)
    else:
        listeners = await trio.open_tcp_listeners(port, host=host, backlog=backlog)
    await serve_listeners(
        handler,
        listeners,
        ssl_context=ssl_context,
        process_request=process_request,
        subprotocols=subprotocols,
        origins=origins,
        max_connections=max_connections,
        trusted_proxies=trusted_proxies,
        forwarded_header=forwarded_header,
        task_status=task_status,
        **options,
    )


def check_serve_arguments(
    max_connections: int | None,
    options: ConnectionOptions,
    accepted_by: Callable[..., object],
) -> Options:
    """The server's settings given to ``accepted_by``, checked
    (ValueError/TypeError naming the bad one)."""
    if max_connections is not None and (
        not isinstance(max_connections, int) or max_connections <= 0
    ):
        raise ValueError(f"max_connections must be a positive integer, not {max_connections!r}")
    return options_from(options, accepted_by)


async def serve_listeners(
    handler: Handler,
    listeners: Sequence[trio.SocketListener],
    *,
    ssl_context: ssl.SSLContext | None = None,
    process_request: ProcessRequest | None = None,
    subprotocols: Sequence[str] = (),
    origins: Sequence[OriginRule] | None = None,
    max_connections: int | None = None,
    trusted_proxies: Sequence[str] | None = None,
    forwarded_header: str = X_FORWARDED_FOR,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
    **options: Unpack[ConnectionOptions],
) -> None:
    """Serve WebSocket connections on ``listeners``, listening sockets the
    caller opened (``trio.SocketListener`` objects: from a socket inherited
    from a parent process, from ``trio.open_tcp_listeners`` with settings of
    your own, ...), calling ``await handler(ws)`` in a new task for each one.

    Everything else is as for :func:`serve`, which opens its listeners and
    calls this: ``server = await nursery.start(trio_ws.serve_listeners,
    handler, listeners)`` gives the :class:`Server` once it accepts, the
    server owns its connections and closes them with 1001 when it stops, and
    the keyword arguments are those of ``serve`` but ``backlog`` and
    ``reuse_port`` (the listeners are already listening). ``**options`` are
    the connection options of :class:`Options`: ``open_timeout``,
    ``close_timeout``, ``max_message_size``, ``max_queue``,
    ``max_queue_bytes``, ``ping_interval``, ``ping_timeout``, ``frame_size``
    and ``compression``; an unknown name raises TypeError naming the closest
    valid one, a bad value ValueError.

    The server owns the listeners from the call on: it closes them when it
    stops, and also when it raises before serving (an argument it refuses).
    """
    owned = list(listeners)
    try:
        for listener in owned:
            if not isinstance(listener, trio.SocketListener):
                raise TypeError(f"listeners must be trio.SocketListener objects, not {listener!r}")
        if not owned:
            raise ValueError("serve_listeners() needs at least one listener")
        settings = check_serve_arguments(max_connections, options, serve_listeners)
        trusted = trusted_proxies_from(trusted_proxies, forwarded_header)
        server = Server(
            handler,
            owned,
            ssl_context=ssl_context,
            process_request=process_request,
            subprotocols=subprotocols,
            origins=origins,
            max_connections=max_connections,
            options=settings,
            trusted_proxies=trusted,
        )
    except BaseException:
        for listener in owned:
            if isinstance(listener, trio.SocketListener):
                listener.socket.close()
        raise
    await server._serve(task_status)


async def _open_reuse_port_listeners(
    host: str | None, port: int, backlog: int | None
) -> list[trio.SocketListener]:
    """``trio.open_tcp_listeners`` with ``SO_REUSEPORT`` set on every socket
    before it is bound: one listener per address ``host`` resolves to (both
    wildcards for None), each also with ``SO_REUSEADDR`` and, for IPv6,
    ``IPV6_V6ONLY``, as Trio sets them."""
    addresses = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    try:
        for family, kind, proto, _, address in addresses:
            try:
                sock = trio.socket.socket(family, kind, proto)
            except OSError as exc:
                if exc.errno == errno.EAFNOSUPPORT:
                    continue  # as Trio does: an address family this host lacks
                raise
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                await sock.bind(address)
                sock.listen(0xFFFF if backlog is None else min(backlog, 0xFFFF))
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    if not listeners:
        raise OSError(errno.EAFNOSUPPORT, f"no usable address family for {host!r}")
    return listeners
