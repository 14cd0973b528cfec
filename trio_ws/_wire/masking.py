"""Fast payload masking for wsproto.

wsproto XORs every masked payload (every frame a client sends, every frame
a server receives) in pure Python: about 1 us for a small frame and 70 us
per 64 KiB. When trio_ws's optional compiled routine (``_speedups``) is
available, :func:`install` points wsproto at a masker that uses it; the
results are byte for byte the same, only faster. Without a C compiler at
install time, or with ``TRIO_WS_NO_SPEEDUPS=1`` in the environment,
wsproto's own masker stays in place.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import wsproto.frame_protocol

_mask: Callable[[bytes | bytearray | memoryview, bytes, int], bytes] | None
try:
    from .._speedups import mask as _mask
except ImportError:  # pragma: no cover - built wherever a compiler exists
    _mask = None

__all__ = ["WSPROTO_MASKER", "Masker", "install", "mask", "speedups_available"]

#: wsproto's own pure-Python masker, whatever install() does.
WSPROTO_MASKER = wsproto.frame_protocol.XorMaskerSimple


def speedups_available() -> bool:
    """True when the compiled masking routine could be imported."""
    return _mask is not None


class Masker:
    """A drop-in for ``wsproto.frame_protocol.XorMaskerSimple``: XOR with a
    4-byte key, continuing where the previous chunk of the frame ended."""

    __slots__ = ("_key", "_offset")

    def __init__(self, masking_key: bytes | bytearray) -> None:
        self._key = bytes(masking_key)
        self._offset = 0

    def process(self, data: bytes | bytearray) -> bytes:
        assert _mask is not None
        result: bytes = _mask(data, self._key, self._offset)
        self._offset = (self._offset + len(data)) & 3
        return result


def install() -> bool:
    """Make wsproto use :class:`Masker`; return whether it does."""
    if _mask is None or os.environ.get("TRIO_WS_NO_SPEEDUPS"):
        return False
    wsproto.frame_protocol.XorMaskerSimple = Masker  # type: ignore[misc, assignment]
    return True


#: Whether wsproto masks with the compiled routine in this process.
ACTIVE = install()


def mask(data: bytes | memoryview, key: bytes) -> bytes:
    """XOR a whole frame's payload with its 4-byte masking key."""
    if ACTIVE:
        assert _mask is not None
        return _mask(data, key, 0)
    return bytes(WSPROTO_MASKER(key).process(data))  # type: ignore[arg-type]
