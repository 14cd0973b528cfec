"""Tunnels through forward proxies: HTTP ``CONNECT`` over a stream to the
proxy, and SOCKS through python-socks (the optional ``trio_ws[socks]``
extra, imported only when a SOCKS proxy is used). ``proxy_config`` chooses
the proxy; ``dial`` connects to it and adds TLS to the server on top.

Failures: the proxy refusing, hanging up during the negotiation or
answering nonsense is a :class:`ProxyError` naming the proxy (never the
server); an unreachable proxy, or a connection to it that breaks, is a
:class:`ConnectFailed` naming the proxy.
"""

from __future__ import annotations

import math
import socket
from typing import TYPE_CHECKING

import h11
import trio

from .._errors import ConnectFailed, ProxyError
from .proxy_config import ProxyURL
from .url import WebSocketURL

if TYPE_CHECKING:  # pragma: no cover
    from python_socks.async_.trio import Proxy as SocksProxy

__all__ = ["MAX_CONNECT_HEAD", "http_connect", "socks_connect"]

#: Largest answer head (status line and headers) read from an HTTP proxy;
#: a longer one is a :class:`ProxyError`.
MAX_CONNECT_HEAD = 16 * 1024

#: Bytes asked for per read of the proxy's answer.
_READ_SIZE = 4096

#: SOCKS5 reply codes after which trying again may succeed: general
#: failure, network or host unreachable, connection refused, TTL expired;
#: and SOCKS4's "request rejected or failed".
_SOCKS_RETRYABLE = frozenset({1, 3, 4, 5, 6, 91})

#: What to install for a SOCKS proxy.
SOCKS_EXTRA = "pip install 'trio_ws[socks]'"


def _authority(url: WebSocketURL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{url.port}"


async def http_connect(stream: trio.abc.Stream, proxy: ProxyURL, url: WebSocketURL) -> None:
    """Ask the HTTP proxy at the other end of ``stream`` for a tunnel to
    ``url``'s host and port (``CONNECT host:port``, with Basic
    ``Proxy-Authorization`` from the proxy URL's credentials); return once
    it answered 2xx, when ``stream`` is the tunnel.

    The answer's head may be at most :data:`MAX_CONNECT_HEAD` bytes, and
    the proxy may send nothing after it (the server speaks only after our
    request, or our TLS hello): either is a :class:`ProxyError`, as is any
    answer other than 2xx and a proxy that hangs up without answering. A
    broken connection is :class:`ConnectFailed`. ``stream`` is left open
    (the caller closes it on failure). Cancellation: safe, nothing is kept;
    the caller closes the stream."""
    authority = _authority(url)
    headers = [("Host", authority)]
    if proxy.authorization is not None:
        headers.append(("Proxy-Authorization", proxy.authorization))
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_CONNECT_HEAD)
    request = h11.Request(method="CONNECT", target=authority, headers=headers)
    try:
        await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
        response = await _read_answer(stream, conn, proxy)
    except (trio.BrokenResourceError, OSError) as exc:
        raise ConnectFailed(
            f"connection to the proxy {proxy.redacted} lost during CONNECT: {exc}"
        ) from exc
    reason = response.reason.decode("latin-1").strip()
    if not 200 <= response.status_code <= 299:
        if response.status_code == 407:
            reason += _auth_hint(proxy, response)
        raise ProxyError(
            proxy.redacted,
            reason,
            response.status_code,
            retryable=response.status_code >= 500,
        )
    extra, _ = conn.trailing_data
    if extra:
        status = response.status_code
        reason = f"sent {len(extra)} bytes after its {status} answer to CONNECT, before we did"
        raise ProxyError(proxy.redacted, reason)


def _auth_hint(proxy: ProxyURL, response: h11.Response) -> str:
    challenge = next(
        (
            value.decode("latin-1")
            for name, value in response.headers
            if name == b"proxy-authenticate"
        ),
        None,
    )
    if proxy.username is not None:
        return " (the credentials in the proxy URL were refused)"
    asked = f"; it asks for {challenge}" if challenge else ""
    return f" (no credentials in the proxy URL: {proxy.scheme}://USER:PASSWORD@host:port{asked})"


async def _read_answer(
    stream: trio.abc.Stream, conn: h11.Connection, proxy: ProxyURL
) -> h11.Response:
    """The proxy's final answer (1xx skipped), read within the head limit."""
    closed = False
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if closed:
                break
            if exc.error_status_hint == 431:
                reason = f"answered CONNECT with a head over {MAX_CONNECT_HEAD} bytes"
                raise ProxyError(proxy.redacted, reason) from exc
            raise ProxyError(
                proxy.redacted, f"answered CONNECT with something that is not HTTP: {exc}"
            ) from exc
        if isinstance(event, h11.Response):
            return event
        if isinstance(event, h11.ConnectionClosed):
            break
        if event is h11.NEED_DATA:
            data = await stream.receive_some(_READ_SIZE)
            closed = not data
            conn.receive_data(bytes(data))
    raise ProxyError(
        proxy.redacted, "closed the connection without answering CONNECT", retryable=True
    )


def _socks_client(proxy: ProxyURL) -> SocksProxy:
    """A python-socks client for ``proxy``; ImportError naming the extra
    when python-socks is not installed."""
    try:
        from python_socks import ProxyType
        from python_socks.async_.trio import Proxy
    except ImportError as exc:
        raise ImportError(
            f"the SOCKS proxy {proxy.redacted} needs python-socks: {SOCKS_EXTRA}"
        ) from exc
    kind = ProxyType.SOCKS4 if proxy.scheme.startswith("socks4") else ProxyType.SOCKS5
    password = proxy.password
    if proxy.username is not None and password is None:
        password = ""
    return Proxy(
        kind,
        proxy.host,
        proxy.port,
        username=proxy.username,
        password=password,
        # socks5h and socks4a: the proxy resolves the server's name.
        rdns=proxy.scheme in ("socks5h", "socks4a"),
    )


async def socks_connect(proxy: ProxyURL, url: WebSocketURL) -> trio.SocketStream:
    """A tunnel to ``url``'s host and port through the SOCKS proxy
    ``proxy``, made by python-socks: it connects to the proxy,
    authenticates with the URL's credentials and asks for the server. With
    ``socks5`` and ``socks4`` the server's name is resolved here, with
    ``socks5h`` and ``socks4a`` by the proxy.

    :class:`ProxyError` when the proxy refuses or hangs up,
    :class:`ConnectFailed` when it cannot be reached (or the server's name
    cannot be resolved here), ImportError without python-socks.
    Cancellation: safe; python-socks closes its socket on failure and on
    cancellation."""
    client = _socks_client(proxy)
    from python_socks import ProxyConnectionError, ProxyTimeoutError
    from python_socks import ProxyError as SocksError

    try:
        # No timeout of its own: open_timeout bounds the whole opening.
        sock = await client.connect(url.host, url.port, timeout=math.inf)
    except ProxyConnectionError as exc:
        raise ConnectFailed(
            f"cannot connect to the proxy {proxy.redacted}: {exc.__cause__ or exc}"
        ) from exc
    except SocksError as exc:
        if type(exc.__cause__).__name__ == "IncompleteReadError":
            reason = "closed the connection during the SOCKS negotiation"
            raise ProxyError(proxy.redacted, reason, retryable=True) from exc
        reason = str(exc) or type(exc).__name__
        retryable = exc.error_code in _SOCKS_RETRYABLE
        raise ProxyError(proxy.redacted, reason, retryable=retryable) from exc
    except ProxyTimeoutError as exc:  # pragma: no cover - a timeout, which we do not set
        raise ProxyError(proxy.redacted, str(exc)) from exc
    except socket.gaierror as exc:  # socks5 and socks4 resolve the name here
        raise ConnectFailed(f"cannot resolve {url.host}: {exc}") from exc
    except OSError as exc:
        raise ConnectFailed(
            f"connection to the proxy {proxy.redacted} lost during the SOCKS negotiation: {exc}"
        ) from exc
    return trio.SocketStream(sock)
