"""The ASGI application (:class:`App`) and the dispatcher that puts it
beside an HTTP application (:func:`dispatch`)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypedDict, cast

import attrs

from .._conn.connection import WebSocket
from .._endpoints.forwarded import X_FORWARDED_FOR, trusted_proxies_from
from .._endpoints.policy import OriginRule, ProcessRequest
from .._endpoints.routes import HttpEndpoint, NoRoute, Routes, WebSocketEndpoint
from .._endpoints.server import Handler, Server, check_serve_arguments
from .._http import Request
from .._options import ConnectionOptions, Options
from .._stats import ServerStats
from ._bridge import serve_scope
from ._stream import Receive, Scope, Send

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Unpack  # for type checkers only

__all__ = ["ASGIApp", "App", "AppOptions", "dispatch"]

logger = logging.getLogger("trio_ws")

#: An ASGI 3 application.
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Connection options that are the ASGI server's, with where to set them
#: instead (Hypercorn's names).
ASGI_OWNED = {
    "ping_interval": "keepalive pings are the ASGI server's (Hypercorn: websocket_ping_interval)",
    "ping_timeout": "keepalive pings are the ASGI server's (Hypercorn: websocket_ping_interval)",
    "compression": "permessage-deflate is negotiated by the ASGI server",
    "frame_size": "the ASGI server frames the messages (ASGI has whole messages only)",
}


class AppOptions(TypedDict, total=False):
    """The connection options :class:`App` takes (those of
    :class:`trio_ws.Options` that apply under an ASGI server)."""

    open_timeout: float | None
    close_timeout: float | None
    max_message_size: int | None
    max_queue: int
    max_queue_bytes: int | None


class _ServerOwnedOptions:
    """A router seen through :class:`App`: a route's own settings for what
    the ASGI server owns (``ping_interval``...) are left out, with one
    warning per route."""

    def __init__(self, routes: Routes) -> None:
        self._routes = routes
        self._warned: set[Any] = set()

    def resolve(self, request: Request) -> NoRoute | HttpEndpoint | WebSocketEndpoint:
        found = self._routes.resolve(request)
        if isinstance(found, WebSocketEndpoint) and not found.options.keys().isdisjoint(
            ASGI_OWNED
        ):
            owned = sorted(set(found.options) & set(ASGI_OWNED))
            if found.handler not in self._warned:
                self._warned.add(found.handler)
                logger.warning(
                    "route %s: %s ignored under ASGI (%s)",
                    request.path,
                    ", ".join(owned),
                    "; ".join(ASGI_OWNED[name] for name in owned),
                )
            kept = {k: v for k, v in found.options.items() if k not in ASGI_OWNED}
            found = attrs.evolve(found, options=kept)
        return found

    async def __call__(self, ws: WebSocket) -> None:
        await self._routes(ws)


class App:
    """An ASGI application that serves a trio_ws handler or router
    (:class:`trio_ws.Router`): ``hypercorn --worker-class trio module:app``
    serves it, and a Starlette ``Mount``/``WebSocketRoute`` or
    :func:`dispatch` puts it beside an HTTP application.

    The handler gets a real :class:`trio_ws.WebSocket`, as from
    :func:`trio_ws.serve`: send/receive/``async for``/aclose, ``request``
    (relative to the mount point: ``root_path`` is removed from the path),
    ``path_params``, ``subprotocol``, ``close_code`` and ``close_reason``,
    :class:`trio_ws.ConnectionClosed`; it can join a :class:`trio_ws.Hub`.
    Every request is decided by the native server's handshake: routes (404
    and 405 answered with the ASGI denial response), guards,
    ``process_request``, ``origins``, ``subprotocols``, ``max_connections``.
    Plain HTTP requests (``http`` scopes) get what the native server answers:
    ``process_request``'s or an HTTP route's Response, else 426. Alone, the
    app answers the lifespan protocol itself.

    The keyword arguments are :func:`trio_ws.serve`'s that apply here, and
    the options of :class:`AppOptions`. What the ASGI server owns cannot be
    set: ``ping_interval``, ``ping_timeout``, ``compression`` and
    ``frame_size`` raise TypeError (set keepalive and compression in the
    ASGI server), and ``ws.ping()`` raises RuntimeError.

    ``ws.remote_address`` and ``ws.peer_address`` are the scope's
    ``client``; with ``trusted_proxies`` and ``forwarded_header``, as for
    :func:`trio_ws.serve`, a client that a trusted proxy names in its header
    becomes ``ws.remote_address`` (where the ASGI server does not already
    rewrite ``client`` itself, as Hypercorn's ProxyFixMiddleware does).

    Cancellation: when the ASGI server cancels the application (shutting
    down), each handler is cancelled and its connection closed with 1001,
    as :func:`trio_ws.serve` does.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        process_request: ProcessRequest | None = None,
        subprotocols: Sequence[str] = (),
        origins: Sequence[OriginRule] | None = None,
        max_connections: int | None = None,
        trusted_proxies: Sequence[str] | None = None,
        forwarded_header: str = X_FORWARDED_FOR,
        **options: Unpack[AppOptions],
    ) -> None:
        for name in options:
            if name in ASGI_OWNED:
                raise TypeError(f"trio_ws.asgi.App() does not take {name!r}: {ASGI_OWNED[name]}")
        settings = check_serve_arguments(max_connections, cast(ConnectionOptions, options), App)
        settings = attrs.evolve(settings, ping_interval=None, compression=None, frame_size=None)
        trusted = trusted_proxies_from(trusted_proxies, forwarded_header)
        served: Any = _ServerOwnedOptions(handler) if isinstance(handler, Routes) else handler
        self._server = Server(
            served,
            [],
            ssl_context=None,
            process_request=process_request,
            subprotocols=subprotocols,
            origins=origins,
            max_connections=max_connections,
            options=settings,
            trusted_proxies=trusted,
        )

    @property
    def options(self) -> Options:
        """The connection settings every connection of this app uses (a
        :class:`trio_ws.Options`: keepalive, compression and frame size off)."""
        return self._server.options

    @property
    def connections(self) -> frozenset[WebSocket]:
        """The connections open right now."""
        return self._server.connections

    def stats(self) -> ServerStats:
        """A snapshot of the counters, as :meth:`trio_ws.Server.stats` (the
        traffic counts the frames as trio_ws wrote and read them, before the
        ASGI server's compression)."""
        return self._server.stats()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point: ``websocket`` and ``http`` scopes are served
        (see the class); ``lifespan`` is answered (startup and shutdown
        complete at once)."""
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
        elif kind in ("websocket", "http"):
            await serve_scope(self._server, scope, receive, send)
        else:
            raise ValueError(f"trio_ws.asgi.App: unknown ASGI scope type {kind!r}")


async def _lifespan(receive: Receive, send: Send) -> None:
    """Nothing to start or stop: say so, until shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def dispatch(http: ASGIApp, websocket: ASGIApp) -> ASGIApp:
    """An ASGI application that sends ``websocket`` scopes to ``websocket``
    (an :class:`App`) and everything else (``http``, and ``lifespan``, so the
    HTTP application starts and stops as usual) to ``http``. For frameworks
    without a mount of their own, such as Quart-Trio::

        app = QuartTrio(__name__)
        app.asgi_app = trio_ws.asgi.dispatch(app.asgi_app, trio_ws.asgi.App(router))

    Every WebSocket request then goes to the trio_ws app (the HTTP
    application's own WebSocket routes are not reached).
    """

    async def dispatched(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await websocket(scope, receive, send)
        else:
            await http(scope, receive, send)

    return dispatched
