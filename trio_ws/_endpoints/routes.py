"""The seam between a server and a router: what resolving a request gives.

A server given an object with ``resolve(request)`` (a :class:`Routes`, such
as ``trio_ws.Router``) asks it, before anything else, what the request is
for: a plain HTTP answer (404, 405, or an HTTP route's response), or a
WebSocket endpoint with its path parameters and its own settings. The
router itself lives in the application layer; this module holds only the
shapes the server's handshake understands.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from .._http import Request, Response
from .._options import Options

__all__ = ["Guard", "HttpEndpoint", "NoRoute", "Routes", "WebSocketEndpoint"]

#: A route's guard: given the request and the path parameters, None lets
#: the upgrade go on; a Response refuses it with that answer. May be async.
Guard = Callable[..., Response | Awaitable[Response | None] | None]


@attrs.frozen
class NoRoute:
    """No route takes the request: 404, or 405 with the methods the path
    allows (``allow``)."""

    allow: tuple[str, ...] = ()


@attrs.frozen
class HttpEndpoint:
    """A plain HTTP route matched: call ``handler(request, **params)`` for the
    Response (it may be async)."""

    handler: Callable[..., Response | Awaitable[Response]]
    params: Mapping[str, Any]


@attrs.frozen
class WebSocketEndpoint:
    """A WebSocket route matched: its handler (called as ``handler(ws,
    **params)``), the parameters, and the route's own settings, each None
    where the server's apply."""

    handler: Callable[..., Awaitable[None]]
    params: Mapping[str, Any]
    guard: Guard | None = None
    subprotocols: Sequence[str] | None = None
    origins: Sequence[Any] | None = None
    #: Options to change from the server's (Options field names).
    options: Mapping[str, Any] = attrs.field(factory=dict)

    def options_over(self, base: Options) -> Options:
        """The server's options with this route's changes (the same object
        when the route changes none)."""
        return attrs.evolve(base, **self.options) if self.options else base


@runtime_checkable
class Routes(Protocol):
    """What a server needs of a router: the endpoint of a request (by its
    method and path), and how to run a WebSocket connection it accepted."""

    def resolve(self, request: Request) -> NoRoute | HttpEndpoint | WebSocketEndpoint:
        """What ``request`` is for."""
        ...

    async def __call__(self, ws: Any) -> None:
        """Run the handler of the route ``ws`` was accepted for."""
        ...
