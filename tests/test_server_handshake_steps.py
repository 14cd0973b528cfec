"""The server handshake's steps on their own: screening against a policy,
process_request's outcome, validation, negotiation, and how each refusal is
counted and answered. No sockets: pure steps get plain values, the reading
and answering steps get memory streams."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence

import h11
import pytest
import trio
import trio.testing
from wsproto import WSConnection

import trio_ws
from trio_ws._app.metrics import REJECT_REASONS
from trio_ws._endpoints.server_handshake import (
    MAX_REQUEST_HEAD,
    RETRY_AFTER,
    HandshakePolicy,
    OriginRule,
    Refusal,
    Refused,
    _Agreement,
    _decide,
    _negotiate,
    _receive,
    _Received,
    _refuse,
    _screen,
    _start_upgrade,
    accept_handshake,
)
from trio_ws._options import Options
from trio_ws._wire.deflate import Deflate

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE_FIELDS = [
    ("Host", "x"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", KEY),
    ("Sec-WebSocket-Version", "13"),
]


def request(method: str = "GET", *, upgrade: bool = True, **fields: str) -> trio_ws.Request:
    """A Request as _request_of builds it; ``fields`` add header fields
    (underscores in names become dashes)."""
    headers = list(UPGRADE_FIELDS) if upgrade else [("Host", "x")]
    headers += [(name.replace("_", "-"), value) for name, value in fields.items()]
    return trio_ws.Request.from_target(method, "/chat", headers)


def h11_request(
    *extra: tuple[str, str], fields: Sequence[tuple[str, str]] = UPGRADE_FIELDS
) -> h11.Request:
    """An upgrade request as h11 parses it."""
    conn = h11.Connection(h11.SERVER)
    head = "GET /chat HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in [*fields, *extra])
    conn.receive_data((head + "\r\n").encode())
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    return event


class Slots:
    """A reserve_slot that counts its calls."""

    def __init__(self, free: bool) -> None:
        self.free = free
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.free


def policy(
    *,
    origins: Sequence[OriginRule] | None = None,
    free: bool = True,
    subprotocols: Sequence[str] = (),
    compression: Deflate | None = None,
) -> HandshakePolicy:
    return HandshakePolicy(
        process_request=None,
        subprotocols=subprotocols,
        origins=origins,
        reserve_slot=Slots(free),
        options=Options(compression=compression),
    )


def status(refusal: Refusal | object) -> int:
    assert isinstance(refusal, Refusal)
    assert refusal.response is not None
    return refusal.response.status_code


# -- the outcome enum ------------------------------------------------------------------


def test_outcomes_are_the_documented_rejected_keys() -> None:
    assert {r.value for r in Refused} == set(REJECT_REASONS)
    for outcome in Refused:
        assert outcome == outcome.value
        assert hash(outcome) == hash(outcome.value)
        assert isinstance(outcome, str)


def test_outcomes_count_together_with_plain_strings() -> None:
    counter: Counter[str] = Counter()
    counter[Refused.ORIGIN] += 1
    counter["origin"] += 1
    assert counter == {"origin": 2}


@pytest.mark.parametrize("outcome", list(Refused))
async def test_refuse_returns_a_plain_string(outcome: Refused) -> None:
    """What leaves accept_handshake is a str, so that ServerStats.rejected
    prints {'origin': 1}, not the enum's repr."""
    _client, server = trio.testing.memory_stream_pair()
    reason = await _refuse(server, Refusal(outcome, None), None)
    assert type(reason) is str
    assert reason == outcome.value
    assert repr({reason: 1}) == f"{{'{outcome.value}': 1}}"


# -- screening: origin, then capacity --------------------------------------------------

ALLOWED = ["https://app.example.com", re.compile(r"https://.*\.example\.com"), None]

SCREEN_CASES = [
    # (request, origins, slot free) -> (outcome or None, status, reserve_slot calls)
    (request(), None, True, None, None, 1),
    (request(), None, False, Refused.CAPACITY, 503, 1),
    (request(Origin="https://evil.example.net"), None, True, None, None, 1),
    (request(Origin="https://app.example.com"), ALLOWED, True, None, None, 1),
    (request(Origin="https://a.b.example.com"), ALLOWED, True, None, None, 1),
    (request(), ALLOWED, True, None, None, 1),
    (request(), ["https://app.example.com"], True, Refused.ORIGIN, 403, 0),
    (request(Origin="https://evil.example.net"), ALLOWED, True, Refused.ORIGIN, 403, 0),
    (request(Origin="https://evil.example.net"), ALLOWED, False, Refused.ORIGIN, 403, 0),
    (request(Origin="https://app.example.com"), ALLOWED, False, Refused.CAPACITY, 503, 1),
    # Plain HTTP is never screened, and takes no slot.
    (request(upgrade=False), [], False, None, None, 0),
    (request("POST", upgrade=False), None, False, None, None, 0),
]


@pytest.mark.parametrize(("req", "origins", "free", "outcome", "code", "calls"), SCREEN_CASES)
def test_screen(
    req: trio_ws.Request,
    origins: Sequence[OriginRule] | None,
    free: bool,
    outcome: Refused | None,
    code: int | None,
    calls: int,
) -> None:
    the_policy = policy(origins=origins, free=free)
    result = _screen(req, the_policy)
    if outcome is None:
        assert result is None
    else:
        assert isinstance(result, Refusal)
        assert result.outcome is outcome
        assert status(result) == code
    slots = the_policy.reserve_slot
    assert isinstance(slots, Slots)
    assert slots.calls == calls


def test_screen_capacity_answer_says_when_to_retry() -> None:
    result = _screen(request(), policy(free=False))
    assert isinstance(result, Refusal)
    assert result.response is not None
    assert result.response.headers.get("Retry-After") == str(RETRY_AFTER)


def test_screen_logs_a_refused_origin_at_info(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="trio_ws"):
        _screen(request(Origin="https://evil.example.net"), policy(origins=[None]))
    assert [r.levelno for r in caplog.records] == [logging.INFO]


# -- process_request's outcome -----------------------------------------------------------

ANSWER = trio_ws.Response(204)
ACCEPT = trio_ws.Accept(subprotocol="chat")

DECIDE_CASES = [
    # (request, HTTP version, process_request's result) -> (outcome or None, status)
    (request(), b"1.1", None, None, None),
    (request(), b"1.1", ACCEPT, None, None),
    (request(), b"1.1", ANSWER, Refused.REJECTED, 204),
    (request(upgrade=False), b"1.1", ANSWER, Refused.HTTP, 204),
    (request("HEAD", upgrade=False), b"1.1", ANSWER, Refused.HTTP, 204),
    (request(upgrade=False), b"1.1", None, Refused.HTTP, 426),
    (request(upgrade=False), b"1.1", ACCEPT, Refused.HTTP, 426),
    (request("POST", upgrade=False), b"1.0", None, Refused.HTTP, 426),
    (request("POST"), b"1.1", None, Refused.BAD_REQUEST, 405),
    (request("HEAD"), b"1.1", ACCEPT, Refused.BAD_REQUEST, 405),
    (request("HEAD"), b"1.1", ANSWER, Refused.REJECTED, 204),
    (request(), b"1.0", None, Refused.BAD_REQUEST, 400),
    (request("POST"), b"1.0", None, Refused.BAD_REQUEST, 405),
]


@pytest.mark.parametrize(("req", "version", "decision", "outcome", "code"), DECIDE_CASES)
def test_decide(
    req: trio_ws.Request,
    version: bytes,
    decision: trio_ws.Response | trio_ws.Accept | None,
    outcome: Refused | None,
    code: int | None,
) -> None:
    result = _decide(req, version, decision)
    if outcome is None:
        assert result is decision
    else:
        assert isinstance(result, Refusal)
        assert result.outcome is outcome
        assert status(result) == code
        if decision is ANSWER:
            assert result.response is ANSWER


def test_decide_answers_plain_http_with_an_upgrade_hint() -> None:
    result = _decide(request(upgrade=False), b"1.1", None)
    assert isinstance(result, Refusal)
    assert result.response is not None
    assert result.response.headers.get("Upgrade") == "websocket"
    wrong = _decide(request("PUT"), b"1.1", None)
    assert isinstance(wrong, Refusal)
    assert wrong.response is not None
    assert wrong.response.headers.get("Allow") == "GET"


# -- validating the upgrade ------------------------------------------------------------

START_CASES = [
    # (extra header fields, the fields it replaces) -> status
    ([("Sec-WebSocket-Key", "short")], {"Sec-WebSocket-Key"}, 400),
    ([("Sec-WebSocket-Key", KEY)], set(), 400),  # sent twice
    ([("Sec-WebSocket-Version", "8")], {"Sec-WebSocket-Version"}, 426),
    ([], {"Sec-WebSocket-Key"}, 400),
]


@pytest.mark.parametrize(("extra", "replaced", "code"), START_CASES)
def test_start_upgrade_refuses_malformed_requests(
    extra: list[tuple[str, str]], replaced: set[str], code: int
) -> None:
    fields = [(n, v) for n, v in UPGRADE_FIELDS if n not in replaced]
    result = _start_upgrade(h11_request(*extra, fields=fields))
    assert isinstance(result, Refusal)
    assert result.outcome is Refused.BAD_REQUEST
    assert status(result) == code


def test_start_upgrade_accepts_a_valid_request() -> None:
    assert isinstance(_start_upgrade(h11_request()), WSConnection)


# -- negotiation -----------------------------------------------------------------------


def negotiate(
    accept: trio_ws.Accept | None,
    *extra: tuple[str, str],
    subprotocols: Sequence[str] = (),
    compression: Deflate | None = None,
) -> _Agreement | Refusal:
    event = h11_request(*extra)
    wsconn = _start_upgrade(event)
    assert isinstance(wsconn, WSConnection)
    req = trio_ws.Request.from_target(
        "GET", "/chat", [(n.decode(), v.decode()) for n, v in event.headers.raw_items()]
    )
    return _negotiate(
        wsconn, req, accept, policy(subprotocols=subprotocols, compression=compression)
    )


OFFER = ("Sec-WebSocket-Protocol", "chat, json")

NEGOTIATE_CASES = [
    # (Accept, server's subprotocols, offer) -> chosen subprotocol
    (None, (), OFFER, None),
    (None, ("json", "chat"), OFFER, "json"),
    (None, ("xml",), OFFER, None),
    (trio_ws.Accept(), ("chat",), OFFER, "chat"),
    (trio_ws.Accept(subprotocol="json"), ("chat",), OFFER, "json"),
    (None, ("chat",), ("X-Other", "1"), None),
]


@pytest.mark.parametrize(("accept", "subprotocols", "offer", "chosen"), NEGOTIATE_CASES)
def test_negotiate_subprotocol(
    accept: trio_ws.Accept | None,
    subprotocols: Sequence[str],
    offer: tuple[str, str],
    chosen: str | None,
) -> None:
    agreed = negotiate(accept, offer, subprotocols=subprotocols)
    assert not isinstance(agreed, Refusal)
    assert agreed.subprotocol == chosen
    assert agreed.data.startswith(b"HTTP/1.1 101 ")
    line = f"\r\nsec-websocket-protocol: {chosen}\r\n".encode()
    assert (line in agreed.data.lower()) == (chosen is not None)


def test_negotiate_sends_the_accepts_headers() -> None:
    agreed = negotiate(trio_ws.Accept(headers=[("Set-Cookie", "a=1")]))
    assert not isinstance(agreed, Refusal)
    assert b"\r\nSet-Cookie: a=1\r\n" in agreed.data


@pytest.mark.parametrize(
    ("compression", "offer", "agreed_deflate"),
    [
        (Deflate(), ("Sec-WebSocket-Extensions", "permessage-deflate"), True),
        (None, ("Sec-WebSocket-Extensions", "permessage-deflate"), False),
        (Deflate(), ("X-Other", "1"), False),
    ],
)
def test_negotiate_deflate(
    compression: Deflate | None, offer: tuple[str, str], agreed_deflate: bool
) -> None:
    agreed = negotiate(None, offer, compression=compression)
    assert not isinstance(agreed, Refusal)
    assert (b"permessage-deflate" in agreed.data) == agreed_deflate
    # The extension object is kept when compression is on, agreed or not:
    # wsproto tells the Protocol whether it was.
    assert (agreed.deflate is not None) == (compression is not None)


@pytest.mark.parametrize(
    "accept",
    [
        trio_ws.Accept(subprotocol="xml"),  # not offered
        trio_ws.Accept(headers=[("Bad Name", "x")]),  # h11 refuses the 101
    ],
)
def test_negotiate_refuses_a_bad_accept_with_500(
    accept: trio_ws.Accept, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="trio_ws"):
        result = negotiate(accept, OFFER)
    assert isinstance(result, Refusal)
    assert result.outcome is Refused.REJECTED
    assert status(result) == 500
    assert [r.levelno for r in caplog.records] == [logging.ERROR]


# -- reading the request, answering a refusal ----------------------------------------------


async def receive(data: bytes) -> _Received | Refusal:
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(data)
    await client.send_eof()
    with trio.fail_after(5):
        return await _receive(server)


RECEIVE_CASES = [
    (b"", Refused.HANDSHAKE_FAILED, None),
    (b"GET / HTTP/1.1\r\n", Refused.HANDSHAKE_FAILED, None),  # left mid-request
    (b"NOT HTTP\r\n\r\n", Refused.BAD_REQUEST, 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * MAX_REQUEST_HEAD + b"\r\n\r\n", None, 431),
]


@pytest.mark.parametrize(("data", "outcome", "code"), RECEIVE_CASES)
async def test_receive_refusals(data: bytes, outcome: Refused | None, code: int | None) -> None:
    result = await receive(data)
    assert isinstance(result, Refusal)
    assert result.outcome is (outcome or Refused.BAD_REQUEST)
    if code is None:
        assert result.response is None
    else:
        assert status(result) == code


async def test_receive_keeps_what_came_after_the_head() -> None:
    result = await receive(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n\x81\x80")
    assert isinstance(result, _Received)
    assert result.trailing == b"\x81\x80"
    assert result.head


async def refuse_after(data: bytes, refusal: Refusal) -> tuple[str, bytes]:
    received = await receive(data)
    assert isinstance(received, _Received)
    client, server = trio.testing.memory_stream_pair()
    reason = await _refuse(server, refusal, received)
    await server.aclose()
    answer = b""
    while chunk := await client.receive_some():
        answer += chunk
    return reason, answer


async def test_refuse_answers_a_head_without_its_body() -> None:
    refusal = Refusal(Refused.HTTP, trio_ws.Response(200, [], b"hello"))
    _, get = await refuse_after(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", refusal)
    reason, head = await refuse_after(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", refusal)
    assert reason == "http"
    assert get.endswith(b"\r\n\r\nhello")
    assert head == get[: -len(b"hello")]
    assert b"Content-Length: 5\r\n" in head


async def test_refuse_turns_an_invalid_response_into_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refusal = Refusal(Refused.REJECTED, trio_ws.Response(200, [("Bad Name", "x")]))
    with caplog.at_level(logging.DEBUG, logger="trio_ws"):
        reason, answer = await refuse_after(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", refusal)
    assert reason == "rejected"
    assert answer.startswith(b"HTTP/1.1 500 ")
    assert [r.levelno for r in caplog.records] == [logging.ERROR]


# -- the whole sequence: outcome of each path ----------------------------------------------

UPGRADE = ("GET /chat HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in UPGRADE_FIELDS)).encode()

SEQUENCE_CASES = [
    # (request bytes, origins, slot free) -> outcome (or None: opened), status line
    (b"", None, True, "handshake_failed", None),
    (b"BAD\r\n\r\n", None, True, "bad_request", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", None, True, "http", 426),
    (UPGRADE + b"Origin: https://evil\r\n\r\n", [None], True, "origin", 403),
    (UPGRADE + b"\r\n", None, False, "capacity", 503),
    (UPGRADE.replace(b"GET", b"HEAD") + b"\r\n", None, True, "bad_request", 405),
    (UPGRADE + b"Sec-WebSocket-Version: 13\r\n\r\n", None, True, "bad_request", 400),
    (UPGRADE + b"\r\n", None, True, None, 101),
]


@pytest.mark.parametrize(("data", "origins", "free", "outcome", "code"), SEQUENCE_CASES)
async def test_accept_handshake_outcomes(
    data: bytes,
    origins: Sequence[OriginRule] | None,
    free: bool,
    outcome: str | None,
    code: int | None,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(data)
    if outcome is not None:
        await client.send_eof()
    with trio.fail_after(5):
        result = await accept_handshake(server, policy(origins=origins, free=free))
    answer = await client.receive_some() if code is not None else b""
    if outcome is None:
        assert isinstance(result, trio_ws.WebSocket)
        await trio.aclose_forcefully(server)
    else:
        assert type(result) is str
        assert result == outcome
    if code is not None:
        assert answer.startswith(f"HTTP/1.1 {code} ".encode()), answer
