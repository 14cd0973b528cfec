"""The client's side of the opening handshake: TCP, TLS, HTTP upgrade."""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs
import h11
import trio
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.extensions import Extension

from .._conn.connection import WebSocket
from .._conn.reader import READ_SIZE
from .._errors import ConnectFailed, ConnectionRejected, InvalidHandshake
from .._http import Headers, HeadersLike, Request, Response
from .._options import Options
from .._wire.deflate import DeflateExtension
from .._wire.protocol import Protocol
from .._wire.upgrade import (
    Accepted,
    check_accept,
    h11_request_fields,
    new_key,
    split_head,
    upgrade_request,
)
from .dial import Route, open_stream
from .url import WebSocketURL, parse_url

__all__ = ["handshake_on_stream", "open_websocket_stream"]

#: Most of a rejection's body kept in :class:`ConnectionRejected`.
MAX_REJECT_BODY = 64 * 1024

#: Largest response head read.
MAX_RESPONSE_HEAD = 64 * 1024

#: The status line of a plain 101.
_PLAIN_101 = re.compile(rb"HTTP/1\.1 101(?: [\t !-~]*)?")

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
    route: Route,
    options: Options,
) -> WebSocket:
    """Connect (as ``route`` says) and complete the opening handshake. Not
    bounded in time: the caller applies ``open_timeout``. Raises a
    :class:`HandshakeError`."""
    request_headers = _request_headers(url, headers)
    if isinstance(subprotocols, str):
        raise TypeError("subprotocols is a sequence of names, not one string")
    stream = await open_stream(url, route)
    try:
        return await _handshake(stream, url, list(subprotocols), request_headers, options)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


async def handshake_on_stream(
    stream: trio.abc.Stream,
    url: str,
    *,
    subprotocols: Sequence[str],
    headers: HeadersLike,
    options: Options,
) -> WebSocket:
    """The opening handshake on a stream that is already connected (an
    in-memory one, for trio_ws.testing): as ``open_websocket_stream``
    without dialling. Not bounded in time; raises a :class:`HandshakeError`."""
    parsed = parse_url(url)
    request_headers = _request_headers(parsed, headers)
    if isinstance(subprotocols, str):
        raise TypeError("subprotocols is a sequence of names, not one string")
    return await _handshake(stream, parsed, list(subprotocols), request_headers, options)


@attrs.frozen
class _Opening:
    """The request step's product: the request's key and bytes, the request
    as the WebSocket reports it, the subprotocols and permessage-deflate
    offer (if any), and, when h11 wrote the request, its connection (which
    then reads the response)."""

    key: bytes
    data: bytes
    request: Request
    subprotocols: list[str]
    deflate: DeflateExtension | None
    h11conn: h11.Connection | None = None

    @property
    def extensions(self) -> list[Extension]:
        return [self.deflate] if self.deflate is not None else []


@attrs.define
class _Rejection:
    """A rejection read so far: its status and headers, and as much of its
    body as ConnectionRejected keeps (MAX_REJECT_BODY)."""

    status_code: int
    headers: Headers
    body: bytearray = attrs.Factory(bytearray)

    def add(self, data: bytes) -> bool:
        """Keep a piece of the body; whether as much of it as is kept has
        come."""
        if len(self.body) < MAX_REJECT_BODY:
            self.body += data[: MAX_REJECT_BODY - len(self.body)]
        return len(self.body) >= MAX_REJECT_BODY

    def error(self) -> ConnectionRejected:
        """The rejection as the exception the caller sees."""
        return ConnectionRejected(self.status_code, self.headers, bytes(self.body))


@attrs.frozen
class _Accept:
    """The response step's product for a 101: what it agreed, and the bytes
    that came after its head (the connection's first input)."""

    agreed: Accepted
    trailing: bytes


def _build_request(
    url: WebSocketURL, subprotocols: list[str], request_headers: Headers, options: Options
) -> _Opening:
    """Step 1, build the upgrade request: Host and the handshake's fields,
    then the other ``request_headers``; the Request records what was sent,
    Sec-WebSocket-Protocol included. Written by ``_wire.upgrade``, or by h11
    when a header is not plain (h11 refuses what it must: LocalProtocolError)."""
    extra = [pair for pair in request_headers.raw() if pair[0].lower() != b"host"]
    deflate = (
        options.compression.extension(client=True, max_message_size=options.max_message_size)
        if options.compression is not None
        else None
    )
    extensions: list[Extension] = [deflate] if deflate is not None else []
    key = new_key()
    data = upgrade_request(url.resource, url.host_header, key, subprotocols, extensions, extra)
    h11conn = None
    if data is None:
        h11conn = h11.Connection(h11.CLIENT)
        fields = h11_request_fields(url.host_header, key, subprotocols, extensions)
        data = h11conn.send(h11.Request(method="GET", target=url.resource, headers=fields + extra))
        assert data is not None
    sent = request_headers
    if subprotocols:
        sent = Headers([*sent, ("Sec-WebSocket-Protocol", ", ".join(subprotocols))])
    request = Request.from_target("GET", url.resource, sent)
    return _Opening(key, data, request, subprotocols, deflate, h11conn)


async def _send_request(stream: trio.abc.Stream, opening: _Opening, where: str) -> None:
    """Step 1, send the request; a lost connection is ConnectFailed."""
    try:
        await stream.send_all(opening.data)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise ConnectFailed(f"connection to {where} lost during the handshake") from exc


async def _receive(stream: trio.abc.Stream, where: str) -> bytes:
    try:
        return bytes(await stream.receive_some(READ_SIZE))
    except trio.BrokenResourceError as exc:
        raise ConnectFailed(f"connection to {where} lost during the handshake") from exc


def _agree(opening: _Opening, fields: list[tuple[bytes, bytes]], where: str) -> Accepted:
    try:
        return check_accept(fields, opening.key, opening.subprotocols, opening.extensions)
    except ValueError as exc:
        # ValueError: also what a value that is not ASCII, or an extension
        # parameter that is not a number, raises.
        raise InvalidHandshake(f"invalid handshake response from {where}: {exc}") from exc


async def _read_response(
    stream: trio.abc.Stream, opening: _Opening, where: str
) -> _Accept | _Rejection:
    """Step 2, read the response: a plain 101 whose head is complete is read
    by ``_wire.upgrade``, any other answer by h11. The server's accept, or
    its rejection with as much of the body as is kept. The stream ending
    before a response is ConnectFailed; a response that cannot be parsed,
    or a 101 that does not accept this upgrade, is InvalidHandshake."""
    data = b""
    while opening.h11conn is None:
        more = await _receive(stream, where)
        if not more:
            raise ConnectFailed(f"{where} closed the connection during the handshake")
        data += more
        end = data.find(b"\r\n\r\n") + 4
        if end >= 4:
            split = split_head(data[:end])
            if split is not None and _PLAIN_101.fullmatch(split[0]):
                return _Accept(_agree(opening, split[1], where), data[end:])
        elif b"\n\n" not in data and b"\n\r\n" not in data and len(data) < MAX_RESPONSE_HEAD:
            continue  # the head is not complete yet
        break
    return await _read_with_h11(stream, opening, data, where)


async def _read_with_h11(
    stream: trio.abc.Stream, opening: _Opening, data: bytes, where: str
) -> _Accept | _Rejection:
    """Step 2, the general path: h11 reads the response, ``data`` first."""
    conn = opening.h11conn
    if conn is None:  # h11 has to have sent the request to read the answer
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD)
        proposal = [("Host", "x"), ("Upgrade", "websocket"), ("Connection", "Upgrade")]
        conn.send(h11.Request(method="GET", target="/", headers=proposal))
    rejection: _Rejection | None = None
    try:
        conn.receive_data(data)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                more = await _receive(stream, where)
                if not more and rejection is not None:  # a body ended by the stream
                    return rejection
                if not more and conn.their_state is h11.SEND_RESPONSE:
                    raise ConnectFailed(f"{where} closed the connection during the handshake")
                conn.receive_data(more)
            elif isinstance(event, h11.InformationalResponse):
                if event.status_code != 101:
                    raise h11.RemoteProtocolError(f"unexpected {event.status_code} response")
                fields = list(event.headers.raw_items())
                return _Accept(_agree(opening, fields, where), bytes(conn.trailing_data[0]))
            elif isinstance(event, h11.Response):
                headers = Headers.from_raw(event.headers.raw_items())
                rejection = _Rejection(event.status_code, headers)
            elif isinstance(event, h11.Data):
                assert rejection is not None  # h11 gives the Response first
                if rejection.add(bytes(event.data)):
                    return rejection
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                assert rejection is not None
                return rejection
    except h11.RemoteProtocolError as exc:
        raise InvalidHandshake(f"invalid handshake response from {where}: {exc}") from exc


def _accepted(
    stream: trio.abc.Stream, opening: _Opening, accept: _Accept, options: Options
) -> WebSocket:
    """Step 3, turn the server's accept into the open WebSocket, whose first
    input is whatever came after the 101's head."""
    agreed = accept.agreed
    return WebSocket(
        stream,
        Protocol(
            Connection(ConnectionType.CLIENT, agreed.extensions),
            options.max_message_size,
            opening.deflate,
        ),
        request=opening.request,
        response=Response(101, Headers.from_raw(agreed.headers)),
        subprotocol=agreed.subprotocol,
        options=options,
        initial_data=accept.trailing,
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
    answer = await _read_response(stream, opening, where)
    if isinstance(answer, _Rejection):
        raise answer.error()
    return _accepted(stream, opening, answer, options)
