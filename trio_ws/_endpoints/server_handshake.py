"""The server's side of the opening handshake.

A plain, valid upgrade (nearly all of them) takes the fast path: read by
``_wire.upgrade`` and answered there, without h11 or wsproto's handshake.
Every other request takes the general path: h11 parses it, so that a plain
HTTP request (a health check, a page) can be answered on the same port, and
wsproto validates the upgrade and produces the 101 response. Refusals are
always answered through h11.
"""

from __future__ import annotations

import enum
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus

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

#: ``process_request``: look at a request, then return None (default
#: handling), a :class:`Response` (answer it and close), or an
#: :class:`Accept` (accept the upgrade with these choices). May be async.
ProcessRequest = Callable[
    [Request], Response | Accept | Awaitable[Response | Accept | None] | None
]


class _ClientLeft(Exception):
    """The client closed the connection before sending a request."""


class Refused(str, enum.Enum):
    """Why a request was not upgraded: its key in ``ServerStats.rejected``.
    A str enum, so that each member equals (and hashes as) its plain string."""

    #: An HTTP or upgrade request the server cannot take: a 4xx answer.
    BAD_REQUEST = "bad_request"
    #: An Origin that ``origins`` does not allow: 403.
    ORIGIN = "origin"
    #: No connection slot left (``max_connections``): 503 with Retry-After.
    CAPACITY = "capacity"
    #: An upgrade answered by process_request's Response, or whose Accept
    #: the server could not send (500).
    REJECTED = "rejected"
    #: A plain HTTP request, answered (by process_request, or with 426).
    HTTP = "http"
    #: The client left before sending a request: nothing is answered.
    HANDSHAKE_FAILED = "handshake_failed"


@attrs.frozen
class Refusal:
    """A step's refusal: the outcome, and the answer to send (None: none)."""

    outcome: Refused
    response: Response | None


def response_bytes(response: Response) -> bytes:
    """Serialise a complete HTTP/1.1 response that ends the connection."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.next_event()
    return _send_response(conn, response)


def _send_response(conn: h11.Connection, response: Response, *, head: bool = False) -> bytes:
    """Serialise ``response`` on ``conn``, closing the connection. With
    ``head`` (the request was HEAD) the body is left out, while
    Content-Length stays that of the body, as for the same GET."""
    headers = [
        (name, value)
        for name, value in response.headers
        if name.lower() not in ("content-length", "connection", "transfer-encoding")
    ]
    headers.append(("Content-Length", str(len(response.body))))
    headers.append(("Connection", "close"))
    try:
        reason = HTTPStatus(response.status_code).phrase
    except ValueError:
        reason = ""
    data = conn.send(
        h11.Response(status_code=response.status_code, headers=headers, reason=reason)
    )
    data = data or b""
    if not head:
        data += conn.send(h11.Data(data=response.body)) or b""
    return data + (conn.send(h11.EndOfMessage()) or b"")


def _error(status: int, detail: str, headers: Sequence[tuple[str, str]] = ()) -> Response:
    phrase = HTTPStatus(status).phrase
    return Response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), *headers],
        f"{status} {phrase}: {detail}\n",
    )


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


def _client_error_status(hint: int) -> int:
    """The status for a request h11 could not parse: h11's hint when it is a
    4xx, else 400. (h11 hints 501 for an unsupported Transfer-Encoding; the
    client's mistake gets a 4xx, so that nobody retries it as a server fault.)"""
    return hint if 400 <= hint < 500 else 400


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
        return Refusal(Refused.BAD_REQUEST, _error(400, problem))
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
        return Refusal(Refused.BAD_REQUEST, _error(status, str(exc), extra))
    except (ValueError, h11.ProtocolError) as exc:  # pragma: no cover - defence in depth
        # Input the checks above missed (none known): the client's fault still.
        logger.debug("bad upgrade request: %r", exc)
        return Refusal(Refused.BAD_REQUEST, _error(400, "malformed upgrade request"))
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


#: Seconds a client is told to wait (Retry-After) when the server is full.
RETRY_AFTER = 5

#: An entry of ``origins``: an exact Origin, a pattern it must fully match,
#: or None to allow requests without an Origin header (non-browser clients).
OriginRule = str | re.Pattern[str] | None


def origin_allowed(origin: str | None, origins: Sequence[OriginRule]) -> bool:
    """Whether a request with this Origin header may upgrade."""
    for rule in origins:
        if rule is None:
            if origin is None:
                return True
        elif origin is not None and (
            rule == origin if isinstance(rule, str) else rule.fullmatch(origin)
        ):
            return True
    return False


@attrs.frozen
class HandshakePolicy:
    """What a server accepts: its settings for the opening handshake."""

    process_request: ProcessRequest | None
    subprotocols: Sequence[str]
    #: None: any Origin. Else the Origins allowed to upgrade (see OriginRule).
    origins: Sequence[OriginRule] | None
    #: Called for each upgrade, before process_request, in the task running
    #: accept_handshake: reserves a connection slot for this handshake and
    #: returns True, or returns False when the server may take no more.
    reserve_slot: Callable[[], bool]
    options: Options


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
        status = _client_error_status(exc.error_status_hint)
        return Refusal(Refused.BAD_REQUEST, _error(status, str(exc)))
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
        return Refusal(Refused.ORIGIN, _error(403, "this Origin is not allowed"))
    if not policy.reserve_slot():
        retry = [("Retry-After", str(RETRY_AFTER))]
        return Refusal(Refused.CAPACITY, _error(503, "the server is full; try again later", retry))
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
        return _error(500, "the server failed to process the request")
    if result is not None and not isinstance(result, (Response, Accept)):
        logger.error("process_request returned %r; expected a Response, an Accept or None", result)
        return _error(500, "the server failed to process the request")
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
        return Refusal(Refused.HTTP, _error(426, "this is a WebSocket endpoint", upgrade))
    if request.method != "GET":
        allow = [("Allow", "GET")]
        return Refusal(Refused.BAD_REQUEST, _error(405, "a WebSocket upgrade must use GET", allow))
    if http_version != b"1.1":
        return Refusal(Refused.BAD_REQUEST, _error(400, "a WebSocket upgrade needs HTTP/1.1"))
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
    return Refusal(Refused.REJECTED, _error(500, "the server failed to accept the upgrade"))


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
) -> WebSocket:
    """Step 6, send the 101 and build the open WebSocket, whose first input
    is whatever the client sent after its request head."""
    await stream.send_all(agreed.data)
    protocol = Protocol(agreed.connection, options.max_message_size, agreed.deflate)
    return WebSocket(
        stream,
        protocol,
        request=request,
        subprotocol=agreed.subprotocol,
        options=options,
        initial_data=received.trailing,
    )


async def _upgrade(
    stream: trio.abc.Stream, received: _Received, policy: HandshakePolicy
) -> WebSocket | Refusal:
    """Steps 2 to 6 on a request that was read: the open WebSocket, or the
    first step's refusal."""
    request = _request_of(received)
    refusal = _screen(request, policy)
    if refusal is not None:
        return refusal
    processed = await _process(request, policy.process_request)
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
    return await _open(stream, received, request, agreed, policy.options)


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
            await _answer(stream, received.conn, refusal.response, head=received.head)
    return refusal.outcome.value


async def _answer(
    stream: trio.abc.Stream, h11conn: h11.Connection, response: Response, *, head: bool = False
) -> None:
    """Send ``response`` (without its body when ``head``); one that h11
    refuses, which process_request built, becomes a 500."""
    try:
        data = _send_response(h11conn, response, head=head)
    except h11.LocalProtocolError:
        logger.exception("process_request returned an invalid response")
        data = response_bytes(_error(500, "the server built an invalid response"))
    await stream.send_all(data)
