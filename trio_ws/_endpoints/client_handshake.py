"""The client's side of the opening handshake: TCP, TLS, HTTP upgrade."""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Sequence

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Event, RejectConnection, RejectData
from wsproto.events import Request as WSRequest
from wsproto.utilities import RemoteProtocolError

from .._conn.connection import WebSocket
from .._conn.reader import READ_SIZE
from .._errors import ConnectFailed, ConnectionRejected, InvalidHandshake, TLSError
from .._http import Headers, HeadersLike, Request, Response
from .._options import Options
from .._wire.deflate import DeflateExtension
from .._wire.protocol import Protocol
from .url import WebSocketURL

__all__ = ["open_websocket_stream"]

#: Most of a rejection's body kept in :class:`ConnectionRejected`.
MAX_REJECT_BODY = 64 * 1024

USER_AGENT = "trio_ws/0.1"

#: Headers the handshake itself writes; users may not set them.
_RESERVED = frozenset(
    {
        "host",
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
    }
)


async def _open_stream(url: WebSocketURL, ssl_context: ssl.SSLContext | None) -> trio.abc.Stream:
    try:
        tcp = await trio.open_tcp_stream(url.host, url.port)
    except OSError as exc:
        raise ConnectFailed(f"cannot connect to {url.host}:{url.port}: {exc}") from exc
    if not url.secure:
        return tcp
    context = ssl_context if ssl_context is not None else ssl.create_default_context()
    stream = trio.SSLStream(tcp, context, server_hostname=url.host)
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(tcp)
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError) and not isinstance(
            cause, (ssl.SSLEOFError, ssl.SSLZeroReturnError)
        ):
            raise TLSError(f"TLS handshake with {url.host}:{url.port} failed: {cause}") from exc
        raise ConnectFailed(
            f"connection to {url.host}:{url.port} lost during the TLS handshake"
        ) from exc
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return stream


def _request_headers(url: WebSocketURL, headers: HeadersLike) -> Headers:
    extra = Headers(headers)
    for name, _ in extra:
        if name.lower() in _RESERVED:
            raise ValueError(f"the {name} header is set by the handshake; it cannot be given")
    fields = [("Host", url.host_header)]
    if url.authorization is not None and extra.get("Authorization") is None:
        fields.append(("Authorization", url.authorization))
    if extra.get("User-Agent") is None:
        fields.append(("User-Agent", USER_AGENT))
    return Headers(fields) + extra


async def open_websocket_stream(
    url: WebSocketURL,
    *,
    subprotocols: Sequence[str],
    headers: HeadersLike,
    ssl_context: ssl.SSLContext | None,
    options: Options,
) -> WebSocket:
    """Connect and complete the opening handshake. Not bounded in time: the
    caller applies ``open_timeout``. Raises a :class:`HandshakeError`."""
    request_headers = _request_headers(url, headers)
    if isinstance(subprotocols, str):
        raise TypeError("subprotocols is a sequence of names, not one string")
    stream = await _open_stream(url, ssl_context)
    try:
        return await _handshake(stream, url, list(subprotocols), request_headers, options)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


def _until_accepted(wsconn: WSConnection) -> Iterator[Event]:
    """The handshake's events, stopping after AcceptConnection."""
    for event in wsconn.events():
        yield event
        if isinstance(event, AcceptConnection):
            return


@attrs.frozen
class _Opening:
    """The request step's product: the client's wsproto connection, the
    request's bytes, the request as the WebSocket reports it, and the
    permessage-deflate offer, if any."""

    wsconn: WSConnection
    data: bytes
    request: Request
    deflate: DeflateExtension | None


@attrs.define
class _Rejection:
    """A rejection read so far: its status line and headers, and as much of
    its body as ConnectionRejected keeps (MAX_REJECT_BODY)."""

    event: RejectConnection
    body: bytearray = attrs.Factory(bytearray)

    def add(self, data: RejectData) -> bool:
        """Keep a piece of the body; whether the body is now complete, or
        as much of it as is kept has come."""
        if len(self.body) < MAX_REJECT_BODY:
            self.body += data.data[: MAX_REJECT_BODY - len(self.body)]
        return data.body_finished or len(self.body) >= MAX_REJECT_BODY

    def error(self) -> ConnectionRejected:
        """The rejection as the exception the caller sees."""
        return ConnectionRejected(
            self.event.status_code, Headers.from_raw(self.event.headers), bytes(self.body)
        )


def _build_request(
    url: WebSocketURL, subprotocols: list[str], request_headers: Headers, options: Options
) -> _Opening:
    """Step 1, build the upgrade request: Host and the handshake's fields
    come from wsproto, the other ``request_headers`` follow; the Request
    records what was sent, Sec-WebSocket-Protocol included."""
    wsconn = WSConnection(ConnectionType.CLIENT)
    extra = [pair for pair in request_headers.raw() if pair[0].lower() != b"host"]
    deflate = (
        options.compression.extension(client=True, max_message_size=options.max_message_size)
        if options.compression is not None
        else None
    )
    data = wsconn.send(
        WSRequest(
            host=url.host_header,
            target=url.resource,
            subprotocols=subprotocols,
            extra_headers=extra,
            extensions=[deflate] if deflate is not None else [],
        )
    )
    sent = request_headers
    if subprotocols:
        sent = Headers([*sent, ("Sec-WebSocket-Protocol", ", ".join(subprotocols))])
    return _Opening(wsconn, data, Request.from_target("GET", url.resource, sent), deflate)


async def _send_request(stream: trio.abc.Stream, opening: _Opening, where: str) -> None:
    """Step 1, send the request; a lost connection is ConnectFailed."""
    try:
        await stream.send_all(opening.data)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise ConnectFailed(f"connection to {where} lost during the handshake") from exc


async def _receive_events(
    stream: trio.abc.Stream, wsconn: WSConnection, where: str
) -> list[Event] | None:
    """Step 2, one read: the handshake events it completes (none after an
    AcceptConnection), or None at the end of the stream. A lost connection
    is ConnectFailed; a response wsproto refuses is InvalidHandshake."""
    try:
        data = bytes(await stream.receive_some(READ_SIZE))
    except trio.BrokenResourceError as exc:
        raise ConnectFailed(f"connection to {where} lost during the handshake") from exc
    if not data:
        return None
    try:
        wsconn.receive_data(data)
        # Iterate lazily: frames that came with the 101 must stay in
        # wsproto's buffer for the connection to read, not be consumed here.
        return list(_until_accepted(wsconn))
    except (RemoteProtocolError, ValueError) as exc:
        # ValueError: what wsproto raises (rather than a protocol error)
        # for header values it cannot decode or numbers it cannot parse,
        # such as an extension parameter that is not one.
        raise InvalidHandshake(f"invalid handshake response from {where}: {exc}") from exc


async def _read_response(
    stream: trio.abc.Stream, wsconn: WSConnection, where: str
) -> AcceptConnection | _Rejection:
    """Step 2, read the response: the server's accept, or its rejection with
    as much of the body as is kept (a body may end with the stream). The
    stream ending before a response is ConnectFailed."""
    rejection: _Rejection | None = None
    while True:
        events = await _receive_events(stream, wsconn, where)
        if events is None:
            if rejection is not None:  # a body delimited by the end of the stream
                return rejection
            raise ConnectFailed(f"{where} closed the connection during the handshake")
        for event in events:
            if isinstance(event, AcceptConnection):
                return event
            if isinstance(event, RejectConnection):
                rejection = _Rejection(event)
                if not event.has_body:
                    return rejection
            elif isinstance(event, RejectData):
                assert rejection is not None  # wsproto sends RejectConnection first
                if rejection.add(event):
                    return rejection


def _accepted(
    stream: trio.abc.Stream, opening: _Opening, accept: AcceptConnection, options: Options
) -> WebSocket:
    """Step 3, turn the server's accept into the open WebSocket."""
    wsconn = opening.wsconn
    assert wsconn.connection is not None
    return WebSocket(
        stream,
        Protocol(wsconn.connection, options.max_message_size, opening.deflate),
        request=opening.request,
        response=Response(101, Headers.from_raw(accept.extra_headers)),
        subprotocol=accept.subprotocol,
        options=options,
    )


async def _handshake(
    stream: trio.abc.Stream,
    url: WebSocketURL,
    subprotocols: list[str],
    request_headers: Headers,
    options: Options,
) -> WebSocket:
    """The opening handshake on a connected stream: send the request, read
    the response, and return the open WebSocket, or raise ConnectionRejected
    (step 4) for any answer but 101."""
    opening = _build_request(url, subprotocols, request_headers, options)
    where = f"{url.host}:{url.port}"
    await _send_request(stream, opening, where)
    answer = await _read_response(stream, opening.wsconn, where)
    if isinstance(answer, _Rejection):
        raise answer.error()
    return _accepted(stream, opening, answer, options)
