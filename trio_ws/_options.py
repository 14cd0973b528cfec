"""Settings shared by client and server connections, documented once."""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable
from typing import Any, TypedDict

import attrs

from ._wire.deflate import Deflate

__all__ = ["ConnectionOptions", "Options", "at_least_one", "options_from", "positive"]


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
    """Connection settings: the ``**options`` keyword arguments of
    :func:`connect`, :func:`start_connection`, :func:`serve`,
    :func:`serve_listeners`, :func:`reconnect`, :func:`open_pool` and
    :meth:`Worker.serve`, one attribute per option, of the same name. Those
    functions check them when called: an unknown name raises TypeError naming
    the closest valid one, a bad value ValueError (TypeError for a
    ``compression`` that is not a :class:`Deflate`). For type checkers the
    same options are the keys of :class:`ConnectionOptions`.

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


class ConnectionOptions(TypedDict, total=False):
    """The connection options as keyword arguments, for type checkers and
    editors: ``**options: Unpack[ConnectionOptions]`` in the signature of
    every function that takes them (see :class:`Options`), so that mypy or
    pyright rejects a misspelt name or a value of the wrong type, and an
    editor completes the names. Each key is the :class:`Options` attribute
    of the same name, with the same type, meaning and default; every key
    may be left out.

    It also types settings shared by several calls::

        SETTINGS: trio_ws.ConnectionOptions = {"ping_interval": 5.0, "max_queue": 64}

        async with trio_ws.connect(url, **SETTINGS) as ws:
            ...
    """

    open_timeout: float | None
    close_timeout: float | None
    max_message_size: int | None
    max_queue: int
    max_queue_bytes: int | None
    ping_interval: float | None
    ping_timeout: float | None
    frame_size: int | None
    compression: Deflate | None


#: The option names, in the order of Options' attributes.
_OPTION_NAMES = tuple(field.name for field in attrs.fields(Options))


def options_from(options: ConnectionOptions, accepted_by: Callable[..., object]) -> Options:
    """``Options(**options)`` for the ``**options`` given to ``accepted_by``
    (a public function), with an error that says what to write instead: an
    unknown name raises TypeError naming the closest of ``accepted_by``'s
    keyword arguments; a bad value raises ValueError (or TypeError) naming
    the option."""
    for name in options:
        if name not in _OPTION_NAMES:
            raise TypeError(_unknown_option(name, accepted_by))
    return Options(**options)


def _unknown_option(name: str, accepted_by: Callable[..., object]) -> str:
    where = f"{getattr(accepted_by, '__qualname__', accepted_by)}()"
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    keywords = [
        parameter.name
        for parameter in inspect.signature(accepted_by).parameters.values()
        if parameter.kind not in variadic and parameter.name != "self"
    ]
    closest = difflib.get_close_matches(name, [*_OPTION_NAMES, *keywords], n=1)
    if closest:
        return f"{where}: unknown option {name!r}; did you mean {closest[0]!r}?"
    return f"{where}: unknown option {name!r}; the options are {', '.join(_OPTION_NAMES)}"
