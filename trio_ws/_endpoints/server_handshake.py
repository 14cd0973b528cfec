"""The server's side of the opening handshake.

A plain, valid upgrade (nearly all of them) takes the fast path: read by
``_wire.upgrade`` and answered there, without h11 or wsproto's handshake.
Every other request takes the general path: h11 parses it, so that a plain
HTTP request (a health check, a page) can be answered on the same port, and
wsproto validates the upgrade and produces the 101 response. Refusals are
always answered through h11.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import Any

import attrs
import h11
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import AcceptConnection, RejectConnection
from wsproto.events import Request as WSRequest
from wsproto.extensions import Extension
from wsproto.utilities import ProtocolError, RemoteProtocolError

from .._conn.connection import WebSocket
from .._conn.reader import READ_SIZE
from .._http import Accept, Headers, Request, Response
from .._options import Options
from .._wire.deflate import DeflateExtension
from .._wire.protocol import Protocol
from .._wire.upgrade import (
    UpgradeHead,
    accept_response,
    agree_extensions,
    parse_upgrade,
    valid_host,
    valid_key,
)
from .http_answers import answer, client_error_status, error_response, response_bytes
from .policy import (
    RETRY_AFTER,
    HandshakePolicy,
    OriginRule,
    ProcessRequest,
    Refusal,
    Refused,
    origin_allowed,
)
from .route_step import call_route_function, route_request
from .routes import WebSocketEndpoint

__all__ = [
    "HandshakePolicy",
    "OriginRule",
    "ProcessRequest",
    "Refusal",
    "Refused",
    "accept_handshake",
    "origin_allowed",
    "response_bytes",
]

logger = logging.getLogger("trio_ws")

#: Largest request head (request line and headers) the server reads.
MAX_REQUEST_HEAD = 16 * 1024


class _ClientLeft(Exception):
    """The client closed the connection before sending a request."""


async def _read_request(
    stream: trio.abc.Stream, data: bytes
) -> tuple[h11.Connection, h11.Request, bytes]:
    """Parse a request with h11, starting with ``data`` already received."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
    conn.receive_data(data)
    received = len(data)
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Request):
            trailing = bytes(conn.trailing_data[0])
            # h11 only limits incomplete heads; a big one that arrived whole
            # is refused here.
            if received - len(trailing) > MAX_REQUEST_HEAD:
                raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
            return conn, event, trailing
        if event is h11.NEED_DATA:
            more = await stream.receive_some(READ_SIZE)
            if not more:
                raise _ClientLeft
            received += len(more)
            conn.receive_data(bytes(more))
        else:  # pragma: no cover - h11 yields nothing else before a request
            raise h11.RemoteProtocolError("unexpected HTTP event", error_status_hint=400)


#: Header fields of an upgrade that wsproto decodes as ASCII.
_ASCII_FIELDS = (b"connection", b"sec-websocket-protocol", b"sec-websocket-extensions")
#: Header fields an upgrade request must not repeat (RFC 6455 11.3.1, 11.3.5).
_SINGLE_FIELDS = (b"sec-websocket-key", b"sec-websocket-version")


def _upgrade_problem(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """What is wrong with an upgrade request's header fields, for the 400
    answer (the checks wsproto leaves out, or fails on with an exception), or
    None. ``headers`` come from h11, names lowercased."""
    names = [name for name, _ in headers]
    for name in _SINGLE_FIELDS:
        if names.count(name) > 1:
            return f"more than one {name.decode()} header"
    for name, value in headers:
        if name in _ASCII_FIELDS and not value.isascii():
            return f"the {name.decode()} header is not ASCII"
        if name == b"host" and not valid_host(value):
            return "the Host header is not a valid host name"
        if name == b"sec-websocket-key" and not valid_key(value):
            return "Sec-WebSocket-Key must be 16 bytes in base64"
    return None


def _start_upgrade(event: h11.Request) -> WSConnection | Refusal:
    """Step 4, validate the upgrade and hand it to wsproto: its connection,
    ready to accept, or a ``bad_request`` refusal with the 4xx answer to a
    malformed request (logged at DEBUG)."""
    problem = _upgrade_problem(event.headers)
    if problem is not None:
        logger.debug("bad upgrade request: %s", problem)
        return Refusal(Refused.BAD_REQUEST, error_response(400, problem))
    wsconn = WSConnection(ConnectionType.SERVER)
    try:
        wsconn.initiate_upgrade_connection(event.headers.raw_items(), event.target)
        ws_request = next(wsconn.events())
        assert isinstance(ws_request, WSRequest)
    except RemoteProtocolError as exc:
        hint = exc.event_hint
        status = hint.status_code if isinstance(hint, RejectConnection) else 400
        if status == 426:  # wsproto says "missing" for a wrong version too
            exc = RemoteProtocolError("unsupported Sec-WebSocket-Version: only 13 is spoken")
        extra = [(n.decode(), v.decode()) for n, v in hint.headers] if hint is not None else []  # type: ignore[attr-defined]
        logger.debug("bad upgrade request: %s", exc)
        return Refusal(Refused.BAD_REQUEST, error_response(status, str(exc), extra))
    except (ValueError, h11.ProtocolError) as exc:  # pragma: no cover - defence in depth
        # Input the checks above missed (none known): the client's fault still.
        logger.debug("bad upgrade request: %r", exc)
        return Refusal(Refused.BAD_REQUEST, error_response(400, "malformed upgrade request"))
    return wsconn


def _request_of(received: _Received) -> Request:
    fast = received.fast
    if fast is not None:
        return Request.from_target("GET", fast.target.decode(), Headers.from_raw(fast.headers))
    event = received.event
    return Request.from_target(
        event.method.decode("ascii", "replace"),
        event.target.decode("ascii", "replace"),
        Headers.from_raw(event.headers.raw_items()),
    )


def _choose_subprotocol(
    request: Request, accept: Accept | None, subprotocols: Sequence[str]
) -> str | None:
    offered = request.subprotocols
    if accept is not None and accept.subprotocol is not None:
        if accept.subprotocol not in offered:
            raise ValueError(
                f"process_request chose subprotocol {accept.subprotocol!r}, "
                f"which the client did not offer ({offered})"
            )
        return accept.subprotocol
    for candidate in subprotocols:
        if candidate in offered:
            return candidate
    return None


class _Received:
    """The read step's product: the request (read by the fast parser, or by
    h11), and the bytes that came after its head. The h11 connection that
    answers a refusal is made on demand for a request read by the fast
    parser."""

    __slots__ = ("_h11", "fast", "head_data", "trailing")

    def __init__(
        self,
        trailing: bytes,
        *,
        fast: UpgradeHead | None = None,
        head_data: bytes = b"",
        h11_parsed: tuple[h11.Connection, h11.Request] | None = None,
    ) -> None:
        self.trailing = trailing
        #: The fast parser's reading, or None for the general path.
        self.fast = fast
        self.head_data = head_data
        self._h11 = h11_parsed

    def _parsed(self) -> tuple[h11.Connection, h11.Request]:
        if self._h11 is None:
            conn = h11.Connection(h11.SERVER)
            conn.receive_data(self.head_data)
            event = conn.next_event()
            assert isinstance(event, h11.Request)  # what the fast parser took, h11 takes
            self._h11 = conn, event
        return self._h11

    @property
    def conn(self) -> h11.Connection:
        """The h11 connection to answer on."""
        return self._parsed()[0]

    @property
    def event(self) -> h11.Request:
        """The request as h11 read it."""
        return self._parsed()[1]

    @property
    def head(self) -> bool:
        """Whether the request is a HEAD: its answer goes without a body."""
        return self.fast is None and self.event.method == b"HEAD"


@attrs.frozen
class _Agreement:
    """The negotiation step's product: the 101 answer, what it agreed, and
    wsproto's connection for the open WebSocket."""

    data: bytes
    subprotocol: str | None
    deflate: DeflateExtension | None
    connection: Connection


async def _receive(stream: trio.abc.Stream) -> _Received | Refusal:
    """Step 1, read the request: a plain upgrade whose head arrives in one
    piece is read by the fast parser, anything else by h11. Refused:
    ``handshake_failed``, with nothing to answer, when the client leaves
    first; ``bad_request`` (400, or 431 when too large) when h11 cannot
    parse it, logged at DEBUG."""
    data = bytes(await stream.receive_some(READ_SIZE))
    if not data:
        return Refusal(Refused.HANDSHAKE_FAILED, None)
    end = data.find(b"\r\n\r\n") + 4
    if 4 <= end <= MAX_REQUEST_HEAD:
        fast = parse_upgrade(data[:end])
        if fast is not None:
            return _Received(data[end:], fast=fast, head_data=data[:end])
    try:
        conn, event, trailing = await _read_request(stream, data)
    except _ClientLeft:
        return Refusal(Refused.HANDSHAKE_FAILED, None)
    except h11.RemoteProtocolError as exc:
        logger.debug("bad HTTP request: %s", exc)
        status = client_error_status(exc.error_status_hint)
        return Refusal(Refused.BAD_REQUEST, error_response(status, str(exc)))
    return _Received(trailing, h11_parsed=(conn, event))


def _screen(request: Request, policy: HandshakePolicy) -> Refusal | None:
    """Step 2, screen an upgrade before process_request sees it: refuse an
    Origin that is not allowed (403, logged at INFO), then reserve a slot,
    refusing when the server is full (503). None: go on, as a plain HTTP
    request always does."""
    if not request.is_upgrade:
        return None
    if policy.origins is not None and not origin_allowed(request.origin, policy.origins):
        logger.info("refused an upgrade from origin %r", request.origin)
        return Refusal(Refused.ORIGIN, error_response(403, "this Origin is not allowed"))
    if not policy.reserve_slot():
        retry = [("Retry-After", str(RETRY_AFTER))]
        return Refusal(
            Refused.CAPACITY, error_response(503, "the server is full; try again later", retry)
        )
    return None


async def _process(
    request: Request, process_request: ProcessRequest | None
) -> Response | Accept | None:
    """Step 3, run process_request, turning its failures into 500 answers
    (logged at ERROR: a bug in it, not the client's fault)."""
    if process_request is None:
        return None
    try:
        result = process_request(request)
        if inspect.isawaitable(result):
            result = await result
    except Exception:
        logger.exception("process_request failed for %s %s", request.method, request.target)
        return error_response(500, "the server failed to process the request")
    if result is not None and not isinstance(result, (Response, Accept)):
        logger.error("process_request returned %r; expected a Response, an Accept or None", result)
        return error_response(500, "the server failed to process the request")
    return result


def _decide(
    request: Request, http_version: bytes, decision: Response | Accept | None
) -> Refusal | Accept | None:
    """Step 3's outcome: process_request's Response is sent (``rejected``
    for an upgrade, ``http`` for plain HTTP); plain HTTP otherwise gets 426;
    an upgrade that is not a GET over HTTP/1.1 is a ``bad_request``. Else
    the Accept (or None, for the defaults) to upgrade with."""
    if isinstance(decision, Response):
        return Refusal(Refused.REJECTED if request.is_upgrade else Refused.HTTP, decision)
    if not request.is_upgrade:
        upgrade = [("Upgrade", "websocket")]
        return Refusal(Refused.HTTP, error_response(426, "this is a WebSocket endpoint", upgrade))
    if request.method != "GET":
        allow = [("Allow", "GET")]
        return Refusal(
            Refused.BAD_REQUEST, error_response(405, "a WebSocket upgrade must use GET", allow)
        )
    if http_version != b"1.1":
        return Refusal(
            Refused.BAD_REQUEST, error_response(400, "a WebSocket upgrade needs HTTP/1.1")
        )
    return decision


def _negotiate(
    wsconn: WSConnection, request: Request, accept: Accept | None, policy: HandshakePolicy
) -> _Agreement | Refusal:
    """Step 5, negotiate: the subprotocol (see _choose_subprotocol) and
    permessage-deflate (an offer wsproto cannot take is declined), and build
    the 101 with the Accept's headers. A choice wsproto or h11 refuses is
    process_request's bug: logged at ERROR and refused with 500."""
    try:
        subprotocol = _choose_subprotocol(request, accept, policy.subprotocols)
        extra_headers = accept.headers.raw() if accept is not None else []
        compression = policy.options.compression
        deflate = (
            compression.extension(client=False, max_message_size=policy.options.max_message_size)
            if compression is not None
            else None
        )
        data = wsconn.send(
            AcceptConnection(
                subprotocol=subprotocol,
                extra_headers=extra_headers,
                extensions=[deflate] if deflate is not None else [],
            )
        )
    except (ValueError, ProtocolError, h11.LocalProtocolError):
        return _cannot_accept(request)
    assert wsconn.connection is not None
    return _Agreement(data, subprotocol, deflate, wsconn.connection)


def _cannot_accept(request: Request) -> Refusal:
    logger.exception("cannot accept the WebSocket upgrade for %s", request.target)
    return Refusal(
        Refused.REJECTED, error_response(500, "the server failed to accept the upgrade")
    )


def _negotiate_fast(
    fast: UpgradeHead, request: Request, accept: Accept | None, policy: HandshakePolicy
) -> _Agreement | Refusal:
    """Step 5 on the fast path (an Accept without extra headers): as
    ``_negotiate``, the 101 built by ``_wire.upgrade`` instead of wsproto."""
    try:
        subprotocol = _choose_subprotocol(request, accept, policy.subprotocols)
        compression = policy.options.compression
        deflate = None
        agreed = None
        if compression is not None and fast.extensions:
            max_size = policy.options.max_message_size
            deflate = compression.extension(client=False, max_message_size=max_size)
            agreed = agree_extensions(fast.extensions, [deflate])
        data = accept_response(fast.key, subprotocol, agreed)
    except ValueError:
        return _cannot_accept(request)
    extensions: list[Extension] = [deflate] if deflate is not None else []
    return _Agreement(data, subprotocol, deflate, Connection(ConnectionType.SERVER, extensions))


async def _open(
    stream: trio.abc.Stream,
    received: _Received,
    request: Request,
    agreed: _Agreement,
    options: Options,
    endpoint: WebSocketEndpoint | None,
) -> WebSocket:
    """Step 6, send the 101 and build the open WebSocket, whose first input
    is whatever the client sent after its request head (and which carries
    the route's handler and parameters, if a router matched one)."""
    await stream.send_all(agreed.data)
    protocol = Protocol(agreed.connection, options.max_message_size, agreed.deflate)
    routed: dict[str, Any] = {}
    if endpoint is not None:
        routed = {"path_params": endpoint.params, "endpoint": endpoint.handler}
    return WebSocket(
        stream,
        protocol,
        request=request,
        subprotocol=agreed.subprotocol,
        options=options,
        initial_data=received.trailing,
        **routed,
    )


async def _upgrade(
    stream: trio.abc.Stream, received: _Received, policy: HandshakePolicy
) -> WebSocket | Refusal:
    """Steps 2 to 6 on a request that was read: the open WebSocket, or the
    first step's refusal."""
    request = _request_of(received)
    endpoint = None
    if policy.routes is not None:
        routed = await route_request(request, policy)
        if isinstance(routed, Refusal):
            return routed
        policy, endpoint = routed
    refusal = _screen(request, policy)
    if refusal is not None:
        return refusal
    processed = await _process(request, policy.process_request)
    guard = endpoint.guard if endpoint is not None else None
    if guard is not None and request.is_upgrade and not isinstance(processed, Response):
        assert endpoint is not None
        guarded = await call_route_function("route guard", request, guard, endpoint.params)
        if guarded is not None:
            return Refusal(Refused.REJECTED, guarded)
    fast = received.fast
    decision = _decide(request, b"1.1" if fast else received.event.http_version, processed)
    if isinstance(decision, Refusal):
        return decision
    agreed: _Agreement | Refusal
    if fast is not None and (decision is None or not decision.headers):
        agreed = _negotiate_fast(fast, request, decision, policy)
    else:
        wsconn = _start_upgrade(received.event)
        if isinstance(wsconn, Refusal):
            return wsconn
        agreed = _negotiate(wsconn, request, decision, policy)
    if isinstance(agreed, Refusal):
        return agreed
    return await _open(stream, received, request, agreed, policy.options, endpoint)


async def accept_handshake(stream: trio.abc.Stream, policy: HandshakePolicy) -> WebSocket | str:
    """Read the request and answer it. Return the open WebSocket, or the
    reason it was not opened (a ServerStats.rejected key) once the answer is
    sent; the caller then closes the stream. Not bounded in time: the caller
    applies ``open_timeout``.

    Bad input from the client gets a 4xx answer and at most one log line,
    at DEBUG or INFO, never an exception: a request h11 cannot parse gets
    400 (431 when too large), an upgrade with a malformed Host, Connection,
    Sec-WebSocket-Protocol, -Extensions, -Key or -Version gets 400 (426 for
    an unsupported version). A permessage-deflate offer the server cannot
    accept is declined, and the connection opens uncompressed. ERROR is kept
    for bugs: process_request raising or returning garbage gets a 500.

    A HEAD request is answered as the same GET would be (process_request
    sees it with method "HEAD"), with the same status and headers,
    Content-Length included, and no body. A HEAD never upgrades: with
    upgrade headers it gets 405 with ``Allow: GET``, like any other method."""
    received = await _receive(stream)
    if isinstance(received, Refusal):
        return await _refuse(stream, received, None)
    opened = await _upgrade(stream, received, policy)
    if isinstance(opened, Refusal):
        return await _refuse(stream, opened, received)
    return opened


async def _refuse(stream: trio.abc.Stream, refusal: Refusal, received: _Received | None) -> str:
    """Send a refusal's answer; return its outcome as the plain string that
    ServerStats.rejected counts (the one place an outcome leaves). With no
    request read, the answer is serialised on its own; else on the request's
    h11 connection, without its body for a HEAD."""
    if refusal.response is not None:
        if received is None:
            await stream.send_all(response_bytes(refusal.response))
        else:
            await answer(stream, received.conn, refusal.response, head=received.head)
    return refusal.outcome.value
