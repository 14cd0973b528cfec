"""Property-based fuzzing of the incoming frame reader (Protocol.receive_data
and Protocol.resume), server side, sans I/O.

Streams of client frames, mostly valid (text with multi-byte UTF-8, binary,
fragmented messages with empty continuations and pings between fragments,
sizes around the 125/126 and 65535/65536 length encodings) mixed with hostile
ones (bad opcodes, RSV bits, unmasked frames, long or fragmented control
frames, orphan continuations, invalid UTF-8 also split across fragments,
non-minimal lengths, huge announced lengths, bad close frames) and byte
noise, are fed in random chunkings with random room/slot budgets. What comes
out is compared with an independent model of RFC 6455 plus the documented
size rule, with a plain wsproto connection, and with itself fed in one piece.
"""

from __future__ import annotations

import codecs
import itertools
import math
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rawpeer import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, close_payload, frame
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from trio_ws._wire.events import CloseReceived, Failure, PingReceived, PongReceived
from trio_ws._wire.protocol import FRAME_MIN_CHARGE, FREE_FRAMES, Protocol

# Deterministic and without an example database: the same examples on every
# run, so CI is never flaky; the whole file runs in a few seconds. No explain
# phase: it traces every line and takes minutes over a failing example.
FUZZ = settings(
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

LIMITS = [0, 1, 64, 125, 126, 1000, 65535, 65536]

KEYS = [b"\x00\x00\x00\x00", b"\x12\x34\x56\x78", b"\xff\xff\xff\xff"]


# -- frames ------------------------------------------------------------------


@attrs.frozen
class Frame:
    """One frame as a client sends it, broken or not."""

    opcode: int
    payload: bytes = b""  # unmasked; only the start of it when ``announced`` is longer
    fin: bool = True
    rsv: int = 0
    masked: bool = True
    width: int | None = None  # 7, 16 or 64 length bits; None: the minimal encoding
    announced: int | None = None  # the length in the header, when not len(payload)
    key: bytes = KEYS[1]

    @property
    def length(self) -> int:
        return len(self.payload) if self.announced is None else self.announced


@attrs.frozen
class Noise:
    data: bytes


Part = Frame | Noise


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def _natural_width(length: int) -> int:
    return 7 if length < 126 else 16 if length < 65536 else 64


def encode(parts: Iterable[Part]) -> bytes:
    out = []
    for part in parts:
        if isinstance(part, Noise):
            out.append(part.data)
            continue
        f = part
        length = f.length
        width = f.width or _natural_width(length)
        first = (0x80 if f.fin else 0) | (f.rsv << 4) | f.opcode
        bit = 0x80 if f.masked else 0
        if width == 7:
            head = bytes([first, bit | length])
        elif width == 16:
            head = bytes([first, bit | 126]) + struct.pack("!H", length)
        else:
            head = bytes([first, bit | 127]) + struct.pack("!Q", length)
        if f.masked:
            out.append(head + f.key + _mask(f.payload, f.key))
        else:
            out.append(head + f.payload)
    return b"".join(out)


# -- the reference model -------------------------------------------------------

# What comes out, normalised: ("text", str), ("binary", bytes), ("ping", bytes),
# ("pong", bytes), ("close", code, reason), ("fail", code, parser_usable).
Item = tuple[Any, ...]

_REGISTERED = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013}
_LOCAL_ONLY = {1004, 1005, 1006, 1015}


def model(
    parts: Sequence[Part], limit: int | None, counted: list[int] | None = None
) -> tuple[list[Item], bool]:
    """What a server makes of these frames by RFC 6455 and the documented size
    rule: a message counts its bytes (text: those of the characters completed
    so far) and, after FREE_FRAMES frames, each frame at least
    FRAME_MIN_CHARGE; over ``limit`` it is refused with 1009 and its rest
    skipped; a frame header alone that shows it over is refused at once.
    Returns the items and whether they are all there is (False: noise came
    before the end, after which the model knows nothing); appends to
    ``counted`` the size counted for each message returned."""
    out: list[Item] = []
    opcode = None  # of the message in progress
    decoder: Any = None
    pieces: list[Any] | None = None  # the message being assembled
    size = frames = 0
    discarding = False

    def fail(code: int) -> tuple[list[Item], bool]:
        out.append(("fail", code, False))
        return out, True

    for part in parts:
        if isinstance(part, Noise):
            return out, False
        f = part
        length = f.length
        width = f.width or _natural_width(length)
        control = f.opcode >= 8
        if f.opcode not in (CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG):
            return fail(1002)
        if control and (not f.fin or width != 7):
            return fail(1002)  # fragmented, or longer than 125 bytes
        if (width == 16 and length < 126) or (width == 64 and length < 65536):
            return fail(1002)  # not the minimal length encoding
        if length >> 63 or f.rsv or not f.masked:
            return fail(1002)
        partial = length != len(f.payload)  # the stream ends inside this frame
        if control:
            assert not partial
            if f.opcode == PING:
                out.append(("ping", f.payload))
            elif f.opcode == PONG:
                out.append(("pong", f.payload))
            elif not f.payload:
                out.append(("close", 1005, ""))
                return out, True
            elif len(f.payload) == 1:
                return fail(1002)
            else:
                (code,) = struct.unpack("!H", f.payload[:2])
                if (
                    not 1000 <= code <= 4999
                    or code in _LOCAL_ONLY
                    or (code < 3000 and code not in _REGISTERED)
                ):
                    return fail(1002)
                try:
                    reason = f.payload[2:].decode()
                except UnicodeDecodeError:
                    return fail(1007)
                out.append(("close", code, reason))
                return out, True
            continue
        if f.payload or not partial:  # a frame's first payload bytes, or an empty frame
            if opcode is None:
                if f.opcode == CONTINUATION:
                    return fail(1002)
                opcode = f.opcode
                decoder = codecs.getincrementaldecoder("utf-8")() if opcode == TEXT else None
            elif f.opcode != CONTINUATION:
                return fail(1002)
            last = f.fin and not partial
            piece: Any = f.payload
            if decoder is not None:
                try:
                    piece = decoder.decode(f.payload, last)
                except UnicodeDecodeError:
                    return fail(1007)
            if last:
                opcode = decoder = None
            nbytes = len(piece.encode() if isinstance(piece, str) else piece)
            if discarding:
                discarding = not last
            elif last and pieces is None:  # a whole message in one frame
                if limit is not None and nbytes > limit:
                    out.append(("fail", 1009, True))
                else:
                    out.append(("text", piece) if isinstance(piece, str) else ("binary", piece))
                    if counted is not None:
                        counted.append(nbytes)
            else:
                if not partial:
                    frames += 1
                    if frames > FREE_FRAMES:
                        nbytes = max(nbytes, FRAME_MIN_CHARGE)
                size += nbytes
                if limit is not None and size > limit:
                    out.append(("fail", 1009, True))
                    pieces, size, frames, discarding = None, 0, 0, not last
                else:
                    pieces = [*(pieces or []), piece]
                    if last:
                        if isinstance(piece, str):
                            out.append(("text", "".join(pieces)))
                        else:
                            out.append(("binary", b"".join(pieces)))
                        if counted is not None:
                            counted.append(size)
                        pieces, size, frames = None, 0, 0
        if partial:
            remaining = length - len(f.payload)
            if limit is not None and not discarding and size + remaining > limit:
                out.append(("fail", 1009, False))
            return out, True
    return out, True


def wsproto_reference(data: bytes) -> list[Item]:
    """A plain wsproto server connection fed ``data`` at once, its message
    fragments joined naively."""
    conn = Connection(ConnectionType.SERVER)
    conn.receive_data(data)
    out: list[Item] = []
    parts: list[Any] = []
    for event in conn.events():
        if isinstance(event, (TextMessage, BytesMessage)):
            parts.append(event.data)
            if event.message_finished:
                if isinstance(event, TextMessage):
                    out.append(("text", "".join(parts)))
                else:
                    out.append(("binary", b"".join(parts)))
                parts = []
        elif isinstance(event, Ping):
            out.append(("ping", bytes(event.payload)))
        elif isinstance(event, Pong):
            out.append(("pong", bytes(event.payload)))
        elif isinstance(event, CloseConnection):
            if conn.state is ConnectionState.REMOTE_CLOSING:
                out.append(("close", int(event.code), event.reason or ""))
            else:  # wsproto's own parse failure
                out.append(("fail", 1007 if event.code == 1007 else 1002, False))
            break
    return out


# -- driving the Protocol ------------------------------------------------------


def normalise(item: object) -> Item:
    # Exact types: a message is str or bytes, never a bytearray or a view.
    if type(item) is str:
        return ("text", item)
    if type(item) is bytes:
        return ("binary", item)
    if isinstance(item, PingReceived) and type(item.payload) is bytes:
        return ("ping", item.payload)
    if isinstance(item, PongReceived) and type(item.payload) is bytes:
        return ("pong", item.payload)
    if isinstance(item, CloseReceived):
        return ("close", int(item.code), item.reason)
    if isinstance(item, Failure):
        assert item.cause
        return ("fail", int(item.code), item.parser_usable)
    raise AssertionError(f"unexpected item {item!r}")


Budget = tuple[float, float]
UNLIMITED: list[Budget] = [(math.inf, math.inf)]


def drive(
    data: bytes, cuts: Iterable[int], budgets: Sequence[Budget], limit: int | None
) -> tuple[list[Item], Protocol]:
    """Feed ``data`` cut at ``cuts``, as the Reader does: after each read,
    resume while there is a backlog, each call with the next budget."""
    protocol = Protocol(Connection(ConnectionType.SERVER), limit)
    budget = itertools.cycle(budgets)
    out: list[Item] = []
    bounds = sorted({0, len(data), *cuts})
    for start, stop in itertools.pairwise(bounds):
        out += map(normalise, protocol.receive_data(data[start:stop], *next(budget)))
        for _ in range(len(data) + 10):
            if not protocol.backlog:
                break
            out += map(normalise, protocol.resume(*next(budget)))
        else:
            raise AssertionError("resume() makes no progress")
    return out, protocol


def check(got: list[Item], expected: list[Item], complete: bool = True) -> None:
    """``got`` equals ``expected`` (only its start when not ``complete``),
    except that a message can be refused as too big (1009) as soon as a frame
    header or the first part of a payload shows it, where ``expected`` has
    the failure its whole payload brings (maybe after pings and pongs that
    came between): the connection is failed there, what follows is moot."""
    for i, item in enumerate(got):
        if i < len(expected) and item == expected[i]:
            continue
        if not complete and i >= len(expected):
            return
        assert item[:2] == ("fail", 1009), (i, got, expected)
        rest = [e[0] for e in expected[i:]]
        assert "fail" in rest, (i, got, expected)
        assert set(rest[: rest.index("fail")]) <= {"ping", "pong"}, (i, got, expected)
        return
    if complete:
        assert len(got) == len(expected), (got, expected)
    else:
        assert len(got) >= len(expected), (got, expected)


def check_nothing_after_the_end(got: list[Item], protocol: Protocol) -> None:
    """After a close frame or a failure that stops the parser: nothing more."""
    ends = [
        i
        for i, item in enumerate(got)
        if item[0] == "close" or (item[0] == "fail" and not item[2])
    ]
    if ends:
        assert ends[0] == len(got) - 1, got
        assert protocol.receive_data(frame(BINARY, b"more")) == []
        assert protocol.resume() == []


# -- strategies ------------------------------------------------------------------

SIZES = st.one_of(
    st.integers(0, 12),
    st.integers(0, 12),
    st.sampled_from([124, 125, 126, 127, 300]),
    st.sampled_from([65535, 65536, 65537]),
)
keys = st.sampled_from(KEYS)
alphabet = st.sampled_from("aZ é€𝄞ü✓")


@st.composite
def payloads(draw: st.DrawFn, size: int, text: bool) -> bytes:
    """``size`` bytes: UTF-8 text with multi-byte characters, or binary."""
    if text:
        unit = draw(st.text(alphabet, min_size=1, max_size=5)).encode()
        return unit * (size // len(unit)) + b"a" * (size % len(unit))
    if size <= 64:
        return draw(st.binary(min_size=size, max_size=size))
    unit = draw(st.binary(min_size=1, max_size=8))
    return (unit * (size // len(unit) + 1))[:size]


def split(draw: st.DrawFn, data: bytes, count: int) -> list[bytes]:
    """``data`` in ``count`` pieces, cut anywhere (in characters too), empty
    ones included."""
    cuts = sorted(
        draw(st.lists(st.integers(0, len(data)), min_size=count - 1, max_size=count - 1))
    )
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@st.composite
def controls(draw: st.DrawFn) -> list[Part]:
    opcode = draw(st.sampled_from([PING, PONG]))
    payload = draw(st.binary(max_size=125) | st.just(b"p" * 125))
    return [Frame(opcode, payload, key=draw(keys))]


@st.composite
def fragments(draw: st.DrawFn, data: bytes, opcode: int, count: int) -> list[Part]:
    """One message in ``count`` frames, maybe with pings and pongs between."""
    out: list[Part] = []
    pieces = split(draw, data, count)
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        out.append(Frame(opcode if i == 0 else CONTINUATION, piece, fin=last, key=draw(keys)))
        if not last and draw(st.integers(0, 3)) == 0:
            out += draw(controls())
    return out


@st.composite
def messages(draw: st.DrawFn, flood: bool = False) -> list[Part]:
    text = draw(st.booleans())
    data = draw(payloads(draw(st.integers(0, 400) | SIZES if flood else SIZES), text))
    if flood:
        count = draw(st.integers(FREE_FRAMES - 1, FREE_FRAMES + 25))
    else:
        count = draw(st.sampled_from([1, 1, 2, 3, 5]))
    return draw(fragments(data, TEXT if text else BINARY, count))


close_codes = st.sampled_from(sorted(_REGISTERED)) | st.integers(3000, 4999)
bad_close_codes = st.sampled_from([0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2999, 5000])
reasons = st.text(alphabet, max_size=30).map(str.encode)


@st.composite
def closes(draw: st.DrawFn) -> list[Part]:
    if draw(st.integers(0, 4)) == 0:
        return [Frame(CLOSE, b"")]
    return [Frame(CLOSE, close_payload(draw(close_codes)) + draw(reasons)[:123])]


BAD_UTF8 = [b"\xff", b"\xfe", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82(", b"\xf4\x90\x80"]
CUT_UTF8 = [b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98"]  # a character cut at the message's end


@st.composite
def hostile(draw: st.DrawFn) -> list[Part]:
    small = st.binary(max_size=20)
    data_op = st.sampled_from([TEXT, BINARY])
    kind = draw(st.integers(0, 13))
    if kind == 0:  # reserved opcode
        return [Frame(draw(st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15])), draw(small))]
    if kind == 1:  # RSV bits (no extension was negotiated)
        opcode = draw(st.sampled_from([TEXT, BINARY, PING, CLOSE]))
        return [Frame(opcode, b"", rsv=draw(st.integers(1, 7)))]
    if kind == 2:  # unmasked, from a client
        return [Frame(draw(data_op | st.just(PING)), b"plain", masked=False)]
    if kind == 3:  # control frame over 125 bytes
        opcode = draw(st.sampled_from([PING, PONG, CLOSE]))
        return [Frame(opcode, b"\x03\xe8" + b"x" * draw(st.integers(124, 200)))]
    if kind == 4:  # fragmented control frame
        return [Frame(draw(st.sampled_from([PING, PONG, CLOSE])), b"", fin=False)]
    if kind == 5:  # continuation of nothing
        return [Frame(CONTINUATION, draw(small), fin=draw(st.booleans()))]
    if kind == 6:  # a new message before the last one ended
        first = Frame(draw(data_op), draw(st.binary(max_size=3)).hex().encode(), fin=False)
        between = draw(controls()) if draw(st.booleans()) else []
        return [first, *between, Frame(draw(data_op), b"", fin=draw(st.booleans()))]
    if kind in (7, 8):  # invalid UTF-8, maybe split across fragments
        prefix = draw(payloads(draw(st.integers(0, 12)), True))
        suffix = draw(payloads(draw(st.integers(0, 5)), True))
        if kind == 7:
            data = prefix + draw(st.sampled_from(BAD_UTF8)) + suffix
        else:
            data = prefix + draw(st.sampled_from(CUT_UTF8))
        return draw(fragments(data, TEXT, draw(st.integers(1, 4))))
    if kind == 9:  # length not minimally encoded
        if draw(st.booleans()):
            return [Frame(draw(data_op), b"x" * draw(st.integers(0, 125)), width=16)]
        return [Frame(draw(data_op), b"x" * draw(st.sampled_from([0, 125, 126, 65535])), width=64)]
    if kind == 10:  # 64-bit length with the most significant bit set
        return [Frame(draw(data_op), b"", announced=draw(st.sampled_from([2**63, 2**64 - 1])))]
    if kind == 11:  # close frame with one byte
        return [Frame(CLOSE, b"\x03")]
    if kind == 12:  # close frame with a code no peer may send
        return [Frame(CLOSE, close_payload(draw(bad_close_codes)) + draw(reasons))]
    # close frame whose reason is not UTF-8
    return [Frame(CLOSE, close_payload(draw(close_codes)) + draw(st.sampled_from(BAD_UTF8)))]


@st.composite
def huge(draw: st.DrawFn) -> list[Part]:
    """A data frame whose header announces far more than ever comes (the
    stream ends inside it): 2**40, 2**63 - 1, or just over a limit."""
    announced = draw(st.sampled_from([2**40, 2**63 - 1, 65537, 1001, 127, 2]))
    start = b"abc"[: draw(st.integers(0, 2))]
    opcode = draw(st.sampled_from([TEXT, BINARY]))
    return [Frame(opcode, start, fin=draw(st.booleans()), announced=announced)]


noise = st.binary(min_size=1, max_size=40).map(lambda data: [Noise(data)])


@st.composite
def streams(draw: st.DrawFn) -> list[Part]:
    kinds = [
        messages(),
        messages(),
        messages(flood=True),
        controls(),
        closes(),
        hostile(),
        hostile(),
        noise,
    ]
    items = draw(st.lists(st.one_of(kinds), min_size=1, max_size=6))
    if draw(st.integers(0, 5)) == 0:
        items.append(draw(huge()))
    return [part for item in items for part in item]


flood_streams = st.lists(
    st.one_of(messages(flood=True), messages(flood=True), controls()), min_size=1, max_size=3
).map(lambda items: [part for item in items for part in item])

budgets = st.lists(
    st.tuples(st.sampled_from([-5, 0, 1, 7, 200, math.inf]), st.sampled_from([0, 1, 3, math.inf])),
    min_size=1,
    max_size=4,
)


def chunkings(data: bytes, short: int = 600) -> st.SearchStrategy[list[int]]:
    """Where to cut ``data`` into reads: anywhere, or every byte (when short)."""
    anywhere = st.lists(st.integers(0, len(data)), max_size=12)
    if len(data) <= short:
        return anywhere | st.just(list(range(len(data))))
    return anywhere


# -- the properties --------------------------------------------------------------


@FUZZ
@given(streams(), st.data())
def test_without_a_limit_equals_wsproto_and_the_model(parts: list[Part], data: Any) -> None:
    """Without a size limit, for any chunking and any budget, the items equal
    what a plain wsproto connection makes of the same bytes, and what the
    model of RFC 6455 says (up to the first noise)."""
    wire = encode(parts)
    reference = wsproto_reference(wire)
    expected, complete = model(parts, None)
    check(reference, expected, complete)  # the model, checked against wsproto
    for _ in range(2):
        cuts = data.draw(chunkings(wire), label="cuts")
        got, protocol = drive(wire, cuts, data.draw(budgets, label="budgets"), None)
        assert got == reference
        check_nothing_after_the_end(got, protocol)


@FUZZ
@given(streams(), st.sampled_from(LIMITS), st.data())
def test_with_a_limit_equals_the_model(parts: list[Part], limit: int, data: Any) -> None:
    """With a size limit: the items equal the model's (up to the first noise),
    and do not depend on the chunking or the budget (but that a header may be
    refused before its payload comes)."""
    wire = encode(parts)
    whole, _ = drive(wire, [], UNLIMITED, limit)
    expected, complete = model(parts, limit)
    check(whole, expected, complete)
    for _ in range(2):
        cuts = data.draw(chunkings(wire), label="cuts")
        got, protocol = drive(wire, cuts, data.draw(budgets, label="budgets"), limit)
        check(got, whole)
        check(got, expected, complete)
        check_nothing_after_the_end(got, protocol)


@FUZZ
@given(flood_streams, st.data())
def test_fragment_floods_count_as_documented(parts: list[Part], data: Any) -> None:
    """Messages of many (mostly tiny or empty) fragments: after FREE_FRAMES
    frames each frame counts at least FRAME_MIN_CHARGE bytes, however the
    frames are split across reads. Limits right at a message's size too."""
    wire = encode(parts)
    counted: list[int] = []
    model(parts, None, counted)
    limits = st.sampled_from([None, *LIMITS])
    if tight := [size + delta for size in counted for delta in (-1, 0) if size]:
        limits = st.sampled_from(tight) | limits
    limit = data.draw(limits, label="limit")
    expected, complete = model(parts, limit)
    assert complete
    # Or each frame's last byte in a read of its own.
    ends = [end - 1 for end in itertools.accumulate(len(encode([part])) for part in parts)]
    for _ in range(2):
        cuts = data.draw(chunkings(wire) | st.just(ends), label="cuts")
        got, protocol = drive(wire, cuts, data.draw(budgets, label="budgets"), limit)
        check(got, expected)
        check_nothing_after_the_end(got, protocol)


@FUZZ
@given(
    st.sampled_from([TEXT, BINARY, CONTINUATION]),
    st.sampled_from([2**40, 2**63 - 1, 2**63]),
    st.sampled_from([None, *LIMITS]),
    st.data(),
)
def test_a_huge_announced_length_fails_from_the_header_alone(
    opcode: int, announced: int, limit: int | None, data: Any
) -> None:
    """A header announcing 2**40 or 2**63 - 1 bytes is refused with 1009 as
    soon as it is complete, with no payload; 2**63 and more is not a length
    (1002); without a limit the frame is awaited."""
    head = encode([Frame(opcode, b"", fin=False, announced=announced)])
    cuts = data.draw(st.lists(st.integers(1, len(head) - 1)), label="cuts")
    bounds = sorted({0, len(head), *cuts})
    protocol = Protocol(Connection(ConnectionType.SERVER), limit)
    got: list[Item] = []
    for start, stop in itertools.pairwise(bounds):
        if announced >> 63:  # refused once the length is read, before the mask key
            got += map(normalise, protocol.receive_data(head[start:stop]))
            continue
        got = [normalise(item) for item in protocol.receive_data(head[start:stop])]
        if stop < len(head):
            assert got == []
    if announced >> 63:
        assert got == [("fail", 1002, False)]
    elif limit is None:
        assert got == []
    else:
        assert got == [("fail", 1009, False)]  # a continuation of nothing: too big first
    assert protocol.resume() == []


# -- regressions found by the properties above -----------------------------------


def test_min_charge_is_per_frame_not_per_read() -> None:
    """FRAME_MIN_CHARGE was charged on a frame's last read piece: a frame
    split across two reads counted up to 63 bytes more than in one read."""
    start = frame(BINARY, b"", fin=False)
    empty = frame(CONTINUATION, b"", fin=False)
    data = start + empty * (FREE_FRAMES - 1) + frame(CONTINUATION, b"ab")
    # Counted as documented: 16 free frames, then max(2, 64) = 64 bytes.
    whole, _ = drive(data, [], UNLIMITED, FRAME_MIN_CHARGE)
    assert whole == [("binary", b"ab")]
    for cut in range(len(data) - 6, len(data)):
        assert drive(data, [cut], UNLIMITED, FRAME_MIN_CHARGE)[0] == whole
    over, _ = drive(data, [len(data) - 1], UNLIMITED, FRAME_MIN_CHARGE - 1)
    assert over == [("fail", 1009, True)]


def test_frames_read_before_a_usable_failure_are_parsed() -> None:
    """After a too-big message (parser still usable), the peer's close frame
    read together with it was left unparsed, with no backlog to say so."""
    data = frame(BINARY, b"x" * 11) + frame(CLOSE, close_payload(1000))
    expected = [("fail", 1009, True), ("close", 1000, "")]
    for cuts in ([], [len(data) - 8]):
        assert drive(data, cuts, UNLIMITED, 10)[0] == expected
