"""What a hub holds: its members, and the snapshot of its counters."""

from __future__ import annotations

import json
from typing import Any

import attrs

from .._cluster.backplane import BackplaneStats
from .._conn.connection import WebSocket
from .._conn.delivery import Delivery
from .._conn.lifecycle import delivery_of

__all__ = ["HubStats", "Member", "Target"]


@attrs.define(eq=False)
class Member:
    """One connection registered with a :class:`Hub`: what
    ``async with hub.register(ws, **metadata) as member`` gives."""

    #: The connection.
    ws: WebSocket
    #: The keyword arguments given to ``register()``; yours to read and change.
    metadata: dict[str, Any]
    #: Messages this connection missed because its queue was full.
    drops: int = 0
    #: True while the connection is registered; False once it has left the
    #: hub (its ``register()`` block ended, it closed, or the hub closed).
    active: bool = True
    #: The connection's id: ``ws.id`` in a hub of one process; with a
    #: backplane, its cluster-wide id (the node's number in the high 32 bits),
    #: which ``send_to`` and ``exclude=`` on any node accept.
    id: int = attrs.field(init=False)
    _rooms: dict[str, None] = attrs.field(factory=dict, init=False, repr=False)
    # How the hub hands it messages (the connection's side of the seam).
    _delivery: Delivery = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.id = self.ws.id
        self._delivery = delivery_of(self.ws)

    @property
    def rooms(self) -> tuple[str, ...]:
        """The rooms it is in, in the order it joined them. Once it has left
        the hub: the rooms it was in at that moment (to tell them it left)."""
        return tuple(self._rooms)


#: A connection as the hub's methods accept it: the WebSocket, its Member, or its id.
Target = WebSocket | Member | int


@attrs.frozen
class HubStats:
    """A snapshot of a hub's counters (``hub.stats()``)."""

    #: Connections registered now.
    connections: int
    #: Rooms with at least one member now.
    rooms: int
    #: Calls of broadcast() and broadcast_json().
    broadcasts: int
    #: Calls of send_to() and send_json_to().
    direct_sends: int
    #: Messages put in a connection's queue (broadcast or direct).
    deliveries: int
    #: Messages slow clients missed: refused because their queue was full,
    #: or discarded from the queue of a client closed for falling behind.
    drops: int
    #: Connections closed because they fell behind (policy "close").
    slow_closes: int
    #: Frames waiting to be written, summed over the registered connections.
    queued: int
    #: Bytes of queued broadcast messages, summed over the registered connections.
    queued_bytes: int
    #: The deepest queue of a registered connection, in bytes.
    max_queued_bytes: int
    #: The backplane's counters and health (None for a hub of one process).
    backplane: BackplaneStats | None = None


def as_message(message: str | bytes | bytearray | memoryview) -> str | bytes:
    if isinstance(message, (str, bytes)):
        return message
    if isinstance(message, (bytearray, memoryview)):
        return bytes(message)  # a private copy: the queues share it
    raise TypeError(
        f"a WebSocket message is str (text) or bytes-like (binary), not {type(message).__name__}"
    )


def to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def check_limit(name: str, value: int | None) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
        raise ValueError(f"{name} must be a positive integer or None, not {value!r}")
    return value


def metadata_of(text: str) -> dict[str, Any]:
    """Presence metadata from its JSON (an empty dict if it is not an object)."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
