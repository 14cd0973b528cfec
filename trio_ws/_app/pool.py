"""A pool of client connections: ``open_pool`` and ``ConnectionPool``."""

from __future__ import annotations

import collections
import math
import os
import ssl
import sys
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

import attrs
import trio

from .._conn.connection import WebSocket
from .._conn.lifecycle import close_explained
from .._endpoints.client import ClientSettings
from .._endpoints.dial import ProxySetting, Route
from .._endpoints.owner import OwnedNursery, exit_close_frame
from .._errors import PoolTimeout, consists_of
from .._http import HeadersLike
from .._options import ConnectionOptions, options_from
from .._wire.close import CloseCode

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Unpack  # for type checkers only

__all__ = ["ConnectionPool", "open_pool"]


@attrs.define(eq=False)
class _Entry:
    """One pooled connection."""

    url: str
    ws: WebSocket
    #: When it last became idle (its place in the idle list follows this).
    released_at: float = 0.0


@attrs.define(eq=False)
class _Grant:
    """What an acquirer may do: use ``entry``, or open a new connection
    (after closing ``evict``, an idle connection whose place it takes)."""

    entry: _Entry | None = None
    evict: _Entry | None = None


@attrs.define(eq=False)
class _Waiter:
    url: str
    event: trio.Event = attrs.field(factory=trio.Event)
    grant: _Grant | None = None


async def _close(ws: WebSocket, code: int, cause: str) -> None:
    """Close ``ws`` (shielded, within its close_timeout), noting why."""
    with trio.CancelScope(shield=True):
        await close_explained(ws, code, "", cause)


def _usable(ws: WebSocket) -> bool:
    """Open, not closing, and with nothing unread: fit to hand out."""
    return not ws.closing and ws.pending == 0


class ConnectionPool:
    """Client connections kept open for reuse, each used by one task at a
    time. Create it with :func:`open_pool`; see there for the rules."""

    def __init__(
        self,
        *,
        max_connections: int,
        max_idle_time: float | None,
        subprotocols: Sequence[str],
        headers: HeadersLike,
        ssl_context: ssl.SSLContext | None,
        proxy: ProxySetting = True,
        unix_path: str | os.PathLike[str] | None = None,
        options: ConnectionOptions,
    ) -> None:
        if (
            not isinstance(max_connections, int)
            or isinstance(max_connections, bool)
            or max_connections < 1
        ):
            raise ValueError(
                f"max_connections must be a positive integer, not {max_connections!r}"
            )
        if max_idle_time is not None and (
            not isinstance(max_idle_time, (int, float))
            or isinstance(max_idle_time, bool)
            or not max_idle_time > 0
        ):
            raise ValueError(
                f"max_idle_time must be a positive number or None, not {max_idle_time!r}"
            )
        #: At most this many connections exist at once.
        self.max_connections = max_connections
        #: Idle connections are closed after this many seconds (None: never).
        self.max_idle_time = max_idle_time
        # Checked now, as connect() checks its arguments.
        settings = options_from(options, open_pool)
        route = Route(ssl_context, proxy, unix_path)
        self._client = ClientSettings(subprotocols, headers, route, settings)
        self._nursery: trio.Nursery | None = None
        self._owner = OwnedNursery()
        self._state = "new"  # "new", "open", "closed"
        # Idle connections, least recently used first (by released_at).
        self._idle: list[_Entry] = []
        self._in_use: set[_Entry] = set()
        self._opening = 0  # slots reserved for connections being opened
        self._closing = 0  # connections being closed, still holding a slot
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._reaper_wakeup = trio.Event()

    # -- counts ----------------------------------------------------------------

    @property
    def size(self) -> int:
        """Connections counted against ``max_connections``: idle, in use,
        and being opened or closed."""
        return len(self._idle) + len(self._in_use) + self._opening + self._closing

    @property
    def idle(self) -> int:
        """Connections waiting in the pool for reuse."""
        return len(self._idle)

    @property
    def in_use(self) -> int:
        """Connections acquired and not yet released."""
        return len(self._in_use)

    def __repr__(self) -> str:
        return (
            f"<ConnectionPool size={self.size}/{self.max_connections} idle={self.idle} "
            f"in_use={self.in_use} waiting={len(self._waiters)}>"
        )

    # -- the async with block --------------------------------------------------

    async def __aenter__(self) -> ConnectionPool:
        if self._state != "new":
            raise RuntimeError("this open_pool() was already entered; call open_pool() again")
        nursery = await self._owner.open()
        self._nursery = nursery
        self._state = "open"
        if self.max_idle_time is not None:
            nursery.start_soon(self._reap, self.max_idle_time)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._nursery is not None
        self._state = "closed"
        waiters, self._waiters = self._waiters, collections.deque()
        for waiter in waiters:
            waiter.event.set()  # without a grant: they raise ClosedResourceError
        if consists_of(exc, trio.Cancelled):
            code, cause = CloseCode.GOING_AWAY, "the pool was cancelled"
        else:
            code, cause = CloseCode.NORMAL_CLOSURE, "the pool was closed"
        entries = [*self._idle, *self._in_use]
        self._idle.clear()
        try:
            with trio.CancelScope(shield=True):
                async with trio.open_nursery() as closers:
                    for entry in entries:
                        closers.start_soon(_close, entry.ws, code, cause)
        finally:
            # What is left (the reaper, tasks noticing closes) ends now.
            await self._owner.close(cancel=True)

    # -- acquiring and releasing -------------------------------------------------

    def acquire(self, url: str, *, timeout: float | None = None) -> _Lease:
        """Use one connection to ``url``, exclusively, for the duration of an
        ``async with`` block: ``async with pool.acquire(url) as ws: ...``.

        Takes the most recently used idle connection to ``url``; else opens
        a new one if the pool has room; else closes the least recently used
        idle connection to another URL to make room; else waits, first come
        first served, until a connection is released or closed. ``timeout``
        bounds that wait (None: no limit) and raises :class:`PoolTimeout`;
        opening a connection is bounded by ``open_timeout`` instead, and its
        :class:`HandshakeError` propagates unchanged.

        When the block ends, the connection goes back to the pool if it is
        open and clean (no unread message); otherwise it is closed and
        dropped: with 1000 if messages were left unread, and, if the block
        raised, with 1011 (1001 if it was cancelled) -- its state is unknown.

        Cancellation: waiting, and opening, can be cancelled safely: nothing
        is taken from the pool or left behind.
        """
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be a number >= 0 or None, not {timeout!r}")
        return _Lease(self, url, timeout)

    def _check_open(self) -> trio.Nursery:
        if self._state == "new":
            raise RuntimeError(
                "use the pool inside its block: 'async with trio_ws.open_pool() as pool:'"
            )
        if self._state == "closed":
            raise trio.ClosedResourceError("the connection pool is closed")
        assert self._nursery is not None
        return self._nursery

    async def _checkout(self, url: str, limit: float | None) -> _Entry:
        """Take or open a connection to ``url``: it is in use when this returns."""
        self._check_open()
        await trio.lowlevel.checkpoint()
        self._check_open()
        grant = None if self._waiters else self._try_grant(url)
        if grant is None:
            grant = await self._wait(url, limit)
        if grant.entry is None:
            return await self._open(url, grant.evict)
        if self._state != "open":
            # Handed over just before the pool's block ended, which closed it.
            self._in_use.discard(grant.entry)
            raise trio.ClosedResourceError("the connection pool is closed")
        return grant.entry

    async def _wait(self, url: str, limit: float | None) -> _Grant:
        waiter = _Waiter(url)
        self._waiters.append(waiter)
        deadline = math.inf if limit is None else trio.current_time() + limit
        try:
            with trio.move_on_at(deadline):
                await waiter.event.wait()
        except BaseException:
            if waiter.grant is not None:
                self._give_back(waiter.grant)
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        if waiter.grant is not None:
            return waiter.grant  # even if the timeout expired at the same time
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        self._check_open()
        assert limit is not None
        raise PoolTimeout(
            f"no connection to {url} available within {limit:g} s: the pool is full "
            f"(max_connections={self.max_connections}, all in use)"
        )

    async def _open(self, url: str, evict: _Entry | None) -> _Entry:
        """Open a connection in a slot reserved for it (after closing
        ``evict``, whose slot it takes)."""
        try:
            nursery = self._check_open()
            if evict is not None:
                await _close(evict.ws, CloseCode.NORMAL_CLOSURE, "closed to make room in the pool")
            ws = await self._client.start(nursery, url)
        except BaseException:
            self._opening -= 1
            self._dispatch()
            raise
        self._opening -= 1
        entry = _Entry(url, ws)
        if self._state != "open":
            # The pool's block ended while this connection was being opened.
            await _close(ws, CloseCode.GOING_AWAY, "the pool was closed")
            raise trio.ClosedResourceError("the connection pool is closed")
        self._in_use.add(entry)
        nursery.start_soon(self._watch, entry)
        return entry

    def _try_grant(self, url: str) -> _Grant | None:
        """Serve an acquirer now, if possible (and reserve what it gets)."""
        for entry in list(self._idle):
            if entry.ws.closed:
                self._idle.remove(entry)
            elif not _usable(entry.ws):
                # Closing, or messages arrived while idle: not clean any more.
                self._idle.remove(entry)
                self._close_soon(entry, "received a message while idle")
        for entry in reversed(self._idle):
            if entry.url == url:
                self._idle.remove(entry)
                self._in_use.add(entry)
                return _Grant(entry=entry)
        if self.size < self.max_connections:
            self._opening += 1
            return _Grant()
        if self._idle:
            self._opening += 1  # the evicted connection's slot
            return _Grant(evict=self._idle.pop(0))
        return None

    def _give_back(self, grant: _Grant) -> None:
        """Undo a grant its waiter was cancelled before using."""
        if grant.entry is not None:
            self._in_use.discard(grant.entry)
            self._make_idle(grant.entry)
        else:
            self._opening -= 1
            if grant.evict is not None:
                self._make_idle(grant.evict)
        self._dispatch()

    def _dispatch(self) -> None:
        """Serve waiters, in order, while the pool can."""
        while self._waiters and self._state == "open":
            head = self._waiters[0]
            grant = self._try_grant(head.url)
            if grant is None:
                return
            self._waiters.popleft()
            head.grant = grant
            head.event.set()

    def _make_idle(self, entry: _Entry) -> None:
        entry.released_at = trio.current_time()
        self._idle.append(entry)
        if len(self._idle) == 1:
            self._reaper_wakeup.set()

    async def _release(self, entry: _Entry, exc: BaseException | None) -> None:
        self._in_use.discard(entry)
        ws = entry.ws
        if exc is not None:
            # The block failed: what the connection carries is unknown.
            code, _, cause = exit_close_frame(exc)
            await self._close_now(entry, code, cause or "the block using it failed")
        elif ws.closed:
            self._dispatch()
        elif self._state != "open":
            await self._close_now(entry, CloseCode.NORMAL_CLOSURE, "the pool was closed")
        elif not _usable(ws):
            await self._close_now(
                entry, CloseCode.NORMAL_CLOSURE, f"returned with {ws.pending} unread message(s)"
            )
        else:
            self._make_idle(entry)
            self._dispatch()

    async def _close_now(self, entry: _Entry, code: int, cause: str) -> None:
        self._closing += 1
        try:
            await _close(entry.ws, code, cause)
        finally:
            self._closing -= 1
            self._dispatch()

    def _close_soon(self, entry: _Entry, cause: str) -> None:
        assert self._nursery is not None
        self._closing += 1
        self._nursery.start_soon(self._close_later, entry, cause)

    async def _close_later(self, entry: _Entry, cause: str) -> None:
        try:
            await _close(entry.ws, CloseCode.NORMAL_CLOSURE, cause)
        finally:
            self._closing -= 1
            self._dispatch()

    # -- background tasks ----------------------------------------------------------

    async def _watch(self, entry: _Entry) -> None:
        """Drop the connection from the idle list as soon as it closes (the
        peer closed it, or keepalive failed)."""
        await entry.ws.wait_closed()
        if entry in self._idle:
            self._idle.remove(entry)
            self._dispatch()

    async def _reap(self, max_idle_time: float) -> None:
        """Close connections idle for more than ``max_idle_time``. Sleeps until
        the oldest idle connection expires (or one becomes idle), no polling."""
        while True:
            self._reaper_wakeup = trio.Event()
            oldest = self._idle[0].released_at if self._idle else math.inf
            deadline = oldest + max_idle_time
            with trio.move_on_at(deadline):
                await self._reaper_wakeup.wait()
            now = trio.current_time()
            while self._idle and self._idle[0].released_at + max_idle_time <= now:
                entry = self._idle.pop(0)
                self._close_soon(entry, f"idle for more than {max_idle_time:g} s")


class _Lease:
    """The ``async with`` block of :meth:`ConnectionPool.acquire`."""

    def __init__(self, pool: ConnectionPool, url: str, timeout: float | None) -> None:
        self._pool = pool
        self._url = url
        self._timeout = timeout
        self._entry: _Entry | None = None
        self._used = False

    async def __aenter__(self) -> WebSocket:
        if self._used:
            raise RuntimeError("this acquire() was already entered; call acquire() again")
        self._used = True
        self._entry = await self._pool._checkout(self._url, self._timeout)
        return self._entry.ws

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._entry is not None
        entry, self._entry = self._entry, None
        await self._pool._release(entry, exc)


def open_pool(
    *,
    max_connections: int = 10,
    max_idle_time: float | None = 60.0,
    subprotocols: Sequence[str] = (),
    headers: HeadersLike = (),
    ssl_context: ssl.SSLContext | None = None,
    proxy: ProxySetting = True,
    unix_path: str | os.PathLike[str] | None = None,
    **options: Unpack[ConnectionOptions],
) -> ConnectionPool:
    """A pool of client connections, for an ``async with`` block::

        async with trio_ws.open_pool(max_connections=10) as pool:
            async with pool.acquire(url, timeout=5.0) as ws:
                await ws.send("request")
                reply = await ws.receive()

    Each :meth:`~ConnectionPool.acquire` gives one task exclusive use of an
    open connection; at the end of its block the connection goes back to the
    pool, to be reused by the next ``acquire`` of the same URL, if it is
    open and has no unread message. At most ``max_connections`` connections
    (to all URLs together) exist at once; connections idle for more than
    ``max_idle_time`` seconds are closed (None: never).

    The pool owns its connections: their tasks, and the task that closes
    idle ones, run in a nursery that lives exactly as long as the block.
    Leaving the block closes every connection (with 1000, or 1001 when the
    block was cancelled; shielded, within ``close_timeout``) and ends every
    task; ``acquire`` then raises ``trio.ClosedResourceError``. Exceptions
    from the block come out unchanged, never in an ExceptionGroup.

    ``subprotocols``, ``headers``, ``ssl_context``, ``proxy``, ``unix_path``
    and ``**options`` are those of :func:`connect`, used for every
    connection; the options are the
    connection options of :class:`Options` (``open_timeout``,
    ``close_timeout``, ``max_message_size``, ``max_queue``,
    ``max_queue_bytes``, ``ping_interval``, ``ping_timeout``, ``frame_size``,
    ``compression``), checked when ``open_pool()`` is called: an unknown name
    raises TypeError naming the closest valid one, a bad value ValueError.
    """
    return ConnectionPool(
        max_connections=max_connections,
        max_idle_time=max_idle_time,
        subprotocols=subprotocols,
        headers=headers,
        ssl_context=ssl_context,
        proxy=proxy,
        unix_path=unix_path,
        options=options,
    )
