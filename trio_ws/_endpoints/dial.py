"""How a client reaches its server: the byte stream under a connection
(TCP, a Unix socket, or a tunnel through a forward proxy; then TLS for
``wss://``). No HTTP upgrade here: ``client_handshake`` does that on the
stream this opens."""

from __future__ import annotations

import ipaddress
import os
import ssl

import attrs
import trio

from .._errors import ConnectFailed, TLSError
from .url import WebSocketURL

__all__ = ["ProxySetting", "Route", "connect_tcp", "open_stream", "start_tls"]

#: ``connect(proxy=...)``: True (the default) takes the proxy from the
#: environment (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY), a URL names
#: one, None connects directly.
ProxySetting = str | bool | None


@attrs.frozen
class Route:
    """The client's way to its server, as ``connect()`` was told."""

    ssl_context: ssl.SSLContext | None = None
    proxy: ProxySetting = True
    #: A Unix socket to connect to instead of the URL's host and port
    #: (which still give the Host header and, for wss://, the TLS name).
    unix_path: str | os.PathLike[str] | None = None


async def connect_tcp(host: str, port: int) -> trio.SocketStream:
    """TCP to ``host``:``port``. An IP address is dialled directly; a name
    goes through ``trio.open_tcp_stream``, which tries each of its
    addresses (Happy Eyeballs): a nursery and a task per attempt that a
    single address does not need."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return await trio.open_tcp_stream(host, port)
    ((family, kind, proto, _, address),) = await trio.socket.getaddrinfo(
        host, port, type=trio.socket.SOCK_STREAM
    )
    sock = trio.socket.socket(family, kind, proto)
    try:
        await sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def _connect_unix(path: str | os.PathLike[str]) -> trio.SocketStream:
    """The Unix socket at ``path``; failures are ConnectFailed naming it."""
    try:
        return await trio.open_unix_socket(os.fspath(path))
    except OSError as exc:
        raise ConnectFailed(
            f"cannot connect to the Unix socket {os.fspath(path)!r}: {exc}"
        ) from exc


async def _connect_direct(url: WebSocketURL) -> trio.SocketStream:
    try:
        return await connect_tcp(url.host, url.port)
    except OSError as exc:
        raise ConnectFailed(f"cannot connect to {url.host}:{url.port}: {exc}") from exc


async def start_tls(
    stream: trio.abc.Stream, url: WebSocketURL, ssl_context: ssl.SSLContext | None
) -> trio.SSLStream[trio.abc.Stream]:
    """TLS to ``url``'s host over ``stream`` (closed on failure): a
    :class:`TLSError` for a refused handshake (certificate, protocol), a
    :class:`ConnectFailed` for a connection lost during it."""
    context = ssl_context if ssl_context is not None else ssl.create_default_context()
    tls = trio.SSLStream(stream, context, server_hostname=url.host)
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(stream)
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError) and not isinstance(
            cause, (ssl.SSLEOFError, ssl.SSLZeroReturnError)
        ):
            raise TLSError(f"TLS handshake with {url.host}:{url.port} failed: {cause}") from exc
        raise ConnectFailed(
            f"connection to {url.host}:{url.port} lost during the TLS handshake"
        ) from exc
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return tls


async def open_stream(url: WebSocketURL, route: Route) -> trio.abc.Stream:
    """The connected stream to ``url``'s server, TLS included for wss://.
    Raises a :class:`HandshakeError` subclass; not bounded in time (the
    caller applies ``open_timeout``)."""
    if route.unix_path is not None:
        stream: trio.abc.Stream = await _connect_unix(route.unix_path)
    else:
        stream = await _connect_direct(url)
    if not url.secure:
        return stream
    return await start_tls(stream, url, route.ssl_context)
