"""One ASGI connection, served by the native server's own code.

The ASGI scope becomes the HTTP request it stands for, and the server's
per-connection method (``Server.serve_stream``) runs on an
:class:`._stream.AsgiStream` that starts with that request: so the
handshake decides it exactly as on a socket (router, guards,
``process_request``, ``origins``, ``subprotocols``, ``max_connections``),
and the handler, the close and the server's counters are the native ones.
What the stream does with the bytes is in ``_stream``.
"""

from __future__ import annotations

import logging
import urllib.parse

import h11
import trio

from .._endpoints.http_answers import error_response
from .._endpoints.server import Server
from .._wire.close import CloseCode
from ._stream import AsgiStream, Receive, Scope, Send

__all__ = ["request_head", "serve_scope"]

logger = logging.getLogger("trio_ws")

#: Request fields left out of a WebSocket request: the ASGI server
#: negotiated compression itself.
_DROPPED_WEBSOCKET = frozenset({b"sec-websocket-extensions"})
#: Request fields left out of a plain HTTP request: its body is not passed on.
_DROPPED_HTTP = frozenset({b"content-length", b"transfer-encoding"})
#: Stands in for a Sec-WebSocket-Key the ASGI request has none of (HTTP/2).
_STAND_IN_KEY = b"dHJpb193cyBvdmVyIEFTR0k="


def _relative_target(scope: Scope) -> bytes:
    """The request target as the application sees it: path and query, with
    the ``root_path`` the app is mounted at removed (as sent, percent-encoded,
    where the ASGI server gives ``raw_path``)."""
    path: str = scope.get("path") or "/"
    root: str = scope.get("root_path") or ""
    raw: bytes | None = scope.get("raw_path")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        path = path[len(root) :] or "/"
        raw = _strip_root(raw, root)
    if not raw:
        raw = urllib.parse.quote(path, safe="/:@!$&'()*+,;=~").encode("ascii")
    query: bytes = scope.get("query_string") or b""
    return raw + b"?" + query if query else raw


def _strip_root(raw: bytes | None, root: str) -> bytes | None:
    """``raw`` without the segments that spell ``root`` (None: they do not)."""
    if raw is None:
        return None
    count = root.count("/")
    parts = raw.split(b"/", count + 1)
    if len(parts) < count + 1:
        return None
    prefix = b"/".join(parts[: count + 1])
    if urllib.parse.unquote(prefix.decode("ascii", "replace")) != root:
        return None
    return b"/" + (parts[count + 1] if len(parts) > count + 1 else b"")


def request_head(scope: Scope) -> tuple[h11.Connection, bytes]:
    """The HTTP request the scope describes, and the h11 connection that
    reads the answer to it. A WebSocket scope is a GET upgrade with the
    client's own header fields (its ``Sec-WebSocket-Extensions`` offer left
    out: compression is the ASGI server's), completed where the ASGI server
    gives none (HTTP/2 has no Upgrade, Connection or key). An ``http`` scope
    keeps its method and loses its body (the server reads none: a plain
    HTTP request is answered from its head). Raises ``h11.LocalProtocolError``
    for a request h11 cannot write."""
    websocket = scope["type"] == "websocket"
    dropped = _DROPPED_WEBSOCKET if websocket else _DROPPED_HTTP
    fields: list[tuple[bytes, bytes]] = []
    present: set[bytes] = set()
    for name, value in scope.get("headers") or ():
        name = bytes(name).lower()
        if name.startswith(b":") or name in dropped:
            continue
        present.add(name)
        fields.append((name, bytes(value)))
    if b"host" not in present:
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}" if server and server[1] is not None else "localhost"
        fields.append((b"host", host.encode("idna")))
    if websocket:
        for name, value in (
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-key", _STAND_IN_KEY),
            (b"sec-websocket-version", b"13"),
        ):
            if name not in present:
                fields.append((name, value))
    method = "GET" if websocket else str(scope.get("method") or "GET")
    conn = h11.Connection(h11.CLIENT)
    head = conn.send(h11.Request(method=method, target=_relative_target(scope), headers=fields))
    conn.send(h11.EndOfMessage())
    assert head is not None
    return conn, head


async def serve_scope(server: Server, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one ``websocket`` or ``http`` scope with ``server``'s own
    per-connection method (handshake, handler, close) on an
    :class:`AsgiStream`. Returns once the connection is over.

    Cancellation (the ASGI server shutting down): the handler is cancelled
    and the connection closed with 1001, as on the native server."""
    if scope["type"] == "websocket":
        first = await receive()
        if first.get("type") != "websocket.connect":
            return  # the client left first
    try:
        answer, head = request_head(scope)
    except h11.LocalProtocolError as exc:
        logger.debug("bad ASGI request: %s", exc)
        answer, head = h11.Connection(h11.CLIENT), b""
    stream = AsgiStream(scope, receive, send, head, answer)
    try:
        if head:
            await server.serve_stream(stream)
    finally:
        # What the connection could not say itself, said within close_timeout.
        with trio.CancelScope(shield=True), trio.move_on_after(server.options.close_seconds):
            if not head:
                await stream.answer(error_response(400, "malformed request"))
            elif not stream.answered:  # cancelled, or open_timeout passed
                await stream.answer(error_response(500, "the request was not answered"))
            elif stream.accepted:
                # Ended without a close frame: aborted (close_timeout, internal error).
                await stream.send_close(CloseCode.INTERNAL_ERROR, "")
