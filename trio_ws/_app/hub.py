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

import logging
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, Literal

import trio

from .._cluster.backplane import BackplaneError, ClusterMember, RedisBackplane
from .._cluster.node import NODE_SHIFT, Node
from .._conn.connection import WebSocket
from .._conn.delivery import Framings, Outcome
from .._errors import split_off
from .._wire.close import CloseCode, check_close_code
from .member import HubStats, Member, Target, as_message, check_limit, metadata_of, to_json

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

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
        backplane: RedisBackplane | None = None,
    ) -> None:
        if policy not in ("close", "drop"):
            raise ValueError(f"policy must be 'close' or 'drop', not {policy!r}")
        #: Most frames one connection's queue may hold (None: no limit).
        self.max_pending = check_limit("max_pending", max_pending)
        #: Most bytes of broadcast messages one connection's queue may hold
        #: (None: no limit). A queue with nothing waiting takes any one message.
        self.max_pending_bytes = check_limit("max_pending_bytes", max_pending_bytes)
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
        #: The backplane this hub shares its rooms through (None: this process only).
        self.backplane = backplane
        self._node: Node | None = None
        self._id_base = 0  # the high half of this node's connection ids
        self._stack: AsyncExitStack | None = None

    def __repr__(self) -> str:
        return (
            f"<Hub {self._state} connections={len(self._members)} rooms={len(self._rooms)} "
            f"policy={self.policy!r}>"
        )

    # -- the async with block --------------------------------------------------

    async def __aenter__(self) -> Hub:
        if self._state != "new":
            raise RuntimeError("this open_hub() was already entered; call open_hub() again")
        if self.backplane is None:
            await trio.lowlevel.checkpoint()
        else:
            await self._join_cluster(self.backplane)
        self._state = "open"
        return self

    async def _join_cluster(self, backplane: RedisBackplane) -> None:
        # The node's tasks run in a nursery of the hub's own, open from here
        # to the end of the async with block.
        try:
            async with AsyncExitStack() as stack:
                nursery = await stack.enter_async_context(trio.open_nursery())
                node = Node(backplane, self)
                await nursery.start(node.run)
                self._node, self._id_base = node, node.number << NODE_SHIFT
                self._stack = stack.pop_all()
        except BaseExceptionGroup as group:
            # One clear error (Redis unreachable), not a group of one.
            failure, rest = split_off(group, BackplaneError)
            while isinstance(failure, BaseExceptionGroup) and len(failure.exceptions) == 1:
                failure = failure.exceptions[0]
            if rest is None and isinstance(failure, BackplaneError):
                raise failure from None
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._state = "closed"
        try:
            await self._close_members()
        finally:
            if self._stack is not None:
                assert self._node is not None
                with trio.CancelScope(shield=True):
                    await self._node.leave()
                self._node.stop()
                stack, self._stack = self._stack, None
                await stack.__aexit__(exc_type, exc, traceback)

    async def _close_members(self) -> None:
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
        key = self._id_base | ws.id
        if key in self._members:
            raise RuntimeError(f"connection {ws.id} is already registered with this hub")
        await trio.lowlevel.checkpoint()
        self._check_open()
        member = Member(ws, dict(metadata))
        member.id = key
        self._members[key] = member
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
            if self._node is not None:
                self._node.left(room, member.id)

    @property
    def connections(self) -> tuple[WebSocket, ...]:
        """The registered connections, in the order they registered."""
        return tuple(member.ws for member in self._members.values())

    def get(self, id: int) -> Member | None:
        """The member with connection id ``id`` (``ws.id`` or ``member.id``),
        or None if none is registered here."""
        return self._members.get(self._key(id))

    def _key(self, target: Target) -> int:
        """The id the hub knows ``target`` by (``member.id``)."""
        if isinstance(target, int) and not isinstance(target, bool):
            # A bare ws.id (no node number in its high half) means this node's.
            return target if target >> NODE_SHIFT else self._id_base | target
        if isinstance(target, Member):
            return target.id
        if isinstance(target, WebSocket):
            return self._id_base | target.id
        raise TypeError(f"expected a WebSocket, a Member or a connection id, not {target!r}")

    def _excluded(self, exclude: Target | Iterable[Target] | None) -> frozenset[int]:
        if exclude is None:
            return frozenset()
        if isinstance(exclude, (WebSocket, Member, int)):
            return frozenset((self._key(exclude),))
        return frozenset(self._key(target) for target in exclude)

    def _find(self, target: Target) -> Member | None:
        """The registered member for ``target``; None if it left because it is
        closing; KeyError if it was never registered (or its block ended)."""
        member = self._members.get(self._key(target))
        if member is not None:
            if member.ws.closing:
                self._remove(member)
                return None
            return member
        ws = target.ws if isinstance(target, Member) else target
        if isinstance(ws, WebSocket) and ws.closing:
            return None
        raise KeyError(
            f"connection {self._key(target)} is not registered with this hub "
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
        if self._node is not None:
            self._node.joined(room, member.id, member.metadata)
        return True

    def leave(self, target: Target, room: str) -> bool:
        """Take a connection out of ``room`` (a room without members ceases
        to exist). Returns True if it was in the room."""
        member = self._members.get(self._key(target))
        if member is None or room not in member._rooms:
            return False
        del member._rooms[room]
        occupants = self._rooms[room]
        del occupants[member.id]
        if not occupants:
            del self._rooms[room]
        if self._node is not None:
            self._node.left(room, member.id)
        return True

    def rooms_of(self, target: Target) -> tuple[str, ...]:
        """The rooms a registered connection is in, in the order it joined
        them; () if it is not registered."""
        member = self._members.get(self._key(target))
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
        return self._key(target) in self._rooms.get(room, ())

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

        With a backplane, the message also goes to the room's members on
        every other node: queued once (not once per recipient) for this
        node's publisher task, so this still returns at once, whatever
        Redis does; the count is of this node's connections only.
        """
        self._check_open()
        message = as_message(message)
        self._broadcasts += 1
        excluded = self._excluded(exclude)
        if self._node is not None:
            self._node.publish(room, message, excluded)
        return self._fan_out(message, room, excluded)

    def _fan_out(self, message: str | bytes, room: str | None, excluded: frozenset[int]) -> int:
        """Hand ``message`` to this node's recipients; how many took it."""
        if room is None:
            recipients = self._members
        else:
            found = self._rooms.get(room)
            if found is None:
                return 0
            recipients = found
        framings = self._framings
        frame = framings.plain(message)
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
        return self.broadcast(to_json(value), room=room, exclude=exclude)

    def send_to(self, target: Target, message: str | bytes | bytearray | memoryview) -> bool:
        """Send ``message`` to one registered connection, by id (or WebSocket,
        or Member), through the same bounded queue and policy as broadcasts.
        Returns True if it was queued; False if no such connection is
        registered, it is closing, or its queue was full. Returns at once,
        like :meth:`broadcast`.

        With a backplane, an id of another node's connection (``member.id``
        as that node's hub knows it) sends through Redis: True then means
        handed to the backplane, and the other node applies its own checks.
        """
        self._check_open()
        message = as_message(message)
        self._direct_sends += 1
        key = self._key(target)
        member = self._members.get(key)
        if member is None:
            node = self._node
            if node is None or key >> NODE_SHIFT in (0, node.number):
                return False
            node.send_direct(key, message)
            return True
        frame = self._framings.plain(message)
        if not self._deliver(member, message, frame, len(frame)):
            return False
        self._deliveries += 1
        return True

    def send_json_to(self, target: Target, value: Any) -> bool:
        """``send_to()`` of ``value`` encoded as JSON in a text message."""
        return self.send_to(target, to_json(value))

    # -- what the node hands in (Local, see _cluster/node.py) ----------------------

    def deliver_remote(
        self, room: str | None, message: str | bytes, excluded: frozenset[int]
    ) -> None:
        """A broadcast from another node: to this node's recipients."""
        if self._state == "open":
            self._fan_out(message, room, excluded)

    def deliver_direct(self, target: int, message: str | bytes) -> None:
        """A direct send from another node to one of this node's connections."""
        member = self._members.get(target)
        if member is not None and self._state == "open":
            frame = self._framings.plain(message)
            if self._deliver(member, message, frame, len(frame)):
                self._deliveries += 1

    def local_presence(self) -> Iterable[tuple[str, dict[int, dict[str, Any]]]]:
        """Each room with members here, with their ids and metadata."""
        for room, occupants in list(self._rooms.items()):
            yield room, {key: member.metadata for key, member in occupants.items()}

    # -- the cluster -----------------------------------------------------------------

    async def cluster_members(self, room: str) -> tuple[ClusterMember, ...]:
        """The members of ``room`` on every node: this node's first (exact,
        in the order they joined), then other nodes' as presence in Redis
        knows them -- eventually consistent: a join or leave elsewhere shows
        after its node wrote it (normally within a millisecond), a crashed
        node's members vanish within the backplane's ``presence_ttl``.

        Without a backplane: this hub's members. Raises BackplaneError if
        Redis does not answer within the backplane's probe_timeout.
        Cancellation: a checkpoint; cancelled, nothing has changed.
        """
        local = tuple(
            ClusterMember(member.id, self._id_base >> NODE_SHIFT, member.metadata, True)
            for member in self._rooms.get(room, {}).values()
        )
        if self._node is None:
            await trio.lowlevel.checkpoint()
            return local
        remote = await self._node.room_presence(room)
        return local + tuple(
            ClusterMember(member, node, metadata_of(text), False)
            for node, members in remote.items()
            for member, text in members.items()
        )

    async def cluster_room_size(self, room: str) -> int:
        """How many connections are in ``room`` on every node (see
        :meth:`cluster_members` for how current that is)."""
        return len(await self.cluster_members(room))

    @property
    def node(self) -> int:
        """This hub's node number in its cluster (0 without a backplane)."""
        return self._id_base >> NODE_SHIFT

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
            backplane=None if self._node is None else self._node.stats(),
        )


def open_hub(
    *,
    max_pending: int | None = DEFAULT_MAX_PENDING,
    max_pending_bytes: int | None = DEFAULT_MAX_PENDING_BYTES,
    policy: Policy = "close",
    slow_close_code: int = CloseCode.TRY_AGAIN_LATER,
    backplane: RedisBackplane | None = None,
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

    With ``backplane`` (a :class:`RedisBackplane`), the hub is one node of a
    cluster: rooms, ``broadcast``, ``send_to``, ``exclude=`` and presence
    (``cluster_members``) span every hub opened with the same Redis and
    prefix. Entering the block then connects to Redis (BackplaneError if it
    cannot within the backplane's ``connect_timeout``) and the backplane's
    tasks run in a nursery the hub owns until the block ends. See
    docs/scaling.md.

    Without a backplane the hub runs no task of its own: each connection's
    writer task, which belongs to the connection, writes its queue. When the block ends,
    broadcasting is over (further calls raise :exc:`trio.ClosedResourceError`),
    and connections still registered are closed with 1001 Going Away,
    "hub closed" (shielded, each within its ``close_timeout``).
    """
    return Hub(
        max_pending=max_pending,
        max_pending_bytes=max_pending_bytes,
        policy=policy,
        slow_close_code=slow_close_code,
        backplane=backplane,
    )
