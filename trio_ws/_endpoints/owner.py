"""Blocks that own tasks: how ``connect()``, ``reconnect()`` and ``open_pool()``
keep their background tasks inside the caller's ``async with`` block.

The block's body runs inside a nursery, so nothing it started can outlive
it; but the body's exceptions are not passed through that nursery, so they
come out unchanged rather than wrapped in an ExceptionGroup. That holds
because the tasks in these nurseries never raise (connections catch and log
their own failures).
"""

from __future__ import annotations

from typing import Any

import trio

from .._conn.connection import WebSocket
from .._conn.lifecycle import close_explained
from .._errors import ConnectionClosed, consists_of
from .._wire.close import CloseCode

__all__ = ["OwnedNursery", "close_for_exit", "exit_close_frame"]


class OwnedNursery:
    """A nursery entered in one ``__aenter__`` and exited in the matching
    ``__aexit__`` (same task, properly nested)."""

    def __init__(self) -> None:
        self._manager: Any = None
        self.nursery: trio.Nursery | None = None

    async def open(self) -> trio.Nursery:
        """Enter the nursery; the caller's block then runs inside it."""
        self._manager = trio.open_nursery()
        self.nursery = await self._manager.__aenter__()
        return self.nursery

    async def close(self, *, cancel: bool = False) -> None:
        """Wait for (or, with ``cancel``, first cancel) the tasks, then exit
        the nursery without handing it the block's exception."""
        assert self.nursery is not None
        if cancel:
            self.nursery.cancel_scope.cancel()
        await self._manager.__aexit__(None, None, None)


def exit_close_frame(exc: BaseException | None) -> tuple[int, str, str | None]:
    """The close code, reason and cause for a connection whose block ended
    with ``exc`` (None: it ended normally)."""
    if exc is None or consists_of(exc, ConnectionClosed):
        return CloseCode.NORMAL_CLOSURE, "", None
    if consists_of(exc, (trio.Cancelled, KeyboardInterrupt, ConnectionClosed)):
        return CloseCode.GOING_AWAY, "", "the block using the connection was cancelled"
    return CloseCode.INTERNAL_ERROR, "client error", f"application error: {exc!r}"


async def close_for_exit(ws: WebSocket, exc: BaseException | None) -> None:
    """Close ``ws`` as its block ended, shielded, within ``close_timeout``."""
    with trio.CancelScope(shield=True):
        await close_explained(ws, *exit_close_frame(exc))
