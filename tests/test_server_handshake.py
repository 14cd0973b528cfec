"""The server's opening handshake against hostile and malformed requests:
every bad request gets a 4xx (or its compression offer declined) and at most
one log line below ERROR."""

from __future__ import annotations

import logging
import re
from typing import Any

import h11
import hypothesis.strategies as st
import pytest
import trio
import trio.testing
from conftest import start_server
from hypothesis import HealthCheck, given, settings
from server_helpers import http_exchange, response_head
from wsproto.utilities import generate_accept_token

import trio_ws
from trio_ws._endpoints.server_handshake import HandshakePolicy, accept_handshake
from trio_ws._options import Options
from trio_ws._wire.deflate import Deflate

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"


def upgrade(*lines: bytes, key: bytes | None = KEY, host: bytes = b"x") -> bytes:
    """An upgrade request with these extra header lines."""
    head = b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n" + UPGRADE
    if key is not None:
        head += b"Sec-WebSocket-Key: " + key + b"\r\n"
    return head + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


def status_of(answer: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert match, answer
    return int(match.group(1))


def check_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """What one bad request may log: at most one line, at INFO or DEBUG."""
    records = [r for r in caplog.records if r.name.startswith("trio_ws")]
    assert not [r for r in records if r.levelno >= logging.WARNING], caplog.text
    assert len(records) <= 1, caplog.text
    caplog.clear()


async def quiet_server(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, **kwargs: Any
) -> trio_ws.Server:
    """A server whose every log record, DEBUG included, reaches caplog."""
    caplog.set_level(logging.DEBUG, logger="trio_ws")
    server = await start_server(nursery, **kwargs)
    caplog.clear()  # "listening on port ..."
    return server


# -- HEAD ----------------------------------------------------------------------


def health_check(request: trio_ws.Request) -> trio_ws.Response | None:
    if request.path == "/healthz":
        return trio_ws.Response.text(200, "ok\n")
    return None


@pytest.mark.parametrize(("path", "status"), [("/healthz", 200), ("/", 426)])
async def test_head_gets_the_get_answer_without_its_body(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, path: str, status: int
) -> None:
    server = await quiet_server(nursery, caplog, process_request=health_check)
    request = f" {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    get = await http_exchange(server.port, b"GET" + request)
    head = await http_exchange(server.port, b"HEAD" + request)
    assert status_of(get) == status
    get_head, _, body = get.partition(b"\r\n\r\n")
    assert body
    assert f"Content-Length: {len(body)}\r\n".encode() in get_head
    assert head == get_head + b"\r\n\r\n"  # same status and headers, no body
    check_quiet(caplog)


async def test_head_with_upgrade_headers_is_no_upgrade(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    server = await quiet_server(nursery, caplog)
    answer = await http_exchange(server.port, b"HEAD" + upgrade()[3:])
    assert status_of(answer) == 405
    assert b"\r\nAllow: GET\r\n" in answer
    assert answer.endswith(b"\r\n\r\n")  # no body
    check_quiet(caplog)


# -- permessage-deflate offers -------------------------------------------------

SERVER_11 = b"permessage-deflate; server_no_context_takeover; server_max_window_bits=11"


@pytest.mark.parametrize(
    ("offer", "response"),
    [
        # A quoted value is the value it quotes (RFC 7692 5, RFC 7230 3.2.6).
        (
            'permessage-deflate; client_max_window_bits="10"',
            b"permessage-deflate; server_no_context_takeover; client_max_window_bits=10",
        ),
        ("permessage-deflate; client_max_window_bits=abc", None),
        ("permessage-deflate; server_max_window_bits=", None),
        ('permessage-deflate; server_max_window_bits="1\\1"', SERVER_11),  # a quoted-pair
        ('permessage-deflate; server_max_window_bits="x"', None),
        # The first acceptable offer wins; a malformed one before it is skipped.
        (
            "permessage-deflate; client_max_window_bits=abc, "
            "permessage-deflate; server_max_window_bits=10",
            b"permessage-deflate; server_no_context_takeover; server_max_window_bits=10",
        ),
    ],
    ids=["quoted", "not-a-number", "empty", "quoted-pair", "quoted-x", "second-offer"],
)
async def test_bad_deflate_offers_are_declined(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, offer: str, response: bytes | None
) -> None:
    server = await quiet_server(nursery, caplog)
    head = await response_head(server.port, upgrade(f"Sec-WebSocket-Extensions: {offer}".encode()))
    assert status_of(head) == 101
    extensions = re.search(rb"\r\nSec-WebSocket-Extensions: ([^\r]*)", head)
    assert (extensions and extensions.group(1)) == response
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("offer", "response"),
    [
        ("permessage-deflate", "server_no_context_takeover"),
        (
            'permessage-deflate; client_max_window_bits; server_max_window_bits="9"',
            "server_no_context_takeover; server_max_window_bits=9; client_max_window_bits=12",
        ),
        (
            "permessage-deflate; client_no_context_takeover; client_max_window_bits = 15",
            "server_no_context_takeover; client_no_context_takeover; client_max_window_bits=12",
        ),
        ("permessage-deflate; client_max_window_bits=8", None),  # zlib cannot
        ("permessage-deflate; server_max_window_bits", None),  # needs a value
        ("permessage-deflate; server_max_window_bits=010", None),  # leading zero
        ("permessage-deflate; server_max_window_bits=16", None),
        ("permessage-deflate; server_no_context_takeover=1", None),  # a flag with a value
        ("permessage-deflate; client_max_window_bits; client_max_window_bits", None),
        ("permessage-deflate; x_unknown", None),
        ("permessage-deflate;", None),
        ('permessage-deflate; client_max_window_bits="10', None),
        ("permessage-deflate; client_max_window_bits=1 0", None),
        ("permessage-deflate; client_max_window_bitsx=10", None),
    ],
)
def test_deflate_accept(offer: str, response: str | None) -> None:
    extension = Deflate().extension(client=False, max_message_size=None)
    before = repr(extension)
    assert extension.accept(offer) == response
    assert extension.enabled() == (response is not None)
    if response is None:
        assert repr(extension) == before  # a declined offer changes nothing


def test_deflate_accept_takes_only_the_first_acceptable_offer() -> None:
    extension = Deflate().extension(client=False, max_message_size=None)
    assert extension.accept("permessage-deflate; client_max_window_bits=10") is not None
    assert extension.accept("permessage-deflate; client_no_context_takeover") is None
    assert extension.client_max_window_bits == 10
    assert not extension.client_no_context_takeover


# -- header fields wsproto cannot decode -------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        upgrade(b"Sec-WebSocket-Protocol: chat, \xe9t\xe9"),
        upgrade(b"Sec-WebSocket-Extensions: permessage-deflate; x=\xff"),
        upgrade(host=b"xn--zz"),  # not valid IDNA (punycode)
        upgrade(host=b"\xc3\xa9.example"),
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade, \xe9\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + KEY + b"\r\n\r\n",
    ],
    ids=["protocol", "extensions", "host-idna", "host-utf8", "connection"],
)
async def test_undecodable_headers_get_400(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    server = await quiet_server(nursery, caplog)
    assert status_of(await http_exchange(server.port, request_bytes)) == 400
    check_quiet(caplog)


# -- Sec-WebSocket-Key ---------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        b"",
        b"not base64 at all!",
        b"YWJj",  # 3 bytes
        b"AAAAAAAAAAAAAAAAAAAAAAAA",  # 18 bytes
        b"AAAAAAAAAAAAAAAAAAAAAA",  # 16 bytes without padding
        b"AAAAAAAAAAAA\xe9AAAAAAAAA==",
    ],
)
async def test_malformed_keys_get_400(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, key: bytes
) -> None:
    server = await quiet_server(nursery, caplog)
    answer = await http_exchange(server.port, upgrade(b"Sec-WebSocket-Key: " + key, key=None))
    assert status_of(answer) == 400
    assert b"Sec-WebSocket-Key" in answer
    check_quiet(caplog)


# -- other odd requests ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (upgrade(b"Sec-WebSocket-Key: " + KEY), 400),  # two keys
        (upgrade(b"Sec-WebSocket-Version: 13"), 400),  # two versions
        (upgrade().replace(b"Version: 13", b"Version: 13, 13"), 426),
        (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),  # h11: 501
        (b"GET /\xe9 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        (upgrade(b"X-Long: " + b"a" * 17000), 431),
    ],
    ids=["two-keys", "two-versions", "version-list", "gzip", "target", "two-hosts", "long"],
)
async def test_other_odd_requests_get_4xx(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, request_bytes: bytes, status: int
) -> None:
    server = await quiet_server(nursery, caplog)
    assert status_of(await http_exchange(server.port, request_bytes)) == status
    check_quiet(caplog)


async def test_odd_bytes_in_other_headers_are_fine(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str | None] = []

    def process_request(request: trio_ws.Request) -> None:
        seen.append(request.headers.get("User-Agent"))

    server = await quiet_server(nursery, caplog, process_request=process_request)
    odd = b"User-Agent: caf\xc3\xa9 \x01\x7f\xff"
    assert status_of(await response_head(server.port, upgrade(odd))) == 101
    assert seen == ["caf\xc3\xa9 \x01\x7f\xff"]  # latin-1, as every header


# -- fuzzing accept_handshake --------------------------------------------------------


def _bytes_of(text: str) -> bytes:
    return text.encode("utf-8")


#: Odd bytes h11 lets through in a header value: non-ASCII (UTF-8 or not),
#: control characters, separators.
ODD = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=12).map(
        _bytes_of
    ),
    st.sampled_from([b"", b" ", b"\xff", b"\x80\x01", b'"', b"\\", b",", b";", b"=", b"\x7f"]),
)
#: And any bytes at all, mostly refused by h11.
NASTY = st.one_of(st.binary(max_size=24), ODD)
PARAMETER = st.tuples(
    st.sampled_from(
        [
            b"client_max_window_bits",
            b"server_max_window_bits",
            b"client_no_context_takeover",
            b"server_no_context_takeover",
            b"x",
        ]
    ),
    st.one_of(
        st.none(),
        st.sampled_from([b"8", b"9", b"10", b"15", b"16", b"010", b"", b'"10"', b'"1\\0"', b'"']),
        ODD,
    ),
).map(lambda p: p[0] if p[1] is None else p[0] + b"=" + p[1])
OFFER = st.lists(PARAMETER, max_size=3).map(lambda ps: b"; ".join([b"permessage-deflate", *ps]))
EXTENSIONS = st.lists(OFFER, min_size=1, max_size=3).map(b", ".join)
VALID = [
    (b"Host", b"127.0.0.1:8000"),
    (b"Upgrade", b"websocket"),
    (b"Connection", b"keep-alive, Upgrade"),
    (b"Sec-WebSocket-Key", KEY),
    (b"Sec-WebSocket-Version", b"13"),
    (b"Sec-WebSocket-Protocol", b"chat, other"),
    (b"Origin", b"http://example.com"),
]
NAME = st.one_of(
    st.sampled_from([name for name, _ in VALID] + [b"Sec-WebSocket-Extensions"]),
    st.from_regex(rb"\A[A-Za-z-]{1,12}\Z"),
    NASTY,
)
VALUE = st.one_of(NASTY, EXTENSIONS, st.sampled_from([value for _, value in VALID]))
MUTATION = st.one_of(
    st.tuples(st.just("drop"), st.integers(0, 20)),
    st.tuples(st.just("set"), st.integers(0, 20), VALUE),
    st.tuples(st.just("add"), NAME, VALUE),
    st.tuples(st.just("duplicate"), st.integers(0, 20)),
)


def mostly(usual: bytes, *others: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """``usual`` three times in four, else one of ``others``."""
    return st.one_of(st.just(usual), st.just(usual), st.just(usual), st.one_of(*others))


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """Requests built from the pieces of a valid upgrade, mutated."""
    headers = [*VALID, (b"Sec-WebSocket-Extensions", draw(EXTENSIONS))]
    for mutation in draw(st.lists(MUTATION, max_size=5)):
        index = mutation[1] % len(headers) if isinstance(mutation[1], int) and headers else 0
        if mutation[0] == "add":
            headers.append((mutation[1], mutation[2]))
        elif headers and mutation[0] == "drop":
            del headers[index]
        elif headers and mutation[0] == "set":
            headers[index] = (headers[index][0], mutation[2])
        elif headers:
            headers.append(headers[index])
    method = draw(mostly(b"GET", st.sampled_from([b"HEAD", b"POST"]), NASTY))
    target = draw(mostly(b"/chat?room=1", st.sampled_from([b"/", b"*"]), NASTY))
    version = draw(mostly(b"HTTP/1.1", st.sampled_from([b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 x"])))
    lines = [b" ".join([method, target, version])]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def _handshake(request: bytes) -> tuple[trio_ws.WebSocket | str, bytes]:
    """Feed ``request`` to accept_handshake over a memory stream; its result
    and everything it answered."""
    policy = HandshakePolicy(
        process_request=health_check,
        subprotocols=("chat",),
        origins=None,
        reserve_slot=lambda: True,
        options=Options(compression=Deflate()),
    )
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(request)
    await client.send_eof()
    with trio.fail_after(5):
        result = await accept_handshake(server, policy)
    await server.aclose()
    answer = b""
    while data := await client.receive_some():
        answer += data
    return result, answer


#: A permessage-deflate answer as the server writes them.
AGREED = re.compile(
    rb"permessage-deflate(; (server|client)_(no_context_takeover|max_window_bits=\d+))*"
)


def _check_answer(request: bytes, result: trio_ws.WebSocket | str, answer: bytes) -> None:
    """A 101 with the right Sec-WebSocket-Accept (and a well-formed
    permessage-deflate answer, if any), or a whole 4xx response."""
    head, blank, body = answer.partition(b"\r\n\r\n")
    assert blank, answer
    status_line, *fields = head.split(b"\r\n")
    headers = {name.lower(): value for name, _, value in (f.partition(b": ") for f in fields)}
    status = status_of(status_line + b"\r\n")
    if status == 101:
        assert isinstance(result, trio_ws.WebSocket)
        assert body == b""
        parsed = h11.Connection(h11.SERVER)
        parsed.receive_data(request)
        event = parsed.next_event()
        assert isinstance(event, h11.Request)
        key = dict(event.headers)[b"sec-websocket-key"]
        assert headers[b"sec-websocket-accept"] == generate_accept_token(key)
        agreed = headers.get(b"sec-websocket-extensions")
        assert agreed is None or AGREED.fullmatch(agreed), agreed
        return
    assert isinstance(result, str)
    assert 400 <= status < 500, answer
    length = int(headers[b"content-length"])
    assert len(body) == length or (request.startswith(b"HEAD ") and body == b"")


@pytest.mark.slow
@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(requests())
def test_fuzz_accept_handshake(request: bytes) -> None:
    records = _Records()
    logger = logging.getLogger("trio_ws")
    logger.addHandler(records)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        result, answer = trio.run(_handshake, request)
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    _check_answer(request, result, answer)
    assert not [r for r in records.records if r.levelno >= logging.WARNING], records.records
    assert len(records.records) <= 1, records.records
