"""The exceptions trio_ws raises."""

from __future__ import annotations

import sys

import trio

from ._http import Headers
from ._wire.close import CloseInfo

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "ConnectFailed",
    "ConnectionClosed",
    "ConnectionRejected",
    "HandshakeError",
    "HandshakeTimeout",
    "InvalidHandshake",
    "InvalidURL",
    "PoolTimeout",
    "ProxyError",
    "ReconnectFailed",
    "TLSError",
    "WebSocketError",
    "consists_of",
    "split_off",
]


class WebSocketError(Exception):
    """Base class of every exception trio_ws defines."""


class InvalidURL(WebSocketError, ValueError):
    """The URL given to :func:`connect` is not a usable ``ws://`` or ``wss://`` URL."""


class HandshakeError(WebSocketError):
    """The connection could not be opened.

    Raised by :func:`connect` (and :func:`start_connection`) for every failure
    that happens before the opening handshake completes. The subclass says
    what went wrong; ``__cause__`` holds the underlying exception, if any.
    """


class ConnectFailed(HandshakeError):
    """The TCP connection failed: refused, reset, unreachable, name not found,
    or closed by the server before it answered the handshake."""


class TLSError(HandshakeError):
    """The TLS handshake failed (certificate not trusted, name mismatch, ...)."""


class HandshakeTimeout(HandshakeError, trio.TooSlowError):
    """The connection was not open within ``open_timeout`` seconds."""


class InvalidHandshake(HandshakeError):
    """The server's answer broke the WebSocket protocol (bad accept key,
    missing headers, a subprotocol or extension we did not offer, ...)."""


class ConnectionRejected(HandshakeError):
    """The server answered the upgrade request with something other than 101."""

    def __init__(self, status_code: int, headers: Headers, body: bytes) -> None:
        super().__init__(f"server rejected the WebSocket connection: HTTP {status_code}")
        #: The HTTP status code of the server's answer.
        self.status_code = status_code
        #: The response headers.
        self.headers = headers
        #: The response body (possibly truncated at 64 KiB).
        self.body = body


class ProxyError(HandshakeError):
    """The forward proxy would not open a tunnel to the server: it answered
    HTTP ``CONNECT`` with a status other than 2xx (407: credentials missing or
    wrong, 403: not allowed, 502/503/504: it could not reach the server...),
    its SOCKS negotiation failed (authentication, rules, the server
    unreachable or refusing), or it hung up or answered something that is
    neither. An unreachable proxy is a :class:`ConnectFailed` naming the
    proxy instead, like an unreachable server."""

    def __init__(
        self, proxy: str, reason: str, status_code: int | None = None, *, retryable: bool = False
    ) -> None:
        if status_code is not None:
            super().__init__(
                f"proxy {proxy} refused CONNECT: HTTP {status_code} {reason}".rstrip()
            )
        else:
            super().__init__(f"proxy {proxy}: {reason}")
        #: The proxy's URL, without its password.
        self.proxy = proxy
        #: The status code of the proxy's answer to ``CONNECT``; None for a
        #: SOCKS proxy, and for a proxy that answered no status at all.
        self.status_code = status_code
        #: What went wrong: the HTTP reason phrase, or the SOCKS error.
        self.reason = reason
        #: True when trying again later may succeed (the proxy could not
        #: reach the server, or hung up without an answer); False when the
        #: proxy refused us (credentials, rules, an unsupported request).
        #: :func:`reconnect` retries only the retryable ones.
        self.retryable = retryable


class ReconnectFailed(HandshakeError):
    """:func:`reconnect` gave up: ``max_attempts`` attempts in a row failed.
    ``__cause__`` is the last attempt's error."""

    def __init__(self, url: str, attempts: int, last_error: BaseException) -> None:
        super().__init__(f"{url}: gave up after {attempts} failed attempts: {last_error}")
        #: The URL that could not be reached.
        self.url = url
        #: How many attempts failed in a row.
        self.attempts = attempts


class PoolTimeout(WebSocketError, trio.TooSlowError):
    """:meth:`ConnectionPool.acquire` found no free connection, and could not
    open one, within its ``timeout``."""


class ConnectionClosed(WebSocketError):
    """The connection is closed; the operation cannot proceed.

    ``info`` tells how it ended; ``code``, ``reason`` and ``by_peer`` are
    shortcuts to it.
    """

    def __init__(self, info: CloseInfo) -> None:
        super().__init__(str(info))
        #: How the connection ended.
        self.info = info

    @property
    def code(self) -> int:
        """The close code."""
        return self.info.code

    @property
    def reason(self) -> str:
        """The close reason."""
        return self.info.reason

    @property
    def by_peer(self) -> bool:
        """True when the peer started the close (or vanished), False when we did."""
        return self.info.by_peer


def consists_of(
    exc: BaseException | None, kind: type[BaseException] | tuple[type[BaseException], ...]
) -> bool:
    """True when ``exc`` is a ``kind``, or an exception group (nested or not)
    made only of ``kind`` -- how Trio nurseries deliver such errors."""
    if isinstance(exc, BaseExceptionGroup):
        return all(consists_of(inner, kind) for inner in exc.exceptions)
    return isinstance(exc, kind)


def split_off(
    exc: BaseException | None, kind: type[BaseException] | tuple[type[BaseException], ...]
) -> tuple[BaseException | None, BaseException | None]:
    """Split ``exc`` (an exception or a group) into the part made of ``kind``
    and the rest; either may be None."""
    if exc is None:
        return None, None
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(kind)
    return (exc, None) if isinstance(exc, kind) else (None, exc)
