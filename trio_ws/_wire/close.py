"""Close codes and the record of how a connection ended."""

from __future__ import annotations

import enum
from typing import Literal

import attrs

__all__ = ["CloseCode", "CloseInfo", "check_close_code", "check_close_reason"]


class CloseCode(enum.IntEnum):
    """Close codes of RFC 6455 section 7.4.1 and the IANA registry.

    An application may also use 3000-4999. What each code means, and when
    the library uses it, is in docs/closing.md.
    """

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    #: Never sent: means the peer's close frame carried no code.
    NO_STATUS_RCVD = 1005
    #: Never sent: means the connection ended without a close frame.
    ABNORMAL_CLOSURE = 1006
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    #: Never sent: means the TLS handshake failed.
    TLS_HANDSHAKE = 1015


#: Codes that end ``async for`` quietly instead of raising.
OK_CODES = frozenset({CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY})

#: Codes that may only be reported locally, never put in a close frame.
_LOCAL_ONLY = frozenset({1004, 1005, 1006, 1015})

#: A close reason must fit in a control frame together with the 2-byte code.
MAX_REASON_BYTES = 123


def check_close_code(code: int) -> int:
    """Return ``code`` if an endpoint may send it in a close frame, else raise ValueError."""
    if code in _LOCAL_ONLY or not (1000 <= code <= 1014 or 3000 <= code <= 4999):
        raise ValueError(
            f"close code {code} cannot be sent: use 1000-1003, 1007-1014 or 3000-4999"
        )
    return int(code)


def check_close_reason(reason: str) -> str:
    """Return ``reason`` if it fits in a close frame, else raise ValueError."""
    size = len(reason.encode("utf-8"))
    if size > MAX_REASON_BYTES:
        raise ValueError(
            f"close reason is {size} bytes in UTF-8; at most {MAX_REASON_BYTES} fit a close frame"
        )
    return reason


def describe_code(code: int) -> str:
    """``'1001 (going away)'`` for known codes, the number alone otherwise."""
    try:
        name = CloseCode(code).name.replace("_", " ").lower()
    except ValueError:
        return str(code)
    return f"{code} ({name})"


@attrs.frozen
class CloseInfo:
    """How a connection ended.

    ``code`` and ``reason`` are those of the close frame that settled the
    close: the peer's frame when it sent one (RFC 6455 7.1.5), the frame we
    sent when we failed the connection (for example 1009 or 1002), and 1006
    when the TCP connection ended without any close frame.
    """

    #: The close code (see :class:`CloseCode`), a plain int: an IntEnum such
    #: as wsproto's CloseReason would print as its name on Python 3.10.
    code: int = attrs.field(converter=int)
    #: The close reason, possibly empty.
    reason: str
    #: ``"local"`` when this side started the close, ``"peer"`` when the other did.
    initiator: Literal["local", "peer"]
    #: The library's own explanation when the library, not an application,
    #: ended the connection ("message too big", "protocol error: ...",
    #: "connection lost without a close frame", "server shutdown", ...).
    cause: str | None = None

    @property
    def by_peer(self) -> bool:
        """True when the peer started the close (or vanished)."""
        return self.initiator == "peer"

    @property
    def ok(self) -> bool:
        """True for a 1000 or 1001 close: the ending was expected."""
        return self.code in OK_CODES

    def __str__(self) -> str:
        who = "peer" if self.by_peer else "we"
        text = f"{who} closed the connection with {describe_code(self.code)}"
        if self.reason:
            text += f" {self.reason!r}"
        if self.cause:
            text += f": {self.cause}"
        return text
