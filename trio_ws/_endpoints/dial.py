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
from .proxy import http_connect, socks_connect
from .proxy_config import ProxyURL, parse_proxy_url, proxy_from_environment
from .url import WebSocketURL

__all__ = ["ProxySetting", "Route", "connect_tcp", "open_stream", "start_tls"]

#: ``connect(proxy=...)``: True (the default) takes the proxy from the
#: environment (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY), a URL names
#: one, None (or False) connects directly.
ProxySetting = str | bool | None


@attrs.frozen
class Route:
    """The client's way to its server, as ``connect()`` was told. Checked
    when made (that is, when ``connect()`` is called): a proxy URL that
    cannot be used raises :class:`InvalidURL`, a proxy together with a
    Unix socket ValueError."""

    ssl_context: ssl.SSLContext | None = None
    proxy: ProxySetting = True
    #: A Unix socket to connect to instead of the URL's host and port
    #: (which still give the Host header and, for wss://, the TLS name).
    unix_path: str | os.PathLike[str] | None = None

    def __attrs_post_init__(self) -> None:
        if isinstance(self.proxy, str):
            parse_proxy_url(self.proxy)
            if self.unix_path is not None:
                raise ValueError("connect() takes a proxy or a unix_path, not both")
        elif self.proxy is not None and not isinstance(self.proxy, bool):
            raise TypeError(f"proxy must be a URL, True, False or None, not {self.proxy!r}")

    def proxy_for(self, url: WebSocketURL) -> ProxyURL | None:
        """The proxy to reach ``url`` through, if any; the environment is
        read now (at each attempt, for ``reconnect``)."""
        if self.unix_path is not None or self.proxy is None or self.proxy is False:
            return None
        if self.proxy is True:
            return proxy_from_environment(url, os.environ)
        return parse_proxy_url(self.proxy)


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
    return await _tls(stream, url.host, f"{url.host}:{url.port}", ssl_context)


async def _tls(
    stream: trio.abc.Stream, host: str, label: str, ssl_context: ssl.SSLContext | None
) -> trio.SSLStream[trio.abc.Stream]:
    """TLS over ``stream`` to ``host`` (the name checked in its
    certificate); ``label`` names the peer in errors."""
    context = ssl_context if ssl_context is not None else ssl.create_default_context()
    tls = trio.SSLStream(stream, context, server_hostname=host)
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(stream)
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError) and not isinstance(
            cause, (ssl.SSLEOFError, ssl.SSLZeroReturnError)
        ):
            raise TLSError(f"TLS handshake with {label} failed: {cause}") from exc
        raise ConnectFailed(f"connection to {label} lost during the TLS handshake") from exc
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return tls


async def _through_proxy(
    url: WebSocketURL, proxy: ProxyURL, ssl_context: ssl.SSLContext | None
) -> trio.abc.Stream:
    """A tunnel to ``url``'s host and port through ``proxy``: TCP to the
    proxy (and TLS to it for ``https://``), then ``CONNECT``, or SOCKS."""
    if proxy.is_socks:
        return await socks_connect(proxy, url)
    try:
        stream: trio.abc.Stream = await connect_tcp(proxy.host, proxy.port)
    except OSError as exc:
        raise ConnectFailed(f"cannot connect to the proxy {proxy.redacted}: {exc}") from exc
    if proxy.scheme == "https":
        stream = await _tls(stream, proxy.host, f"the proxy {proxy.redacted}", ssl_context)
    try:
        await http_connect(stream, proxy, url)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


async def open_stream(url: WebSocketURL, route: Route) -> trio.abc.Stream:
    """The connected stream to ``url``'s server, TLS included for wss://:
    over a Unix socket, through a forward proxy (see ``proxy_config`` for
    which), or directly. Raises a :class:`HandshakeError` subclass
    (:class:`ProxyError` when a proxy refuses), :class:`InvalidURL` for a
    proxy URL from the environment that is not one, ImportError for a SOCKS
    proxy without python-socks. Not bounded in time (the caller applies
    ``open_timeout``). Cancellation: safe; every socket opened so far is
    closed, as on failure."""
    proxy = route.proxy_for(url)
    if route.unix_path is not None:
        stream: trio.abc.Stream = await _connect_unix(route.unix_path)
    elif proxy is not None:
        stream = await _through_proxy(url, proxy, route.ssl_context)
    else:
        stream = await _connect_direct(url)
    if not url.secure:
        return stream
    return await start_tls(stream, url, route.ssl_context)
