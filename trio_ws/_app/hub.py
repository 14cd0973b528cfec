"""Broadcasting to many connections: ``open_hub``, ``Hub`` and ``Member``.

A hub is a registry of server connections, grouped in rooms, and a way to
send one message to many of them at once. ``broadcast()`` frames the message
once and hands the same bytes to every recipient without waiting (through
each connection's ``Delivery``, see _conn/delivery.py): written at once when
the socket takes them and nothing is queued ahead, else queued for the
connection's own writer task. So a broadcast never blocks, one client that
stops reading delays no one else, and ``await ws.send()`` keeps its place
among broadcasts to the same connection (it waits behind the broadcasts
queued before it).

Each queue is bounded (``max_pending`` frames, ``max_pending_bytes`` bytes).
When a message finds a queue full, the hub's policy applies to that one
connection: ``"close"`` sheds its queue and closes it with 1013 (the client
fell behind), ``"drop"`` skips the message for it and counts the drop.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Literal

import attrs
import trio

from .._conn.connection import WebSocket
from .._conn.delivery import Delivery, Framings, Outcome
from .._conn.lifecycle import delivery_of
from .._wire.close import CloseCode, check_close_code

__all__ = ["Hub", "HubStats", "Member", "open_hub"]

logger = logging.getLogger("trio_ws")

#: Default ``max_pending``: frames waiting in one connection's queue.
DEFAULT_MAX_PENDING = 1024
#: Default ``max_pending_bytes``: bytes of broadcast messages waiting in one
#: connection's queue (1 MiB).
DEFAULT_MAX_PENDING_BYTES = 2**20

_NO_LIMIT = sys.maxsize

#: The close reason a slow client gets (the cause in its CloseInfo says more).
SLOW_CLIENT_REASON = "client fell behind"

#: What to do with a connection whose queue is full.
Policy = Literal["close", "drop"]


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
    #: The connection's id (``ws.id``).
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


def _limit(name: str, value: int | None) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
        raise ValueError(f"{name} must be a positive integer or None, not {value!r}")
    return value


def _id_of(target: Target) -> int:
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    if isinstance(target, (WebSocket, Member)):
        return target.id
    raise TypeError(f"expected a WebSocket, a Member or a connection id, not {target!r}")


def _excluded(exclude: Target | Iterable[Target] | None) -> frozenset[int]:
    if exclude is None:
        return frozenset()
    if isinstance(exclude, (WebSocket, Member, int)):
        return frozenset((_id_of(exclude),))
    return frozenset(_id_of(target) for target in exclude)


def _as_message(message: str | bytes | bytearray | memoryview) -> str | bytes:
    if isinstance(message, (str, bytes)):
        return message
    if isinstance(message, (bytearray, memoryview)):
        return bytes(message)  # a private copy: the queues share it
    raise TypeError(
        f"a WebSocket message is str (text) or bytes-like (binary), not {type(message).__name__}"
    )


def _to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Hub:
    """Connections grouped in rooms, and broadcasting to them. Create it with
    :func:`open_hub`; see there for the rules."""

    def __init__(
        self,
        *,
        max_pending: int | None = DEFAULT_MAX_PENDING,
        max_pending_bytes: int | None = DEFAULT_MAX_PENDING_BYTES,
        policy: Policy = "close",
        slow_close_code: int = CloseCode.TRY_AGAIN_LATER,
    ) -> None:
        if policy not in ("close", "drop"):
            raise ValueError(f"policy must be 'close' or 'drop', not {policy!r}")
        #: Most frames one connection's queue may hold (None: no limit).
        self.max_pending = _limit("max_pending", max_pending)
        #: Most bytes of broadcast messages one connection's queue may hold
        #: (None: no limit). A queue with nothing waiting takes any one message.
        self.max_pending_bytes = _limit("max_pending_bytes", max_pending_bytes)
        #: What happens to a connection whose queue is full: "close" or "drop".
        self.policy: Policy = policy
        #: The close code of a slow client closed by policy "close".
        self.slow_close_code = check_close_code(slow_close_code)
        self._state = "new"  # "new", "open", "closed"
        self._members: dict[int, Member] = {}
        self._rooms: dict[str, dict[int, Member]] = {}
        self._broadcasts = 0
        self._direct_sends = 0
        self._deliveries = 0
        self._drops = 0
        self._slow_closes = 0
        # Frames of the last message broadcast, one per frame key.
        self._framings = Framings()

    def __repr__(self) -> str:
        return (
            f"<Hub {self._state} connections={len(self._members)} rooms={len(self._rooms)} "
            f"policy={self.policy!r}>"
        )

    # -- the async with block --------------------------------------------------

    async def __aenter__(self) -> Hub:
        if self._state != "new":
            raise RuntimeError("this open_hub() was already entered; call open_hub() again")
        await trio.lowlevel.checkpoint()
        self._state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._state = "closed"
        members = list(self._members.values())
        for member in members:
            self._remove(member)
        if not members:
            return
        # Connections still registered lose their reason to exist: close them
        # (concurrently, shielded, each within its own close_timeout).
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as closers:
                for member in members:
                    closers.start_soon(
                        member._delivery.aclose,
                        CloseCode.GOING_AWAY,
                        "hub closed",
                        "the hub was closed",
                    )

    def _check_open(self) -> None:
        if self._state == "open":
            return
        if self._state == "new":
            raise RuntimeError(
                "use the hub inside its block: 'async with trio_ws.open_hub() as hub:'"
            )
        raise trio.ClosedResourceError("the hub is closed")

    # -- the registry ----------------------------------------------------------

    @asynccontextmanager
    async def register(self, ws: WebSocket, **metadata: Any) -> AsyncIterator[Member]:
        """Register ``ws`` for the duration of an ``async with`` block, with
        ``metadata`` (any keyword arguments, kept in ``member.metadata``):
        ``async with hub.register(ws, user="ann") as member: ...``.

        When the block ends, however it ends, the connection leaves the hub
        and every room it is in. It also leaves earlier if the hub finds it
        closing (a broadcast or a direct send to it) or closes it for falling
        behind. Cancellation: entering is a checkpoint (cancelled there, the
        connection is not registered); leaving never blocks.
        """
        self._check_open()
        if not isinstance(ws, WebSocket):
            raise TypeError(f"register() takes a WebSocket, not {ws!r}")
        if ws.id in self._members:
            raise RuntimeError(f"connection {ws.id} is already registered with this hub")
        await trio.lowlevel.checkpoint()
        self._check_open()
        member = Member(ws, dict(metadata))
        self._members[ws.id] = member
        try:
            yield member
        finally:
            self._remove(member)

    def _remove(self, member: Member) -> None:
        """Take ``member`` out of the registry and its rooms (once)."""
        if not member.active:
            return
        member.active = False
        self._members.pop(member.id, None)
        for room in member._rooms:
            occupants = self._rooms[room]
            del occupants[member.id]
            if not occupants:
                del self._rooms[room]

    @property
    def connections(self) -> tuple[WebSocket, ...]:
        """The registered connections, in the order they registered."""
        return tuple(member.ws for member in self._members.values())

    def get(self, id: int) -> Member | None:
        """The member with connection id ``id``, or None if none is registered."""
        return self._members.get(id)

    def _find(self, target: Target) -> Member | None:
        """The registered member for ``target``; None if it left because it is
        closing; KeyError if it was never registered (or its block ended)."""
        member = self._members.get(_id_of(target))
        if member is not None:
            if member.ws.closing:
                self._remove(member)
                return None
            return member
        ws = target.ws if isinstance(target, Member) else target
        if isinstance(ws, WebSocket) and ws.closing:
            return None
        raise KeyError(
            f"connection {_id_of(target)} is not registered with this hub "
            "(use 'async with hub.register(ws):')"
        )

    # -- rooms -------------------------------------------------------------------

    def join(self, target: Target, room: str) -> bool:
        """Put a registered connection in ``room`` (created on first use).
        Returns True if it joined, False if it was already in the room or is
        closing. Raises KeyError if it is not registered."""
        self._check_open()
        if not isinstance(room, str):
            raise TypeError(f"a room is named by a str, not {room!r}")
        member = self._find(target)
        if member is None or room in member._rooms:
            return False
        member._rooms[room] = None
        self._rooms.setdefault(room, {})[member.id] = member
        return True

    def leave(self, target: Target, room: str) -> bool:
        """Take a connection out of ``room`` (a room without members ceases
        to exist). Returns True if it was in the room."""
        member = self._members.get(_id_of(target))
        if member is None or room not in member._rooms:
            return False
        del member._rooms[room]
        occupants = self._rooms[room]
        del occupants[member.id]
        if not occupants:
            del self._rooms[room]
        return True

    def rooms_of(self, target: Target) -> tuple[str, ...]:
        """The rooms a registered connection is in, in the order it joined
        them; () if it is not registered."""
        member = self._members.get(_id_of(target))
        return () if member is None else member.rooms

    def members(self, room: str | None = None) -> tuple[Member, ...]:
        """The members of ``room`` in the order they joined it (() for an
        unknown room); with no room, every registered member."""
        if room is None:
            return tuple(self._members.values())
        return tuple(self._rooms.get(room, {}).values())

    def room_size(self, room: str) -> int:
        """How many connections are in ``room``."""
        return len(self._rooms.get(room, ()))

    def in_room(self, target: Target, room: str) -> bool:
        """Whether a connection is in ``room``."""
        return _id_of(target) in self._rooms.get(room, ())

    @property
    def rooms(self) -> tuple[str, ...]:
        """The rooms that have members, in the order they were created."""
        return tuple(self._rooms)

    # -- sending -------------------------------------------------------------------

    def broadcast(
        self,
        message: str | bytes | bytearray | memoryview,
        *,
        room: str | None = None,
        exclude: Target | Iterable[Target] | None = None,
    ) -> int:
        """Send ``message`` (``str``: text, bytes-like: binary) to every
        registered connection, or to the members of ``room``, except those in
        ``exclude`` (one connection or several). Returns how many connections
        it was queued for.

        Returns at once: the message is framed once and handed to each
        recipient, written at once where the socket takes it and queued for
        the connection's own writer task otherwise. It is not a checkpoint
        and cannot block or be cancelled. A recipient whose queue is full gets the
        hub's policy instead; a recipient that is closing is skipped and
        leaves the hub. Raises TypeError for other message types.
        """
        self._check_open()
        message = _as_message(message)
        framings = self._framings
        frame = framings.plain(message)
        self._broadcasts += 1
        if room is None:
            recipients = self._members
        else:
            found = self._rooms.get(room)
            if found is None:
                return 0
            recipients = found
        excluded = _excluded(exclude)
        size = len(frame)
        is_text = type(message) is str
        max_frames, max_bytes = self._limits()
        count = 0
        queued, full = Outcome.QUEUED, Outcome.FULL
        # _deliver(), inlined: this loop is the whole cost of a broadcast.
        for member in list(recipients.values()):
            if excluded and member.id in excluded:
                continue
            delivery = member._delivery
            if delivery.shares_plain_frame:  # the frame as it is: one call
                status = delivery.offer_frame(frame, is_text, size, max_frames, max_bytes)
            else:
                status = delivery.offer(message, frame, size, max_frames, max_bytes, framings)
            if status is queued:
                count += 1
            elif status is full:
                self._full(member)
            else:
                self._remove(member)
        self._deliveries += count
        return count

    def broadcast_json(
        self,
        value: Any,
        *,
        room: str | None = None,
        exclude: Target | Iterable[Target] | None = None,
    ) -> int:
        """``broadcast()`` of ``value`` encoded as JSON once, in a text message
        (compact, non-ASCII kept, as ``ws.send_json``)."""
        return self.broadcast(_to_json(value), room=room, exclude=exclude)

    def send_to(self, target: Target, message: str | bytes | bytearray | memoryview) -> bool:
        """Send ``message`` to one registered connection, by id (or WebSocket,
        or Member), through the same bounded queue and policy as broadcasts.
        Returns True if it was queued; False if no such connection is
        registered, it is closing, or its queue was full. Returns at once,
        like :meth:`broadcast`."""
        self._check_open()
        message = _as_message(message)
        self._direct_sends += 1
        member = self._members.get(_id_of(target))
        if member is None:
            return False
        frame = self._framings.plain(message)
        if not self._deliver(member, message, frame, len(frame)):
            return False
        self._deliveries += 1
        return True

    def send_json_to(self, target: Target, value: Any) -> bool:
        """``send_to()`` of ``value`` encoded as JSON in a text message."""
        return self.send_to(target, _to_json(value))

    def _limits(self) -> tuple[int, int]:
        """``max_pending`` and ``max_pending_bytes`` as numbers (None: no limit)."""
        return (
            _NO_LIMIT if self.max_pending is None else self.max_pending,
            _NO_LIMIT if self.max_pending_bytes is None else self.max_pending_bytes,
        )

    def _deliver(self, member: Member, message: str | bytes, frame: bytes, size: int) -> bool:
        """Queue one message for one member, or apply the policy."""
        status = member._delivery.offer(message, frame, size, *self._limits(), self._framings)
        if status is Outcome.FULL:
            self._full(member)
        elif status is not Outcome.QUEUED:
            self._remove(member)
        return status is Outcome.QUEUED

    def _full(self, member: Member) -> None:
        """A message found ``member``'s queue full: apply the policy."""
        ws = member.ws
        member.drops += 1
        self._drops += 1
        if self.policy == "drop":
            if member.drops == 1:
                logger.warning("[conn %d] fell behind: dropping broadcast messages", ws.id)
            return
        delivery = member._delivery
        cause = (
            f"slow client: {delivery.queued} frames ({delivery.queued_bytes} bytes) waiting to "
            f"be written; hub limits {self.max_pending} frames, {self.max_pending_bytes} bytes"
        )
        shed = delivery.shed_and_close(self.slow_close_code, SLOW_CLIENT_REASON, cause)
        member.drops += shed
        self._drops += shed
        self._slow_closes += 1
        self._remove(member)

    # -- statistics ----------------------------------------------------------------

    def stats(self) -> HubStats:
        """A snapshot of the hub's counters and of its connections' queues."""
        queued = queued_bytes = deepest = 0
        for member in self._members.values():
            delivery = member._delivery
            queued += delivery.queued
            depth = delivery.queued_bytes
            queued_bytes += depth
            deepest = max(deepest, depth)
        return HubStats(
            connections=len(self._members),
            rooms=len(self._rooms),
            broadcasts=self._broadcasts,
            direct_sends=self._direct_sends,
            deliveries=self._deliveries,
            drops=self._drops,
            slow_closes=self._slow_closes,
            queued=queued,
            queued_bytes=queued_bytes,
            max_queued_bytes=deepest,
        )


def open_hub(
    *,
    max_pending: int | None = DEFAULT_MAX_PENDING,
    max_pending_bytes: int | None = DEFAULT_MAX_PENDING_BYTES,
    policy: Policy = "close",
    slow_close_code: int = CloseCode.TRY_AGAIN_LATER,
) -> Hub:
    """A hub, used as ``async with trio_ws.open_hub() as hub:``.

    Register connections with ``async with hub.register(ws):`` (usually in
    the server's handler), put them in rooms with ``hub.join(ws, room)``, and
    send with ``hub.broadcast(message, room=..., exclude=...)``, which returns
    at once. Open the hub around the server, so that it outlives every
    handler.

    Each connection's outgoing queue holds at most ``max_pending`` frames and
    ``max_pending_bytes`` bytes of broadcast messages (None: no limit). A
    message that finds a queue full triggers ``policy`` for that connection:
    ``"close"`` discards what it has queued and closes it with
    ``slow_close_code`` (1013 Try Again Later) and the reason "client fell
    behind"; ``"drop"`` skips the message for it and counts the drop
    (``member.drops``, ``hub.stats().drops``).

    The hub runs no task of its own: each connection's writer task, which
    belongs to the connection, writes its queue. When the block ends,
    broadcasting is over (further calls raise ``trio.ClosedResourceError``),
    and connections still registered are closed with 1001 Going Away,
    "hub closed" (shielded, each within its ``close_timeout``).
    """
    return Hub(
        max_pending=max_pending,
        max_pending_bytes=max_pending_bytes,
        policy=policy,
        slow_close_code=slow_close_code,
    )
