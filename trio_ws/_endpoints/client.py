"""Opening client connections: ``connect`` and ``start_connection``."""

from __future__ import annotations

import functools
import os
import ssl
import sys
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

import attrs
import trio

from .._conn.connection import WebSocket
from .._conn.lifecycle import run_owned, start_background
from .._errors import HandshakeTimeout
from .._http import HeadersLike
from .._options import ConnectionOptions, Options, options_from
from .client_handshake import open_websocket_stream
from .dial import ProxySetting, Route
from .owner import OwnedNursery, close_for_exit, exit_close_frame
from .url import parse_url

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Unpack  # for type checkers only

__all__ = ["ClientSettings", "connect", "start_connection"]


async def _open(
    url: str,
    subprotocols: Sequence[str],
    headers: HeadersLike,
    route: Route,
    options: Options,
) -> WebSocket:
    parsed = parse_url(url)
    with trio.move_on_after(options.open_seconds) as scope:
        return await open_websocket_stream(
            parsed, subprotocols=subprotocols, headers=headers, route=route, options=options
        )
    assert scope.cancelled_caught
    raise HandshakeTimeout(f"{url}: not connected within open_timeout={options.open_timeout}s")


class connect:
    """Open a client connection to ``url`` for the duration of an ``async with``
    block::

        async with trio_ws.connect("ws://127.0.0.1:8000/chat") as ws:
            await ws.send("hello")
            reply = await ws.receive()

    The connection's background tasks run in a nursery that lives exactly as
    long as the block. Leaving the block closes the connection: with 1000 on
    normal exit, 1001 when the block was cancelled and 1011 when it raised.
    The closing handshake still runs (shielded, within ``close_timeout``) when
    the block is cancelled. Exceptions from the block come out unchanged,
    never wrapped in an ExceptionGroup.

    Any failure before the connection is open raises one
    :class:`HandshakeError` subclass: :class:`ConnectFailed` (refused, reset,
    closed), :class:`TLSError`, :class:`ConnectionRejected` (an HTTP answer
    other than 101), :class:`InvalidHandshake`, :class:`ProxyError` (a
    forward proxy refused the tunnel), or :class:`HandshakeTimeout` after
    ``open_timeout`` seconds, which bound the whole opening, proxy included.

    ``url`` is ``ws://`` or ``wss://``, with optional port, path, query and
    ``user:password@`` (sent as Basic authentication). ``subprotocols`` are
    offered in order of preference; ``headers`` are added to the request
    (Origin, Cookie, Authorization...). ``ssl_context`` is used for ``wss://``
    (default: ``ssl.create_default_context()``).

    ``proxy``: by default (True) a forward proxy is taken from the
    environment at each attempt, as other Python clients do
    (``https_proxy``/``HTTPS_PROXY`` for ``wss://``,
    ``http_proxy``/``HTTP_PROXY`` for ``ws://``, then
    ``all_proxy``/``ALL_PROXY``, lower case first; ``NO_PROXY`` lists hosts
    reached directly, loopback included only if listed); a URL names one,
    used whatever ``NO_PROXY`` says (``http://user:pass@host:port`` for HTTP
    CONNECT, ``https://`` for TLS to the proxy too, ``socks5://``,
    ``socks5h://`` (resolved by the proxy), ``socks4://`` or ``socks4a://``
    with the ``trio_ws[socks]`` extra); None or False always connects
    directly. A proxy URL that cannot be used raises :class:`InvalidURL`
    when ``connect()`` is called. ``unix_path``
    connects to a Unix socket instead of the URL's host and port, which
    still give the Host header and, for ``wss://``, the name TLS checks
    (see docs/proxies.md and docs/unix-sockets.md).

    ``**options`` are the connection options, each described under
    :class:`Options` and typed by :class:`ConnectionOptions`:
    ``open_timeout``, ``close_timeout``, ``max_message_size``, ``max_queue``,
    ``max_queue_bytes``, ``ping_interval``, ``ping_timeout``, ``frame_size``
    and ``compression``. They are checked when ``connect()`` is called,
    before any connection attempt: an unknown name raises TypeError naming
    the closest valid one, a bad value ValueError.
    """

    def __init__(
        self,
        url: str,
        *,
        subprotocols: Sequence[str] = (),
        headers: HeadersLike = (),
        ssl_context: ssl.SSLContext | None = None,
        proxy: ProxySetting = True,
        unix_path: str | os.PathLike[str] | None = None,
        **options: Unpack[ConnectionOptions],
    ) -> None:
        self._url = url
        self._subprotocols = subprotocols
        self._headers = headers
        self._route = Route(ssl_context, proxy, unix_path)
        self._options = options_from(options, connect)
        self._ws: WebSocket | None = None
        self._owner = OwnedNursery()

    async def __aenter__(self) -> WebSocket:
        if self._ws is not None:
            raise RuntimeError("this connect() was already entered; call connect() again")
        ws = await self._open_websocket()
        nursery = await self._owner.open()
        start_background(ws, nursery)
        self._ws = ws
        return ws

    async def _open_websocket(self) -> WebSocket:
        """The opening handshake (for trio_ws.testing to do over memory)."""
        return await _open(
            self._url, self._subprotocols, self._headers, self._route, self._options
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._ws is not None
        try:
            await close_for_exit(self._ws, exc)
        finally:
            await self._owner.close()


async def _run_client(
    url: str,
    subprotocols: Sequence[str],
    headers: HeadersLike,
    route: Route,
    options: Options,
    *,
    task_status: trio.TaskStatus[WebSocket] = trio.TASK_STATUS_IGNORED,
) -> None:
    ws = await _open(url, subprotocols, headers, route, options)
    async with trio.open_nursery() as nursery:
        error: BaseException | None = None
        try:
            await run_owned(ws, nursery, task_status, exit_close_frame)
        except BaseException as exc:
            error = exc
            raise
        finally:
            await close_for_exit(ws, error)


@attrs.frozen(eq=False)
class ClientSettings:
    """What :func:`start_connection` takes besides the nursery and the URL,
    checked once: for what opens connections again and again with the same
    settings (``reconnect``, ``open_pool``)."""

    subprotocols: Sequence[str]
    headers: HeadersLike
    route: Route
    options: Options

    async def start(self, nursery: trio.Nursery, url: str) -> WebSocket:
        """``start_connection(nursery, url, ...)`` with these settings."""
        runner = functools.partial(
            _run_client, url, self.subprotocols, self.headers, self.route, self.options
        )
        ws: WebSocket = await nursery.start(runner)
        return ws


async def start_connection(
    nursery: trio.Nursery,
    url: str,
    *,
    subprotocols: Sequence[str] = (),
    headers: HeadersLike = (),
    ssl_context: ssl.SSLContext | None = None,
    proxy: ProxySetting = True,
    unix_path: str | os.PathLike[str] | None = None,
    **options: Unpack[ConnectionOptions],
) -> WebSocket:
    """Open a client connection whose background tasks run in ``nursery``,
    for connections that outlive the block that opened them::

        async with trio.open_nursery() as nursery:
            ws = await trio_ws.start_connection(nursery, url)
            nursery.start_soon(reader, ws)
            ...

    Returns once the connection is open; failures before that raise one
    :class:`HandshakeError`, exactly as :func:`connect`. The connection lives
    until it is closed (``await ws.aclose()``), the peer closes it, or the
    nursery is cancelled, which closes it with 1001 (shielded, within
    ``close_timeout``). Arguments are those of :func:`connect`, ``**options``
    included: the connection options of :class:`Options` (``open_timeout``,
    ``close_timeout``, ``max_message_size``, ``max_queue``,
    ``max_queue_bytes``, ``ping_interval``, ``ping_timeout``, ``frame_size``,
    ``compression``), checked before anything starts in ``nursery``.
    """
    settings = options_from(options, start_connection)
    route = Route(ssl_context, proxy, unix_path)
    return await ClientSettings(subprotocols, headers, route, settings).start(nursery, url)
