"""A client that reconnects: ``reconnect`` and ``Backoff``."""

from __future__ import annotations

import logging
import os
import random
import ssl
import sys
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

import attrs
import trio

from .._conn.connection import WebSocket
from .._endpoints.client import ClientSettings
from .._endpoints.dial import ProxySetting, Route
from .._endpoints.owner import OwnedNursery, close_for_exit
from .._errors import (
    ConnectFailed,
    ConnectionRejected,
    HandshakeTimeout,
    ProxyError,
    ReconnectFailed,
)
from .._http import HeadersLike
from .._options import ConnectionOptions, at_least_one, options_from, positive

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Unpack  # for type checkers only

__all__ = ["Backoff", "Reconnecting", "reconnect"]

logger = logging.getLogger("trio_ws")

#: ``on_failure(attempt, delay, error)``.
FailureCallback = Callable[[int, float, BaseException], object]
#: ``retry(error)``: True to try again.
RetryPolicy = Callable[[BaseException], bool]


@attrs.frozen
class Backoff:
    """How long :func:`reconnect` waits between attempts: exponential backoff
    with full jitter.

    Before retry ``n`` (``n`` consecutive failures so far, from 1), the wait
    is capped at ``min(max_delay, initial * factor ** (n - 1))``. With
    ``jitter`` (the default) the wait is drawn uniformly between 0 and that
    cap, so that many clients that lost the same server do not all come back
    at the same instant; without it, the wait is the cap itself.
    """

    #: The cap of the first wait, in seconds.
    initial: float = attrs.field(default=0.5, validator=positive)
    #: How much the cap grows after each failure.
    factor: float = attrs.field(default=2.0, validator=at_least_one)
    #: The largest cap, in seconds. It is also how long a connection must
    #: have been up for the next one to be attempted at once.
    max_delay: float = attrs.field(default=30.0, validator=positive)
    #: Full jitter: a uniform random wait in ``[0, cap]``. False: the cap.
    jitter: bool = True

    def cap(self, failures: int) -> float:
        """The longest wait after ``failures`` consecutive failures (from 1)."""
        if failures < 1:
            raise ValueError(f"failures counts from 1, not {failures!r}")
        try:
            grown = self.initial * self.factor ** (failures - 1)
        except OverflowError:
            return self.max_delay
        return min(self.max_delay, grown)

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """The wait, in seconds, before the next attempt after ``failures``
        consecutive failures (from 1). ``rng`` draws the jitter (default: the
        ``random`` module's generator); pass a seeded ``random.Random`` for
        repeatable waits."""
        cap = self.cap(failures)
        if not self.jitter:
            return cap
        if rng is None:
            return random.uniform(0, cap)
        return rng.uniform(0, cap)


def _default_retry(error: BaseException) -> bool:
    if isinstance(error, ProxyError):
        return error.retryable
    if isinstance(error, ConnectionRejected):
        return 500 <= error.status_code <= 599
    return isinstance(error, (ConnectFailed, HandshakeTimeout))


@attrs.define(eq=False)
class _Current:
    """The connection last handed out, and when it was up."""

    ws: WebSocket
    opened_at: float
    closed_at: float | None = None

    def lifetime(self) -> float:
        end = trio.current_time() if self.closed_at is None else self.closed_at
        return end - self.opened_at


class Reconnecting:
    """What :func:`reconnect` returns: an async context manager whose value
    is an async iterator of connections to one URL.

    Use it as ``async with reconnect(url) as connections: async for ws in
    connections: ...``; see :func:`reconnect`.
    """

    def __init__(
        self,
        url: str,
        *,
        backoff: Backoff,
        max_attempts: int | None,
        on_failure: FailureCallback | None,
        retry: RetryPolicy | None,
        subprotocols: Sequence[str],
        headers: HeadersLike,
        ssl_context: ssl.SSLContext | None,
        proxy: ProxySetting = True,
        unix_path: str | os.PathLike[str] | None = None,
        options: ConnectionOptions,
    ) -> None:
        if max_attempts is not None and (
            not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1
        ):
            raise ValueError(
                f"max_attempts must be a positive integer or None, not {max_attempts!r}"
            )
        if not isinstance(backoff, Backoff):
            raise TypeError(f"backoff must be a Backoff, not {backoff!r}")
        #: The URL connected to.
        self.url = url
        #: The backoff policy.
        self.backoff = backoff
        self._max_attempts = max_attempts
        self._on_failure = on_failure
        self._retry: RetryPolicy = _default_retry if retry is None else retry
        # Checked now, as connect() checks its arguments.
        settings = options_from(options, reconnect)
        route = Route(ssl_context, proxy, unix_path)
        self._client = ClientSettings(subprotocols, headers, route, settings)
        self._nursery: trio.Nursery | None = None
        self._owner = OwnedNursery()
        self._state = "new"  # "new", "entered", "exited"
        self._current: _Current | None = None
        # Consecutive failures, for the backoff: failed attempts, and
        # connections that were up for less than backoff.max_delay.
        self._failures = 0
        self._busy = False

    #: The default retry policy, usable in your own ``retry`` function:
    #: True for :class:`ConnectFailed`, :class:`HandshakeTimeout`, a
    #: :class:`ConnectionRejected` with a 5xx status and a :class:`ProxyError`
    #: that is ``retryable``; False for anything else.
    default_retry = staticmethod(_default_retry)

    @property
    def connection(self) -> WebSocket | None:
        """The connection the loop body is using (possibly closed by now);
        None before the first one, while the next one is being opened, and
        after the block."""
        return None if self._current is None else self._current.ws

    # -- the async with block --------------------------------------------------

    async def __aenter__(self) -> Reconnecting:
        if self._state != "new":
            raise RuntimeError("this reconnect() was already entered; call reconnect() again")
        self._nursery = await self._owner.open()
        self._state = "entered"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._nursery is not None
        self._state = "exited"
        current, self._current = self._current, None
        try:
            if current is not None:
                # 1000 normally, 1001 when cancelled, 1011 when the body
                # raised; shielded, within close_timeout.
                await close_for_exit(current.ws, exc)
        finally:
            # Nothing of ours is left but tasks ending on their own; cancel
            # them anyway so that the nursery cannot outlive the block.
            await self._owner.close(cancel=True)

    # -- the iterator ------------------------------------------------------------

    def __aiter__(self) -> Reconnecting:
        if self._state == "new":
            raise RuntimeError(
                "iterate inside the block: 'async with trio_ws.reconnect(url) as "
                "connections: async for ws in connections: ...'"
            )
        return self

    async def __anext__(self) -> WebSocket:
        """Close the previous connection if it is still open (with 1000), wait
        as the backoff says, and return a new open connection.

        Cancellation: safe. A cancelled call leaves no connection behind (an
        attempt in progress is abandoned); the next call starts over.
        """
        if self._state != "entered":
            raise RuntimeError("the reconnect() block has ended")
        if self._busy:
            raise RuntimeError("another task is already waiting for the next connection")
        self._busy = True
        try:
            previous, self._current = self._current, None
            await self._after(previous)
            return await self._connect()
        finally:
            self._busy = False

    async def _after(self, previous: _Current | None) -> None:
        """Close the previous connection, and wait if it did not last."""
        if previous is None:
            return
        if not previous.ws.closed:
            await previous.ws.aclose()  # the loop body moved on
        lifetime = previous.lifetime()
        if lifetime >= self.backoff.max_delay:
            self._failures = 0
            return
        # A server that accepts and drops at once must not make us spin.
        self._failures += 1
        delay = self.backoff.delay(self._failures)
        logger.warning(
            "connection to %s lasted only %.3g s (%s); reconnecting in %.3g s",
            self.url,
            lifetime,
            previous.ws.close_info,
            delay,
        )
        await trio.sleep(delay)

    async def _connect(self) -> WebSocket:
        assert self._nursery is not None
        attempt = 0
        while True:
            attempt += 1
            try:
                ws = await self._client.start(self._nursery, self.url)
            except Exception as error:
                if not self._retry(error):
                    raise
                self._failures += 1
                if self._max_attempts is not None and attempt >= self._max_attempts:
                    raise ReconnectFailed(self.url, attempt, error) from error
                delay = self.backoff.delay(self._failures)
                logger.warning(
                    "attempt %d to %s failed: %s: %s; retrying in %.3g s",
                    attempt,
                    self.url,
                    type(error).__name__,
                    error,
                    delay,
                )
                if self._on_failure is not None:
                    self._on_failure(attempt, delay, error)
                await trio.sleep(delay)
                continue
            current = _Current(ws, trio.current_time())
            self._nursery.start_soon(self._watch, current)
            self._current = current
            return ws

    @staticmethod
    async def _watch(current: _Current) -> None:
        """Note when the connection ends: how long it was up decides the
        wait before the next one."""
        await current.ws.wait_closed()
        current.closed_at = trio.current_time()


def reconnect(
    url: str,
    *,
    backoff: Backoff = Backoff(),
    max_attempts: int | None = None,
    on_failure: FailureCallback | None = None,
    retry: RetryPolicy | None = None,
    subprotocols: Sequence[str] = (),
    headers: HeadersLike = (),
    ssl_context: ssl.SSLContext | None = None,
    proxy: ProxySetting = True,
    unix_path: str | os.PathLike[str] | None = None,
    **options: Unpack[ConnectionOptions],
) -> Reconnecting:
    """Connect to ``url``, and connect again whenever the connection is lost::

        async with trio_ws.reconnect(url) as connections:
            async for ws in connections:
                try:
                    async for message in ws:
                        ...
                except trio_ws.ConnectionClosed:
                    pass  # lost: the loop connects again

    Each turn of the ``async for`` gives a new open connection, to be used
    until it is lost. Asking for the next one closes the previous one with
    1000 if it is still open. The first attempt is made at once; after a
    connection is lost, the next attempt is made at once if that connection
    had been up for at least ``backoff.max_delay`` seconds, and after a
    backoff wait otherwise, so that a server that accepts and drops at once
    does not cause a tight loop.

    **Retries.** A failed attempt is retried when ``retry(error)`` is true.
    By default (:meth:`Reconnecting.default_retry`) that is for
    :class:`ConnectFailed`, :class:`HandshakeTimeout`, a
    :class:`ConnectionRejected` with a 5xx status and a :class:`ProxyError`
    whose ``retryable`` is true (the proxy could not reach the server):
    failures that may go away by themselves. A 4xx rejection, a proxy
    refusing the credentials, :class:`TLSError`,
    :class:`InvalidHandshake` and :class:`InvalidURL` are raised at once:
    trying again would fail again. Before each retry the wait is drawn from
    ``backoff`` (see :class:`Backoff`), a WARNING is logged on the
    ``trio_ws`` logger, and ``on_failure(attempt, delay, error)`` is called
    (``attempt`` counts from 1 since the last successful connection; an
    exception it raises propagates). After ``max_attempts`` failed attempts
    in a row (None: never), :class:`ReconnectFailed` is raised, with the
    last error as its ``__cause__``. Exceptions always come out alone, never
    in an ExceptionGroup.

    **Why ``async with``.** The connections' background tasks need a
    nursery, and a nursery must be closed by the task that opened it, at a
    known point. An async generator that held one across ``yield`` could not
    promise that: when the loop ends with ``break`` or an exception, Python
    finalizes the generator later, from another task (or not at all), so
    its connection would stay open and its tasks would outlive the loop.
    The ``async with`` block is that known point: leaving it in any way --
    the end of the block, ``break``, an exception, cancellation -- closes
    the current connection (1000 normally, 1001 when cancelled, 1011 when
    the block raised; shielded, within ``close_timeout``) and ends every
    task it started. ``async for`` over ``reconnect()`` without the ``async
    with`` raises RuntimeError.

    **Cancellation.** Cancelling the loop while it connects or waits is
    safe: nothing is left behind, and the block closes the connection as
    above.

    ``subprotocols``, ``headers``, ``ssl_context``, ``proxy``, ``unix_path``
    and ``**options`` are those of :func:`connect`, used for every
    connection (with ``proxy=True``, the environment is read again at each
    attempt); the options are the
    connection options of :class:`Options` (``open_timeout``,
    ``close_timeout``, ``max_message_size``, ``max_queue``,
    ``max_queue_bytes``, ``ping_interval``, ``ping_timeout``, ``frame_size``,
    ``compression``), checked when ``reconnect()`` is called: an unknown
    name raises TypeError naming the closest valid one, a bad value
    ValueError.
    """
    return Reconnecting(
        url,
        backoff=backoff,
        max_attempts=max_attempts,
        on_failure=on_failure,
        retry=retry,
        subprotocols=subprotocols,
        headers=headers,
        ssl_context=ssl_context,
        proxy=proxy,
        unix_path=unix_path,
        options=options,
    )
