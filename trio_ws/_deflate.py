"""permessage-deflate (RFC 7692): settings, and wsproto's extension adapted.

wsproto negotiates and applies the extension; the subclass here adds what a
server on the open internet needs: decompression bounded by
``max_message_size`` (a few kilobytes of deflate can inflate to gigabytes),
zlib's memory and compression levels, messages sent uncompressed on request,
and safe window sizes when the peer's answer leaves them out.
"""

from __future__ import annotations

import zlib
from typing import Any

import attrs
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

__all__ = ["Deflate", "DeflateExtension"]

#: The largest LZ77 window: what a peer may use unless told otherwise.
MAX_WINDOW_BITS = 15


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
    what they send) within a 4 KiB window. See docs/compression.md for the
    measurements behind them.
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

    # -- negotiation -----------------------------------------------------------

    def accept(self, offer: str) -> bool | str | None:
        """Server side: answer a client's offer. Our own window preferences
        are applied where the client allows them."""
        names = {part.split("=")[0].strip() for part in offer.split(";")[1:]}
        response = super().accept(offer)
        if response is None:
            return None
        if "client_max_window_bits" not in names:
            # The client did not let us limit its window: it may use 15.
            self.client_max_window_bits = MAX_WINDOW_BITS
        elif self.client_max_window_bits > self.settings.client_max_window_bits:
            self.client_max_window_bits = self.settings.client_max_window_bits
        if self.server_max_window_bits > self.settings.server_max_window_bits:
            # wsproto echoes the client's limit; we may always use less (and
            # may do so silently when the client set no limit).
            self.server_max_window_bits = self.settings.server_max_window_bits
        return self._response(names)

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

    # -- receiving ---------------------------------------------------------------

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
