"""Testing handlers and routers in-process, without sockets or sleeps.

:class:`TestClient` runs a handler or a :class:`~trio_ws.Router` through the
real server code (the opening handshake, routing, guards, options, close
codes, hubs) over in-memory streams, and connects to it with the real client
code::

    async def test_chat() -> None:
        async with TestClient(router) as client:
            async with client.connect("/chat/lobby") as ws:
                await ws.send("hello")
                assert await ws.receive() == "lobby: hello"

It works with pytest-trio, and with ``autojump_clock``: timeouts and
keepalive run on Trio's clock, so a 20-second keepalive timeout takes
milliseconds of real time. The pytest fixtures are in
``trio_ws.pytest_plugin`` (docs/testing.md).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

import trio
import trio.testing

from ._conn.connection import WebSocket
from ._endpoints.client import connect
from ._endpoints.client_handshake import handshake_on_stream
from ._endpoints.owner import OwnedNursery
from ._endpoints.server import Handler, Server, check_serve_arguments
from ._endpoints.server_handshake import OriginRule, ProcessRequest
from ._errors import HandshakeTimeout
from ._http import HeadersLike
from ._options import ConnectionOptions, Options, options_from

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Unpack  # for type checkers only

__all__ = ["TestClient"]


class TestClient:
    """Serve ``app`` (a handler or a Router) in-process, for tests: each
    :meth:`connect` opens a pair of memory streams, runs the server's side of
    one connection on one of them (exactly as ``serve`` runs an accepted
    socket) and the client on the other.

    The keyword arguments are those of :func:`trio_ws.serve` that apply
    without sockets: ``process_request``, ``subprotocols``, ``origins``,
    ``max_connections`` and the connection options. :attr:`server` is the
    :class:`~trio_ws.Server` (``server.stats()``, ``server.connections``).

    Leaving the ``async with`` block closes every connection still open
    (1001 Going Away, as a stopping server does) and ends every handler.
    """

    __test__ = False  # not a test class, for pytest

    def __init__(
        self,
        app: Handler,
        *,
        process_request: ProcessRequest | None = None,
        subprotocols: Sequence[str] = (),
        origins: Sequence[OriginRule] | None = None,
        max_connections: int | None = None,
        **options: Unpack[ConnectionOptions],
    ) -> None:
        settings = check_serve_arguments(max_connections, options, TestClient)
        #: The server, without listeners.
        self.server = Server(
            app,
            [],
            ssl_context=None,
            process_request=process_request,
            subprotocols=subprotocols,
            origins=origins,
            max_connections=max_connections,
            options=settings,
        )
        self._owner = OwnedNursery()
        self._nursery: trio.Nursery | None = None

    async def __aenter__(self) -> TestClient:
        if self._nursery is not None:
            raise RuntimeError("this TestClient is already running")
        self._nursery = await self._owner.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # The block's exception comes out unchanged (the server's tasks never
        # raise: each connection catches and logs its own failures).
        try:
            await self._owner.close(cancel=True)
        finally:
            self._nursery = None

    def connect(
        self,
        path: str = "/",
        *,
        subprotocols: Sequence[str] = (),
        headers: HeadersLike = (),
        host: str = "testserver",
        **options: Unpack[ConnectionOptions],
    ) -> connect:
        """Connect to the app at ``path`` (``"/chat/lobby?token=x"``), used
        as :func:`trio_ws.connect` is (``async with``); ``host`` fills the
        URL and the Host header. A rejection raises
        :class:`~trio_ws.ConnectionRejected` with the status, headers and
        body, as over a socket; the other options are the client's."""
        if self._nursery is None:
            raise RuntimeError("use the TestClient in an 'async with' block first")
        if not path.startswith("/"):
            raise ValueError(f"a path starts with '/': {path!r}")
        return _InMemoryConnect(
            self._nursery,
            self.server,
            f"ws://{host}{path}",
            subprotocols=subprotocols,
            headers=headers,
            options=options_from(options, self.connect),
        )


class _InMemoryConnect(connect):
    """``connect`` whose stream is one of a pair of memory streams, the other
    served by ``server`` in ``nursery``."""

    def __init__(
        self,
        nursery: trio.Nursery,
        server: Server,
        url: str,
        *,
        subprotocols: Sequence[str],
        headers: HeadersLike,
        options: Options,
    ) -> None:
        super().__init__(url, subprotocols=subprotocols, headers=headers)
        self._options = options
        self._server_nursery = nursery
        self._server = server

    async def _open_websocket(self) -> WebSocket:
        client_stream, server_stream = trio.testing.memory_stream_pair()
        self._server_nursery.start_soon(self._server.serve_stream, server_stream)
        with trio.move_on_after(self._options.open_seconds) as scope:
            try:
                return await handshake_on_stream(
                    client_stream,
                    self._url,
                    subprotocols=self._subprotocols,
                    headers=self._headers,
                    options=self._options,
                )
            except BaseException:
                await trio.aclose_forcefully(client_stream)
                raise
        assert scope.cancelled_caught
        await trio.aclose_forcefully(client_stream)
        raise HandshakeTimeout(
            f"{self._url}: not connected within open_timeout={self._options.open_timeout}s"
        )
