"""The backplane's wire format: one message between nodes (no I/O).

An envelope is a fixed binary header followed by the raw payload; nothing is
pickled, so a node only ever parses bytes it understands::

    offset size
    0      1    magic (0xB5)
    1      1    kind: bit 0 binary (else text), bit 1 direct send, bit 2 probe,
                bit 3 sequence restart
    2      2    count of ids that follow the header (unsigned, big-endian)
    4      4    origin node number
    8      8    sequence number: per origin node and channel, from 1
    16     8*n  ids: the excluded connections, or the one target of a direct send
    ...         payload: the message (UTF-8 for text)

Sequence numbers let a receiver tell a gap (a number skipped: messages lost
between the origin's outbox and this node) from a duplicate (a number seen
before: a batch republished after a failed write).
"""

from __future__ import annotations

import struct
from collections.abc import Collection

import attrs

__all__ = ["Envelope", "EnvelopeError", "decode", "encode"]

MAGIC = 0xB5
BINARY = 1
DIRECT = 2
PROBE = 4
#: The first envelope on a channel since the origin (re)started its counter:
#: no gap to look for before it.
RESTART = 8

_HEADER = struct.Struct("!BBHIQ")
HEADER_SIZE = _HEADER.size
MAX_IDS = 0xFFFF


class EnvelopeError(ValueError):
    """Bytes on a backplane channel that are not an envelope of ours."""


@attrs.frozen
class Envelope:
    """One decoded message between nodes."""

    kind: int
    origin: int
    seq: int
    ids: tuple[int, ...]
    payload: bytes

    def message(self) -> str | bytes:
        """The payload as the application sent it: str for text, bytes for binary."""
        if self.kind & BINARY:
            return self.payload
        return self.payload.decode("utf-8")


def encode(
    message: str | bytes, origin: int, seq: int, ids: Collection[int] = (), kind: int = 0
) -> bytes:
    """One envelope: ``message`` from node ``origin`` with sequence number
    ``seq``, carrying ``ids`` (excluded connections, or a direct send's target)."""
    if len(ids) > MAX_IDS:
        raise ValueError(f"at most {MAX_IDS} ids fit in one envelope, not {len(ids)}")
    if type(message) is str:
        payload = message.encode("utf-8")
    else:
        payload = message  # type: ignore[assignment]
        kind |= BINARY
    head = _HEADER.pack(MAGIC, kind, len(ids), origin, seq)
    if ids:
        head += struct.pack(f"!{len(ids)}Q", *ids)
    return head + payload


def decode(data: bytes) -> Envelope:
    """Parse one envelope; EnvelopeError if ``data`` is not one."""
    if len(data) < HEADER_SIZE:
        raise EnvelopeError(f"{len(data)} bytes is shorter than an envelope header")
    magic, kind, count, origin, seq = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise EnvelopeError(f"not a trio_ws envelope (first byte {magic:#x})")
    end = HEADER_SIZE + 8 * count
    if len(data) < end:
        raise EnvelopeError(f"envelope announces {count} ids but has {len(data)} bytes")
    ids = struct.unpack_from(f"!{count}Q", data, HEADER_SIZE) if count else ()
    return Envelope(kind, origin, seq, ids, bytes(data[end:]))
