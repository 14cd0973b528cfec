"""What trio_ws relies on inside wsproto, checked one by one.

trio_ws reaches past wsproto's public API in a few places (see
docs/design.md, "What trio_ws relies on inside wsproto"). Most of them
degrade quietly when wsproto changes: install_buffer() and
between_messages() then return None and the fast paths are simply off.
Silently slower is still a regression, so every test here fails loudly,
naming what changed in wsproto, which trio_ws code relies on it and what
happens to trio_ws without it.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import re
import zlib
from collections import deque
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import wsproto.frame_protocol
from rawpeer import frame
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import (
    Buffer,
    CloseReason,
    FrameDecoder,
    FrameProtocol,
    MessageDecoder,
    Opcode,
    RsvBits,
)

from trio_ws._wire import masking as _masking
from trio_ws._wire.deflate import Deflate
from trio_ws._wire.events import Failure
from trio_ws._wire.framing import FrameBuffer, frame_decoder, install_buffer
from trio_ws._wire.protocol import Protocol

WSPROTO = importlib.metadata.version("wsproto")
SERVER = ConnectionType.SERVER
CLIENT = ConnectionType.CLIENT
NO_RSV = RsvBits(False, False, False)
RSV1 = RsvBits(True, False, False)


def broken(what: str, who: str, effect: str) -> str:
    """The failure message: what changed, who relies on it, what happens."""
    return (
        f"wsproto {WSPROTO}: {what}. Relied on by {who}: {effect}. "
        f"Update trio_ws for this wsproto (docs/design.md, "
        f"'What trio_ws relies on inside wsproto')."
    )


def _decoder(connection: Connection) -> Any:
    return connection._proto._frame_decoder  # type: ignore[attr-defined]


def _buffered_server() -> tuple[Connection, FrameBuffer]:
    connection = Connection(SERVER)
    buffer = install_buffer(connection)
    assert buffer is not None, broken(
        "install_buffer() found no fresh Buffer to replace",
        "trio_ws._wire.framing.install_buffer",
        "see test_decoder_buffer_is_a_fresh_wsproto_buffer",
    )
    return connection, buffer


# -- the pin -----------------------------------------------------------------


def test_pin_has_an_upper_bound_and_admits_the_installed_wsproto() -> None:
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    pin = re.search(r'"wsproto>=([0-9.]+),<([0-9]+)"', pyproject)
    assert pin is not None, (
        "pyproject.toml must pin wsproto below its next major version "
        '("wsproto>=X.Y,<N"): trio_ws patches wsproto internals that a major '
        "release may change"
    )
    low = tuple(int(part) for part in pin.group(1).split("."))
    installed = tuple(int(part) for part in re.findall(r"\d+", WSPROTO)[:3])
    assert low <= installed < (int(pin.group(2)),), (
        f"wsproto {WSPROTO} is installed, outside the pin {pin.group(0)}: "
        "the tests below check the wsproto in use, not the one pinned"
    )


# -- the frame decoder and its buffer (trio_ws._wire.framing) ---------------------


def test_frame_decoder_is_connection_proto_frame_decoder() -> None:
    connection = Connection(SERVER)
    proto = getattr(connection, "_proto", None)
    decoder = getattr(proto, "_frame_decoder", None)
    found = isinstance(proto, FrameProtocol) and isinstance(decoder, FrameDecoder)
    assert found, broken(
        "Connection._proto._frame_decoder is no longer a FrameDecoder "
        f"(found {type(proto).__name__}._frame_decoder = {type(decoder).__name__})",
        "trio_ws._wire.framing.install_buffer, frame_decoder and between_messages",
        "they find nothing and return None, so the copy-free reader (FrameBuffer), "
        "the whole-message fast path and the refusal of an over-sized message at "
        "its frame header (Protocol._announced_too_big) are all off (slower, and "
        "an over-sized frame is buffered whole before it is refused)",
    )


def test_decoder_buffer_is_a_fresh_wsproto_buffer() -> None:
    """install_buffer() replaces exactly a wsproto Buffer with nothing consumed,
    carrying over its bytes (those that came with the handshake's response)."""
    early = frame(Opcode.BINARY, b"early", mask=False)
    for connection in (Connection(SERVER), Connection(CLIENT, trailing_data=early)):
        old = getattr(_decoder(connection), "buffer", None)
        assert type(old) is Buffer, broken(
            f"FrameDecoder.buffer is a {type(old).__name__}, not frame_protocol.Buffer",
            "trio_ws._wire.framing.install_buffer",
            "it finds no Buffer at Connection._proto._frame_decoder.buffer and "
            "returns None: the copy-free reader and the whole-message fast path "
            "are off (slower, still correct)",
        )
        unread = old.bytes_used == 0 and isinstance(old.buffer, bytearray)
        assert unread, broken(
            "Buffer no longer keeps its bytes in .buffer (a bytearray) and its "
            "read position in .bytes_used",
            "trio_ws._wire.framing.install_buffer",
            "it cannot carry over the bytes wsproto holds and returns None: "
            "the copy-free reader and the whole-message fast path are off",
        )
    connection = Connection(CLIENT, trailing_data=early)
    assert bytes(_decoder(connection).buffer.buffer) == early, broken(
        "Connection(trailing_data=...) no longer leaves those bytes unparsed in "
        "FrameDecoder.buffer",
        "trio_ws._wire.framing.install_buffer (frames sent with the 101 response)",
        "they would be lost or read twice when the buffer is replaced",
    )


def test_frame_decoder_uses_only_what_frame_buffer_has() -> None:
    source = inspect.getsource(FrameDecoder)
    used = set(re.findall(r"self\.buffer\.(\w+)", source))
    if re.search(r"len\(self\.buffer\)", source):
        used.add("__len__")
    public = {name for name in vars(Buffer) if not name.startswith("_")} | {"__len__"}
    missing = sorted(name for name in used | public if not hasattr(FrameBuffer, name))
    assert not missing, broken(
        f"FrameDecoder's buffer is used through {missing}, which "
        "trio_ws._wire.framing.FrameBuffer lacks",
        "trio_ws._wire.framing.FrameBuffer (installed by install_buffer on every connection)",
        "parsing fails with AttributeError on every connection",
    )
    reassigned = re.findall(r"self\.buffer\s*=", source)
    assert len(reassigned) == 1, broken(
        "FrameDecoder assigns self.buffer outside __init__",
        "trio_ws._wire.framing.install_buffer and between_messages",
        "wsproto may drop the installed FrameBuffer mid-connection: the fast "
        "paths switch off (between_messages checks the buffer is still ours)",
    )


def test_frame_buffer_payload_reaches_the_event_uncopied() -> None:
    connection = Connection(CLIENT)
    assert install_buffer(connection) is not None
    payload = os.urandom(100_000)
    wire = frame(Opcode.BINARY, payload, mask=False)
    connection.receive_data(wire[: len(wire) - len(payload)])  # the header alone
    assert list(connection.events()) == []
    connection.receive_data(payload)
    events = list(connection.events())
    assert [event.data for event in events] == [payload]
    assert events[0].data is payload, broken(
        "a frame's payload is copied between FrameDecoder's buffer and the event "
        "(FrameBuffer hands it over as the very bytes object read)",
        "trio_ws._wire.framing.FrameBuffer",
        "the copy-free reader copies every large payload again (slower, still correct)",
    )


def test_frame_decoder_header_and_payload_consumed() -> None:
    connection, _ = _buffered_server()
    decoder = frame_decoder(connection)
    assert decoder is _decoder(connection), broken(
        "FrameDecoder has no .header or .payload_consumed",
        "trio_ws._wire.framing.frame_decoder (Protocol._announced_too_big)",
        "a message over max_message_size is refused only once its whole frame "
        "has been buffered, not at its header",
    )
    assert decoder.header is None
    wire = frame(Opcode.BINARY, os.urandom(100_000))
    connection.receive_data(wire[:1014])  # 2 + 8 length bytes + 4 key bytes + 1000
    list(connection.events())
    head = decoder.header
    tells = (
        head is not None
        and head.opcode is Opcode.BINARY
        and head.payload_len == 100_000
        and decoder.payload_consumed == 1000
    )
    assert tells, broken(
        "while a frame is parsed, FrameDecoder.header.payload_len/.opcode and "
        f".payload_consumed no longer tell its length and progress (found {head!r}, "
        f"{getattr(decoder, 'payload_consumed', None)!r})",
        "trio_ws._wire.protocol.Protocol._announced_too_big",
        "over-sized messages are refused late or wrongly",
    )
    connection.receive_data(wire[1014:])
    list(connection.events())
    assert decoder.header is None, broken(
        "FrameDecoder.header stays set after a frame is complete",
        "trio_ws._wire.framing.between_messages",
        "the whole-message fast path never runs again on a connection",
    )


def test_message_decoder_opcode_marks_a_message_in_progress() -> None:
    connection, _ = _buffered_server()
    messages = getattr(connection._proto, "_message_decoder", None)  # type: ignore[attr-defined]
    found = isinstance(messages, MessageDecoder) and messages.opcode is None
    assert found, broken(
        "Connection._proto._message_decoder.opcode is missing",
        "trio_ws._wire.framing.between_messages",
        "it returns None: the whole-message fast path is off (slower, still correct)",
    )
    connection.receive_data(frame(Opcode.TEXT, b"hel", fin=False))
    list(connection.events())
    assert messages.opcode is Opcode.TEXT, broken(
        "MessageDecoder.opcode is None in the middle of a fragmented message",
        "trio_ws._wire.framing.between_messages",
        "whole_messages would read frames in place of wsproto mid-message: wrong "
        "messages instead of a protocol error",
    )
    connection.receive_data(frame(Opcode.CONTINUATION, b"lo"))
    list(connection.events())
    assert messages.opcode is None, broken(
        "MessageDecoder.opcode is not reset to None when a message ends",
        "trio_ws._wire.framing.between_messages",
        "the whole-message fast path never runs again on a connection",
    )


def test_event_queue_is_an_empty_deque_used_through_popleft() -> None:
    connection = Connection(SERVER)
    events = getattr(connection, "_events", None)
    empty_deque = type(events) is deque and not events
    assert empty_deque, broken(
        f"Connection._events is {type(events).__name__}, not an empty deque",
        "trio_ws._wire.framing.slim_event_queue",
        "it leaves the queue alone: every idle connection takes about 760 bytes more",
    )
    source = inspect.getsource(Connection)
    used = set(re.findall(r"self\._events\.(\w+)", source))
    assert used <= {"append", "popleft"}, broken(
        f"Connection._events is used through {sorted(used)}",
        "trio_ws._wire.framing.slim_event_queue (its list has only append and popleft)",
        "a lost stream or any new event would raise AttributeError",
    )


def test_masker_is_looked_up_in_frame_protocol_at_each_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[bytes] = []

    class Spy:
        def __init__(self, key: bytes | bytearray) -> None:
            made.append(bytes(key))
            self._inner = _masking.WSPROTO_MASKER(bytearray(key))

        def process(self, data: Any) -> Any:
            return self._inner.process(bytearray(data))

    monkeypatch.setattr(wsproto.frame_protocol, "XorMaskerSimple", Spy)
    server = Connection(SERVER)
    wire = frame(Opcode.BINARY, b"x" * 1000)
    for at in range(0, len(wire), 300):  # the masker continues across chunks
        server.receive_data(wire[at : at + 300])
    received = b"".join(event.data for event in server.events())
    sent = Connection(CLIENT).send(BytesMessage(data=b"y"))
    used = received == b"x" * 1000 and len(made) == 2 and sent[2:6] == made[1]
    assert used, broken(
        "frames are no longer masked and unmasked through "
        "frame_protocol.XorMaskerSimple(key).process(data), looked up at each frame",
        "trio_ws._wire.masking.install (it replaces that name with the compiled Masker)",
        "the compiled masker is never used: masking stays pure Python, about "
        "70 us per 64 KiB received by a server or sent by a client",
    )


# -- permessage-deflate (trio_ws._wire.deflate.DeflateExtension) ------------------

#: PerMessageDeflate's private fields DeflateExtension reads or writes.
DEFLATE_FIELDS = {
    "_enabled": (
        False,
        "DeflateExtension.accept (sets it) and __repr__",
        "a negotiated extension may stay disabled: compression silently off",
    ),
    "_compressor": (
        None,
        "DeflateExtension.frame_outbound (creates it with our level and memory level)",
        "level and memory_level are ignored, or sending a compressed message fails",
    ),
    "_decompressor": (
        None,
        "DeflateExtension._inflate and frame_inbound_complete",
        "inflation is no longer bounded by max_message_size, or every compressed message fails",
    ),
    "_inbound_compressed": (
        None,
        "DeflateExtension.frame_inbound_payload_data and frame_inbound_complete",
        "compressed messages are delivered still compressed, or plain ones inflated",
    ),
    "_inbound_is_compressible": (
        None,
        "DeflateExtension.frame_inbound_payload_data and frame_inbound_complete",
        "compressed messages are delivered still compressed, or plain ones inflated",
    ),
}


@pytest.mark.parametrize("name", sorted(DEFLATE_FIELDS))
def test_per_message_deflate_private_field(name: str) -> None:
    initial, who, effect = DEFLATE_FIELDS[name]
    extension = PerMessageDeflate()
    assert getattr(extension, name, "missing") == initial, broken(
        f"PerMessageDeflate() no longer starts with {name} = {initial!r}",
        f"trio_ws._wire.deflate.{who}",
        effect,
    )
    if name == "_enabled":
        extension._enabled = True
        assert extension.enabled(), broken(
            "PerMessageDeflate.enabled() does not report _enabled",
            f"trio_ws._wire.deflate.{who}",
            effect,
        )


def test_per_message_deflate_compressible_opcode() -> None:
    extension = PerMessageDeflate()
    method = getattr(extension, "_compressible_opcode", None)
    expected = [op in (Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY) for op in Opcode]
    same = method is not None and [method(op) for op in Opcode] == expected
    assert same, broken(
        "PerMessageDeflate._compressible_opcode(opcode) is gone or changed",
        "trio_ws._wire.deflate.DeflateExtension.frame_outbound",
        "sending fails with AttributeError, or control frames get compressed",
    )


def test_per_message_deflate_inbound_header_sets_the_message_state() -> None:
    extension = PerMessageDeflate(client_max_window_bits=10)
    extension._enabled = True
    proto = SimpleNamespace(client=False)
    result = extension.frame_inbound_header(proto, Opcode.TEXT, RSV1, 10)  # type: ignore[arg-type]
    decompressor = getattr(extension, "_decompressor", None)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -10)
    data = compressor.compress(b"hello" * 100) + compressor.flush(zlib.Z_SYNC_FLUSH)
    started = (
        result == RSV1
        and getattr(extension, "_inbound_compressed", None) is True
        and getattr(extension, "_inbound_is_compressible", None) is True
        and decompressor is not None
        and decompressor.decompress(data) == b"hello" * 100
    )
    assert started, broken(
        "PerMessageDeflate.frame_inbound_header no longer sets _inbound_compressed, "
        "_inbound_is_compressible and a raw-deflate _decompressor (client window) "
        "for a message's first frame",
        "trio_ws._wire.deflate.DeflateExtension (calls it, then inflates on its own)",
        "compressed messages cannot be read",
    )
    extension.frame_inbound_header(proto, Opcode.CONTINUATION, NO_RSV, 5)  # type: ignore[arg-type]
    assert getattr(extension, "_inbound_compressed", None) is True, broken(
        "a continuation frame resets PerMessageDeflate._inbound_compressed",
        "trio_ws._wire.deflate.DeflateExtension.frame_inbound_payload_data",
        "fragmented compressed messages are delivered still compressed",
    )
    extension._inbound_compressed = None  # as DeflateExtension does at a message's end
    extension.frame_inbound_header(proto, Opcode.BINARY, RSV1, 5)  # type: ignore[arg-type]
    assert getattr(extension, "_decompressor", None) is decompressor, broken(
        "PerMessageDeflate.frame_inbound_header replaces an existing _decompressor",
        "trio_ws._wire.deflate.DeflateExtension (keeps it between messages unless "
        "no_context_takeover)",
        "the peer's compression context is lost: its next message fails to inflate",
    )


@pytest.mark.parametrize("no_context_takeover", [True, False])
def test_per_message_deflate_outbound_uses_the_existing_compressor(
    no_context_takeover: bool,
) -> None:
    class Spy:
        def __init__(self) -> None:
            self.inner = zlib.compressobj(9, zlib.DEFLATED, -12, 5)
            self.calls = 0

        def compress(self, data: bytes) -> bytes:
            self.calls += 1
            return self.inner.compress(data)

        def flush(self, mode: int) -> bytes:
            self.calls += 1
            return self.inner.flush(mode)

    extension = PerMessageDeflate(
        server_max_window_bits=12, server_no_context_takeover=no_context_takeover
    )
    extension._enabled = True
    spy = Spy()
    extension._compressor = spy  # type: ignore[assignment]
    payload = b"abcdefgh" * 500
    rsv, data = extension.frame_outbound(
        SimpleNamespace(client=False),  # type: ignore[arg-type]
        Opcode.BINARY,
        NO_RSV,
        payload,
        True,
    )
    inflated = zlib.decompressobj(-12).decompress(data + b"\x00\x00\xff\xff")
    compressed = rsv.rsv1 and spy.calls >= 2 and inflated == payload
    assert compressed, broken(
        "PerMessageDeflate.frame_outbound no longer compresses with an existing "
        "_compressor (setting RSV1, removing the final 00 00 ff ff)",
        "trio_ws._wire.deflate.DeflateExtension.frame_outbound (creates _compressor "
        "with our level and memory_level, then calls it)",
        "Deflate(level=..., memory_level=...) is ignored or messages are corrupt",
    )
    expected = None if no_context_takeover else spy
    assert getattr(extension, "_compressor", None) is expected, broken(
        "PerMessageDeflate.frame_outbound no longer drops _compressor after a "
        "message exactly when no_context_takeover is agreed",
        "trio_ws._wire.deflate.DeflateExtension and Protocol.frame_key (broadcast framing)",
        "a server keeps a compressor per connection (memory), or a shared "
        "broadcast frame depends on earlier messages",
    )


def test_per_message_deflate_finalize_applies_the_response() -> None:
    extension = PerMessageDeflate()
    extension.finalize("permessage-deflate; server_max_window_bits=10; client_no_context_takeover")
    applied = (
        extension.enabled()
        and extension.server_max_window_bits == 10
        and extension.client_no_context_takeover
    )
    assert applied, broken(
        "PerMessageDeflate.finalize(response) no longer applies the response's "
        "parameters and enables the extension",
        "trio_ws._wire.deflate.DeflateExtension.finalize (sets defaults, then calls it)",
        "a client's compression is off or uses the wrong window",
    )


class HookRecorder(Extension):
    """An extension that records how wsproto calls the hooks DeflateExtension overrides."""

    name = "x-record"

    def __init__(self, fail_with: CloseReason | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail_with = fail_with

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool | str:
        return True

    def frame_inbound_header(
        self, proto: Any, opcode: Opcode, rsv: RsvBits, payload_length: int
    ) -> CloseReason | RsvBits:
        self.calls.append(("header", proto.client, opcode, rsv, payload_length))
        return NO_RSV if opcode.iscontrol() else RSV1

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
        self.calls.append(("data", proto.client, bytes(data)))
        return self.fail_with if self.fail_with is not None else data

    def frame_inbound_complete(self, proto: Any, fin: bool) -> bytes | CloseReason | None:
        self.calls.append(("complete", proto.client, fin))
        return None

    def frame_outbound(
        self, proto: Any, opcode: Opcode, rsv: RsvBits, data: bytes, fin: bool
    ) -> tuple[RsvBits, bytes]:
        self.calls.append(("outbound", proto.client, opcode, rsv, bytes(data), fin))
        return (RSV1 if not opcode.iscontrol() else rsv), data


def test_extension_hooks_are_called_as_deflate_extension_expects() -> None:
    recorder = HookRecorder()
    connection = Connection(SERVER, [recorder])
    assert install_buffer(connection) is not None
    for wire in (
        frame(Opcode.TEXT, b"ab", fin=False, rsv=4),
        frame(Opcode.PING, b"p"),
        frame(Opcode.CONTINUATION, b"cd"),
    ):
        connection.receive_data(wire)
    list(connection.events())
    connection.send(TextMessage(data="hi"))
    connection.send(Ping(payload=b"x"))
    assert recorder.calls == [
        ("header", False, Opcode.TEXT, RSV1, 2),
        ("data", False, b"ab"),
        ("complete", False, False),
        ("header", False, Opcode.PING, NO_RSV, 1),
        ("data", False, b"p"),
        ("complete", False, True),
        ("header", False, Opcode.CONTINUATION, NO_RSV, 2),
        ("data", False, b"cd"),
        ("complete", False, True),
        ("outbound", False, Opcode.TEXT, NO_RSV, b"hi", True),
        ("outbound", False, Opcode.PING, NO_RSV, b"x", True),
    ], broken(
        "FrameDecoder/FrameProtocol call the extension hooks differently: every "
        "frame's header (control frames too), its unmasked payload, "
        "complete(fin) once per frame, and frame_outbound per frame sent, each "
        "with proto.client; found "
        f"{recorder.calls}",
        "trio_ws._wire.deflate.DeflateExtension (frame_inbound_header/_payload_data/"
        "_complete keep control frames out of a message's state; frame_outbound)",
        "compressed messages with a ping between fragments, or bounded inflation, may break",
    )


@pytest.mark.parametrize(
    "code", [CloseReason.INVALID_FRAME_PAYLOAD_DATA, CloseReason.MESSAGE_TOO_BIG]
)
def test_extension_failure_is_a_close_event_in_an_open_state(code: CloseReason) -> None:
    connection = Connection(SERVER, [HookRecorder(fail_with=code)])
    connection.receive_data(frame(Opcode.BINARY, b"zz", rsv=4))
    events = list(connection.events())
    failed = (
        len(events) == 1
        and isinstance(events[0], CloseConnection)
        and (events[0].code, events[0].reason) == (code, "error in extension")
        and connection.state is ConnectionState.OPEN
    )
    assert failed, broken(
        "an extension hook's CloseReason no longer comes out as "
        "CloseConnection(code, 'error in extension') with the state left OPEN "
        f"(found {events}, {connection.state})",
        "trio_ws._wire.protocol.Protocol._on_close (tells a parse failure from a close "
        "frame by the state, 'invalid compressed data' by that reason)",
        "bad compressed data or an over-sized compressed message is reported "
        "with the wrong reason, or taken for the peer's close frame",
    )


def test_parse_failure_is_a_close_event_in_an_open_state() -> None:
    connection = Connection(SERVER)
    connection.receive_data(frame(Opcode.TEXT, b"unmasked", mask=False))
    events = list(connection.events())
    failed = (
        len(events) == 1
        and isinstance(events[0], CloseConnection)
        and events[0].code == CloseReason.PROTOCOL_ERROR
        and connection.state is ConnectionState.OPEN
    )
    connection = Connection(SERVER)
    connection.receive_data(frame(Opcode.CLOSE, b"\x03\xe8bye"))
    events = list(connection.events())
    told_apart = failed and connection.state is ConnectionState.REMOTE_CLOSING
    assert told_apart, broken(
        "a protocol error no longer leaves the state OPEN, or a close frame no "
        "longer moves it to REMOTE_CLOSING",
        "trio_ws._wire.protocol.Protocol._on_close",
        "protocol errors are taken for the peer's close frame, or the reverse",
    )


def test_no_status_rcvd_sends_an_empty_close_frame() -> None:
    wire = Connection(SERVER).send(CloseConnection(code=CloseReason.NO_STATUS_RCVD))
    assert wire == b"\x88\x00", broken(
        f"CloseConnection(code=CloseReason.NO_STATUS_RCVD) is framed as {wire!r}, "
        "not an empty close frame",
        "trio_ws._wire.protocol.Protocol.encode_close (echoes a peer's code-less close)",
        "closing after a close frame without a code sends the wrong code or fails",
    )


def test_binary_messages_are_bytes() -> None:
    connections = [Connection(SERVER), Connection(CLIENT)]
    extension = Deflate().extension(client=False, max_message_size=None)
    extension.accept("permessage-deflate")
    connections.append(Connection(SERVER, [extension]))
    for connection in connections:
        assert install_buffer(connection) is not None
        for part in (b"ab", b"cd"):
            connection.receive_data(
                frame(
                    Opcode.BINARY if part == b"ab" else Opcode.CONTINUATION,
                    part,
                    fin=part == b"cd",
                    mask=not connection.client,
                )
            )
        kinds = {type(event.data) for event in connection.events()}
        assert kinds == {bytes}, broken(
            f"BytesMessage.data is {kinds} (client={connection.client})",
            "trio_ws._wire.protocol.Protocol._on_data and trio_ws._wire.events.length() "
            "(messages are str | bytes)",
            "applications receive bytearray, and the queue's byte count is wrong",
        )


# -- a fresh Protocol has every fast path in place ---------------------------


@pytest.mark.parametrize("kind", [SERVER, CLIENT])
def test_fresh_protocol_has_the_fast_paths(kind: ConnectionType) -> None:
    connection = Connection(kind)
    protocol = Protocol(connection, 1024)
    decoder = getattr(getattr(connection, "_proto", None), "_frame_decoder", None)
    buffer = protocol._buffer  # type: ignore[attr-defined]
    installed = isinstance(buffer, FrameBuffer) and getattr(decoder, "buffer", None) is buffer
    assert installed, broken(
        "trio_ws._wire.framing.install_buffer found no Buffer at "
        "Connection._proto._frame_decoder.buffer",
        "trio_ws._wire.protocol.Protocol (the copy-free reader)",
        "the copy-free reader is off (slower, still correct); update _framing.py",
    )
    check = protocol._between_messages  # type: ignore[attr-defined]
    assert check is not None, broken(
        "trio_ws._wire.framing.between_messages returned None on a fresh connection "
        "(FrameDecoder.header, MessageDecoder.opcode or the buffer not as expected)",
        "trio_ws._wire.protocol.Protocol.receive_data (whole_messages fast path)",
        "every message goes through wsproto's parser (slower, still correct)",
    )
    assert check() is True, broken(
        "between_messages() is False on a fresh connection (FrameDecoder.header "
        "or MessageDecoder.opcode not None)",
        "trio_ws._wire.protocol.Protocol.receive_data (whole_messages fast path)",
        "every message goes through wsproto's parser (slower, still correct)",
    )
    assert decoder is not None
    assert protocol._decoder is decoder, broken(  # type: ignore[attr-defined]
        "trio_ws._wire.framing.frame_decoder found no FrameDecoder with .header and "
        ".payload_consumed",
        "trio_ws._wire.protocol.Protocol._announced_too_big",
        "over-sized messages are refused only after they are buffered whole",
    )
    assert type(connection._events) is not deque, broken(  # type: ignore[attr-defined]
        "trio_ws._wire.framing.slim_event_queue left Connection._events alone",
        "trio_ws._wire.protocol.Protocol",
        "every idle connection takes about 760 bytes more",
    )
    if _masking.speedups_available() and not os.environ.get("TRIO_WS_NO_SPEEDUPS"):
        assert wsproto.frame_protocol.XorMaskerSimple is _masking.Masker, broken(
            "frame_protocol.XorMaskerSimple is not trio_ws's Masker",
            "trio_ws._wire.masking.install",
            "masking stays pure Python",
        )

    # The fast path reads a whole message without wsproto...
    fed: list[bytes] = []
    receive = connection.receive_data
    connection.receive_data = lambda data: (fed.append(data), receive(data))[1]  # type: ignore[method-assign]
    masked = kind is SERVER
    assert protocol.receive_data(frame(Opcode.TEXT, b"fast", mask=masked)) == ["fast"]
    assert fed == [], "a whole small message went through wsproto: the fast path is off"
    # ...leaves a fragmented one to wsproto, and is back once it has ended.
    protocol.receive_data(frame(Opcode.BINARY, b"a", fin=False, mask=masked))
    assert check() is False, broken(
        "between_messages() is True in the middle of a fragmented message",
        "trio_ws._wire.framing.whole_messages",
        "frames in the middle of a message would be read as whole messages",
    )
    assert protocol.receive_data(frame(Opcode.CONTINUATION, b"b", mask=masked)) == [b"ab"]
    assert fed, "a fragmented message did not go through wsproto"
    back = check() is True and decoder.buffer is buffer
    assert back, broken(
        "after a message parsed by wsproto, its decoder is not back between "
        "messages with our FrameBuffer",
        "trio_ws._wire.framing.between_messages",
        "the whole-message fast path switches off for the rest of the connection",
    )
    # A frame announced over the limit is refused at its header.
    head = frame(Opcode.BINARY, bytes(5000), mask=masked)[: 8 if masked else 4]  # the header alone
    refused = protocol.receive_data(head)
    assert [type(item) for item in refused] == [Failure], broken(
        "a frame header announcing more than max_message_size is not refused "
        "before its payload arrives",
        "trio_ws._wire.protocol.Protocol._announced_too_big (FrameDecoder.header)",
        "over-sized messages are buffered whole before they are refused",
    )


def test_trailing_handshake_bytes_are_carried_into_frame_buffer() -> None:
    early = frame(Opcode.TEXT, b"early", mask=False)
    connection = Connection(CLIENT, trailing_data=early)
    protocol = Protocol(connection, None)
    buffer = protocol._buffer  # type: ignore[attr-defined]
    carried = isinstance(buffer, FrameBuffer) and len(buffer) == len(early)
    assert carried, broken(
        "the bytes that came with the 101 response are not in the installed FrameBuffer",
        "trio_ws._wire.framing.install_buffer (Connection(trailing_data=...))",
        "a message the server sent right after accepting is lost, or the copy-free reader is off",
    )
    assert protocol.receive_data(b"") == ["early"]
