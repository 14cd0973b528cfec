"""Settings shared by client and server connections, documented once."""

from __future__ import annotations

import math
from typing import Any

import attrs

from ._wire.deflate import Deflate

__all__ = ["Options", "at_least_one", "check_connect_options", "positive"]

#: Keyword arguments of connect() and start_connection() that are not Options.
_CONNECTION_ARGUMENTS = frozenset({"subprotocols", "headers", "ssl_context"})


def positive(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    """attrs validator: a positive number."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{attribute.name} must be a positive number, not {value!r}")


def at_least_one(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    """attrs validator: a number >= 1."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 1:
        raise ValueError(f"{attribute.name} must be a number >= 1, not {value!r}")


def _positive_or_none(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        positive(_, attribute, value)


def _positive_int_or_none(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive integer or None, not {value!r}")


def _positive_int(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive integer, not {value!r}")


@attrs.frozen(kw_only=True)
class Options:
    """Connection settings accepted by :func:`connect`, :func:`start_connection`
    and :func:`serve` as keyword arguments of the same names.

    Every timeout is a Trio cancel scope inside the library: ``None`` turns it
    off, and any call can also be wrapped in your own
    ``trio.move_on_after``/``fail_after``.
    """

    #: Seconds allowed for opening a connection: TCP connect, TLS handshake
    #: and the HTTP upgrade, together. On the server, a client that has not
    #: completed its handshake by then is dropped.
    open_timeout: float | None = attrs.field(default=10.0, validator=_positive_or_none)
    #: Seconds allowed for the closing handshake and the TCP shutdown that
    #: follows; after that the connection is aborted.
    close_timeout: float | None = attrs.field(default=10.0, validator=_positive_or_none)
    #: Largest message accepted, in bytes (UTF-8 bytes for text), summed over
    #: all its fragments. A bigger one closes the connection with 1009.
    #: ``None`` means no limit.
    max_message_size: int | None = attrs.field(default=2**20, validator=_positive_int_or_none)
    #: Received messages buffered while the application is not receiving.
    #: When the buffer is full the library stops reading the socket until the
    #: application catches up, so memory stays bounded (see
    #: ``max_queue_bytes``).
    max_queue: int = attrs.field(default=16, validator=_positive_int)
    #: The same buffer's limit in bytes (characters for text), counted after
    #: decompression: reading stops once the buffered messages reach it, so
    #: the buffer holds at most ``max_queue_bytes`` plus one message (``None``:
    #: only ``max_queue`` counts). A peer that uploads highly compressed data
    #: and never reads cannot make a connection hold more than that.
    max_queue_bytes: int | None = attrs.field(default=2**20, validator=_positive_int_or_none)
    #: Seconds between keepalive pings; ``None`` sends none. Keepalive is what
    #: notices a peer that vanished without closing (a laptop that slept, a
    #: NAT that dropped its state).
    ping_interval: float | None = attrs.field(default=20.0, validator=_positive_or_none)
    #: Seconds a keepalive ping may take, its own write included, before the
    #: connection is closed with 1011 "keepalive timeout" (and aborted if even
    #: the close frame cannot be written within ``close_timeout``). The clock
    #: stops while the library is not reading because ``max_queue`` is full:
    #: an application that is busy is not a dead peer. ``None``: wait forever.
    ping_timeout: float | None = attrs.field(default=20.0, validator=_positive_or_none)
    #: Outgoing messages with more payload bytes than this are sent as
    #: several frames of at most that size (for a compressed text message,
    #: that many characters before compression), written back to back, for
    #: peers that limit the size of a frame. The peer receives whole messages
    #: all the same. ``None``: one frame per message.
    frame_size: int | None = attrs.field(default=1048576, validator=_positive_int_or_none)
    #: permessage-deflate settings (:class:`Deflate`), offered by a client and
    #: accepted by a server when the peer asks for it; ``None`` turns
    #: compression off. See docs/compression.md.
    compression: Deflate | None = attrs.field(
        factory=Deflate, validator=attrs.validators.optional(attrs.validators.instance_of(Deflate))
    )

    @property
    def close_seconds(self) -> float:
        """``close_timeout`` as a number (infinity for None)."""
        return math.inf if self.close_timeout is None else self.close_timeout

    @property
    def queue_bytes(self) -> float:
        """``max_queue_bytes`` as a number (infinity for None)."""
        return math.inf if self.max_queue_bytes is None else self.max_queue_bytes

    @property
    def ping_seconds(self) -> float:
        """``ping_timeout`` as a number (infinity for None)."""
        return math.inf if self.ping_timeout is None else self.ping_timeout

    @property
    def open_seconds(self) -> float:
        """``open_timeout`` as a number (infinity for None)."""
        return math.inf if self.open_timeout is None else self.open_timeout


def check_connect_options(connect_options: dict[str, Any]) -> None:
    """Raise now, not at the first connection attempt, for unknown or invalid
    keyword arguments of :func:`connect`."""
    Options(**{k: v for k, v in connect_options.items() if k not in _CONNECTION_ARGUMENTS})
