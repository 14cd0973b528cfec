"""permessage-deflate (RFC 7692): settings, and wsproto's extension adapted.

wsproto negotiates and applies the extension; the subclass here adds what a
server on the open internet needs: decompression bounded by
``max_message_size`` (a few kilobytes of deflate can inflate to gigabytes),
zlib's memory and compression levels, messages sent uncompressed on request
or when they look incompressible (:func:`worth_deflating`), and safe window
sizes when the peer's answer leaves them out.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

import attrs
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

__all__ = ["Deflate", "DeflateExtension", "parse_offer", "worth_deflating"]

#: The largest LZ77 window: what a peer may use unless told otherwise.
MAX_WINDOW_BITS = 15

#: Binary messages of at least this many bytes are sampled before they are
#: deflated (see :func:`worth_deflating`); shorter ones cost little to deflate.
SAMPLE_FROM = 1024
#: The sample: this many bytes from the start, the middle and the end.
SAMPLE_SLICE = 128
#: A sample with this many distinct byte values or more looks incompressible.
#: 384 random bytes hold 199 on average (standard deviation about 5); every
#: kind of compressible data measured held at most 141 (docs/compression.md).
INCOMPRESSIBLE_DISTINCT = 170


def worth_deflating(data: bytes | bytearray | memoryview) -> bool:
    """Whether deflate is likely to shrink a binary message: False when a
    sample of it (three slices of SAMPLE_SLICE bytes, from its start, middle
    and end) holds INCOMPRESSIBLE_DISTINCT distinct byte values or more, as
    random, encrypted or already compressed data does (and arrays of noisy
    floats, which deflate shrinks by 5% at most); text, JSON, base64, UTF-8
    text of the scripts measured, integer arrays and binary records hold far
    fewer. True for messages shorter than SAMPLE_FROM bytes, which are not
    sampled. About 4 µs, whatever the size."""
    if type(data) is memoryview and (data.format != "B" or data.ndim != 1):
        if not data.c_contiguous:
            return True
        data = data.cast("B")
    size = len(data)
    if size < SAMPLE_FROM:
        return True
    middle = (size - SAMPLE_SLICE) // 2
    seen = set(data[:SAMPLE_SLICE])
    seen.update(data[middle : middle + SAMPLE_SLICE])
    seen.update(data[size - SAMPLE_SLICE :])
    return len(seen) < INCOMPRESSIBLE_DISTINCT


#: The parameters of a permessage-deflate offer (RFC 7692 7.1).
_FLAGS = ("server_no_context_takeover", "client_no_context_takeover")
_PARAMETERS = frozenset((*_FLAGS, "server_max_window_bits", "client_max_window_bits"))

_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_QUOTED_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
#: A window size: a decimal from 8 to 15 without leading zeros (RFC 7692 7.1.2).
_WINDOW_BITS = re.compile(r"8|9|1[0-5]")


def _unquote(value: str) -> str | None:
    """An extension parameter's value as text: a token as it is, a quoted
    string (RFC 7230 3.2.6) without its quotes and escapes; None when it is
    neither."""
    if _TOKEN.fullmatch(value):
        return value
    quoted = _QUOTED_STRING.fullmatch(value)
    return None if quoted is None else _QUOTED_PAIR.sub(r"\1", quoted.group(1))


def parse_offer(offer: str) -> dict[str, str | None] | None:
    """The parameters of one permessage-deflate offer (the extension name
    and its ``;``-separated parameters, as wsproto hands it over), by name,
    each with its unquoted value or None when it has none. None when the
    offer is malformed: an empty, unknown or repeated parameter, or a value
    that is neither a token nor a quoted string."""
    parameters: dict[str, str | None] = {}
    for part in offer.split(";")[1:]:
        name, equals, raw = part.partition("=")
        name = name.strip()
        if name not in _PARAMETERS or name in parameters:
            return None
        value = _unquote(raw.strip()) if equals else None
        if equals and value is None:
            return None
        parameters[name] = value
    return parameters


def _window_value(value: str | None) -> int:
    """A window size parameter's value; 0 when it is missing or invalid."""
    return int(value) if value is not None and _WINDOW_BITS.fullmatch(value) else 0


def _window_bits(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 9 <= value <= 15:
        raise ValueError(f"{attribute.name} must be an integer from 9 to 15, not {value!r}")


def _between(low: int, high: int) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(
                f"{attribute.name} must be an integer from {low} to {high}, not {value!r}"
            )

    return check


def _boolean(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{attribute.name} must be True or False, not {value!r}")


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{attribute.name} must be a non-negative integer, not {value!r}")


@attrs.frozen(kw_only=True)
class Deflate:
    """permessage-deflate settings, for ``compression=`` on :func:`connect`
    and :func:`serve` (``compression=None`` turns compression off).

    The defaults keep an idle connection small and let a server compress a
    broadcast once for all its recipients: the server compresses each message
    on its own (``server_no_context_takeover``), so it keeps no compressor
    between messages, while clients keep their context (better ratios for
    what they send) within a 4 KiB window. Binary messages that look
    incompressible go out uncompressed (``skip_incompressible``). See
    docs/compression.md for the measurements behind them.
    """

    #: The server's LZ77 window (9-15): bigger compresses better and costs
    #: ``2 ** bits`` bytes in each side's zlib state.
    server_max_window_bits: int = attrs.field(default=12, validator=_window_bits)
    #: The client's window; a server asks the client to use at most this.
    client_max_window_bits: int = attrs.field(default=12, validator=_window_bits)
    #: The server compresses each message on its own, keeping no compressor
    #: between messages (less memory; needed to compress a broadcast once).
    server_no_context_takeover: bool = True
    #: The client compresses each message on its own.
    client_no_context_takeover: bool = False
    #: zlib's compression level, 1 (fast) to 9 (small).
    level: int = attrs.field(default=6, validator=_between(1, 9))
    #: zlib's memory level, 1 to 9: its buffer is ``2 ** (level + 9)`` bytes.
    memory_level: int = attrs.field(default=5, validator=_between(1, 9))
    #: Messages shorter than this many bytes are sent uncompressed: deflate
    #: gains little on them and costs time.
    min_size: int = attrs.field(default=16, validator=_non_negative)
    #: Whole binary messages of 1 KiB or more whose sample looks random
    #: (already compressed, encrypted or random data) are sent uncompressed,
    #: since deflate would cost time for nothing. Text messages and streamed
    #: ones are not sampled.
    skip_incompressible: bool = attrs.field(default=True, validator=_boolean)

    def extension(self, *, client: bool, max_message_size: int | None) -> DeflateExtension:
        """A fresh wsproto extension object for one connection."""
        return DeflateExtension(self, client=client, max_message_size=max_message_size)


class DeflateExtension(PerMessageDeflate):
    """wsproto's permessage-deflate with bounded inflation and our settings."""

    def __init__(self, settings: Deflate, *, client: bool, max_message_size: int | None) -> None:
        super().__init__(
            client_no_context_takeover=settings.client_no_context_takeover,
            client_max_window_bits=settings.client_max_window_bits,
            server_no_context_takeover=settings.server_no_context_takeover,
            server_max_window_bits=settings.server_max_window_bits,
        )
        self.settings = settings
        self._client = client
        self._max_size = max_message_size
        self._inflated = 0  # bytes inflated so far in the current message
        self._in_control = False  # the frame being read is a control frame
        #: Set before framing a message to send it uncompressed (RSV1 clear).
        self.skip_next = False
        self._skipping = False
        #: Flush each frame of a fragmented message (a streamed one, whose
        #: pieces the peer should get at once), not only its last.
        self.flush_fragments = True

    def leaves_uncompressed(self, message: str | bytes | bytearray | memoryview) -> bool:
        """Whether a whole message goes out uncompressed although it may be
        compressed: shorter than ``min_size``, or binary data that does not
        look worth deflating (``skip_incompressible``)."""
        settings = self.settings
        if len(message) < settings.min_size:
            return True
        return (
            settings.skip_incompressible
            and not isinstance(message, str)
            and not worth_deflating(message)
        )

    # -- negotiation -----------------------------------------------------------

    def accept(self, offer: str) -> bool | str | None:
        """Server side: answer one of the client's offers with the response's
        parameters, or None to decline it. Our own preferences apply where the
        offer allows them.

        wsproto hands over every offer of the header in the client's order of
        preference: the first acceptable one is taken and the rest declined.
        An offer is declined (RFC 7692 5, 7.1) when it is malformed (an
        unknown or repeated parameter, a value that is neither a token nor a
        quoted string, a flag with a value, a window size outside 8-15 or with
        leading zeros, ``server_max_window_bits`` without a value) or asks
        for an 8-bit window, which zlib cannot honour. Nothing is changed by a
        declined offer; quoted values count as their unquoted text."""
        if self._enabled:
            return None
        parameters = parse_offer(offer)
        if parameters is None:
            return None
        windows = self._windows(parameters)
        if windows is None:
            return None
        self.server_max_window_bits, self.client_max_window_bits = windows
        self.server_no_context_takeover = (
            self.settings.server_no_context_takeover or "server_no_context_takeover" in parameters
        )
        self.client_no_context_takeover = (
            self.settings.client_no_context_takeover or "client_no_context_takeover" in parameters
        )
        self._enabled = True
        return self._response(set(parameters))

    def _windows(self, parameters: dict[str, str | None]) -> tuple[int, int] | None:
        """The (server, client) window sizes to agree to for an offer's
        parameters, or None when the offer must be declined."""
        if any(parameters.get(flag) is not None for flag in _FLAGS):
            return None
        server = self.settings.server_max_window_bits
        if "server_max_window_bits" in parameters:
            # We may always use a smaller window than the client allows.
            server = min(server, _window_value(parameters["server_max_window_bits"]))
        if "client_max_window_bits" not in parameters:
            client = MAX_WINDOW_BITS  # the client did not let us limit its window
        elif parameters["client_max_window_bits"] is None:
            client = self.settings.client_max_window_bits
        else:
            value = _window_value(parameters["client_max_window_bits"])
            client = min(value, self.settings.client_max_window_bits)
        if min(server, client) < 9:
            return None  # invalid (0), or 8 bits: zlib cannot
        return server, client

    def _response(self, offered: set[str]) -> str:
        # RFC 7692 7.1.2: the window parameters appear in a response only
        # when the offer had them.
        parameters = []
        if self.server_no_context_takeover:
            parameters.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parameters.append("client_no_context_takeover")
        if "server_max_window_bits" in offered:
            parameters.append(f"server_max_window_bits={self.server_max_window_bits}")
        if "client_max_window_bits" in offered:
            parameters.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parameters)

    def offer(self) -> bool | str:
        """Client side: offer the extension, letting the server choose our
        window, asking for its window to stay within our setting."""
        parameters = ["client_max_window_bits"]
        parameters.append(f"server_max_window_bits={self.settings.server_max_window_bits}")
        if self.settings.client_no_context_takeover:
            parameters.append("client_no_context_takeover")
        if self.settings.server_no_context_takeover:
            parameters.append("server_no_context_takeover")
        return "; ".join(parameters)

    def finalize(self, offer: str) -> None:
        """Client side: apply the server's response."""
        names = {part.split("=")[0].strip() for part in offer.split(";")[1:]}
        # What the response leaves out is at its widest: 15 bits, context kept.
        self.server_max_window_bits = MAX_WINDOW_BITS
        self.client_max_window_bits = self.settings.client_max_window_bits
        self.server_no_context_takeover = False
        self.client_no_context_takeover = self.settings.client_no_context_takeover
        super().finalize(offer)
        if "server_max_window_bits" not in names:
            self.server_max_window_bits = MAX_WINDOW_BITS

    # -- sending -----------------------------------------------------------------

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        if opcode is not Opcode.CONTINUATION and self._compressible_opcode(opcode):
            self._skipping = self.skip_next
            self.skip_next = False
        if self._skipping and self._compressible_opcode(opcode):
            if fin:
                self._skipping = False
            return rsv, data  # sent as it is, RSV1 clear
        if not self._compressible_opcode(opcode):
            return super().frame_outbound(proto, opcode, rsv, data, fin)
        if self._compressor is None:
            bits = self.client_max_window_bits if proto.client else self.server_max_window_bits
            self._compressor = zlib.compressobj(
                self.settings.level, zlib.DEFLATED, -bits, self.settings.memory_level
            )
        if fin or not self.flush_fragments:
            return super().frame_outbound(proto, opcode, rsv, data, fin)
        # A frame of a streamed message: flush it, so that the peer can
        # inflate it now rather than when the message ends. The flush marker
        # stays in (only the message's final one is removed, RFC 7692 7.2.1).
        if opcode is not Opcode.CONTINUATION:
            rsv = RsvBits(True, rsv.rsv2, rsv.rsv3)
        compressed = self._compressor.compress(bytes(data))
        return rsv, compressed + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    def deflate_message(self, data: bytes | bytearray, client: bool) -> bytes | memoryview:
        """Compress a whole message sent as one frame, outside wsproto (see
        ``Protocol.encode_message``): the payload wsproto would frame, byte
        for byte, with the same compressor, kept or dropped afterwards as the
        context takeover settings say."""
        compressor = self._compressor
        if compressor is None:
            bits = self.client_max_window_bits if client else self.server_max_window_bits
            compressor = self._compressor = zlib.compressobj(
                self.settings.level, zlib.DEFLATED, -bits, self.settings.memory_level
            )
        out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if self.client_no_context_takeover if client else self.server_no_context_takeover:
            self._compressor = None
        # Without the final empty stored block (RFC 7692 7.2.1); a view of a
        # large payload rather than a copy.
        return out[:-4] if len(out) < 4096 else memoryview(out)[:-4]

    # -- receiving ---------------------------------------------------------------

    def inflate_message(self, data: bytes, client: bool) -> bytes | CloseReason:
        """Decompress a whole message that came in one frame with RSV1 set,
        read outside wsproto while it was between messages (see
        ``Protocol.receive_data``): with the decompressor wsproto's path
        uses, bounded by ``max_message_size`` as there, then kept or dropped
        as the context takeover settings say. A CloseReason on failure
        (invalid data, or too big), after which nothing more is parsed."""
        if self._decompressor is None:
            bits = self.server_max_window_bits if client else self.client_max_window_bits
            self._decompressor = zlib.decompressobj(-bits)
        self._inflated = 0
        if len(data) < 4096:  # one call; a copy of a large payload costs more
            out = self._inflate(data + b"\x00\x00\xff\xff")
        else:
            out = self._inflate(data)
            if not isinstance(out, CloseReason):
                tail = self._inflate(b"\x00\x00\xff\xff")
                if isinstance(tail, CloseReason):
                    out = tail
                elif tail:
                    out += tail
        self._inflated = 0
        if self.server_no_context_takeover if client else self.client_no_context_takeover:
            self._decompressor = None
        return out

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        # wsproto lets a control frame (a ping between two fragments of a
        # compressed message) reset the message's compression state; control
        # frames are kept out of it here, in all three inbound hooks.
        self._in_control = opcode.iscontrol()
        if self._in_control:
            return CloseReason.PROTOCOL_ERROR if rsv.rsv1 else RsvBits(False, False, False)
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def _room(self) -> int:
        """How many more inflated bytes the current message may take."""
        if self._max_size is None:
            return 0  # unbounded
        return self._max_size - self._inflated

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        assert self._decompressor is not None
        try:
            if self._max_size is None:
                return self._decompressor.decompress(data)
            room = self._room()
            out = self._decompressor.decompress(data, room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if len(out) > room:
            return CloseReason.MESSAGE_TOO_BIG
        self._inflated += len(out)
        return out

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if self._in_control or not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(bytes(data))

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if self._in_control or not fin:
            return None
        if not self._inbound_is_compressible or not self._inbound_compressed:
            self._inbound_compressed = None
            self._inflated = 0
            return None
        tail = self._inflate(b"\x00\x00\xff\xff")
        self._inflated = 0
        if isinstance(tail, CloseReason):
            return tail
        assert self._decompressor is not None
        if proto.client:
            no_context_takeover = self.server_no_context_takeover
        else:
            no_context_takeover = self.client_no_context_takeover
        if no_context_takeover:
            self._decompressor = None
        self._inbound_compressed = None
        return tail

    def __repr__(self) -> str:
        state = "negotiated" if self._enabled else "not negotiated"
        return (
            f"<DeflateExtension {state}: server {self.server_max_window_bits} bits"
            f"{', no context' if self.server_no_context_takeover else ''}, client "
            f"{self.client_max_window_bits} bits"
            f"{', no context' if self.client_no_context_takeover else ''}>"
        )
