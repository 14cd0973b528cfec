"""The server's accept loop: one task per listener, which hands each accepted
stream to a task of the server's nursery and waits out a lack of file
descriptors or kernel memory with a short, quietly logged backoff."""

from __future__ import annotations

import errno
import logging
import math
import os
from collections.abc import Awaitable, Callable
from typing import NoReturn

import trio

__all__ = ["AcceptFailures", "accept_connections"]

logger = logging.getLogger("trio_ws")

#: accept() errors that mean the process or the system ran out of file
#: descriptors or memory: the server waits and retries instead of stopping.
CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

#: The first wait after such an error; it doubles while they go on, up to RETRY_MAX.
RETRY_FIRST = 0.1
RETRY_MAX = 1.0

#: Seconds between two warnings while accept() keeps failing.
REPORT_EVERY = 10.0


class AcceptFailures:
    """The log of accept() failing for lack of resources, shared by a
    server's listeners: a WARNING when it starts, then one line per
    REPORT_EVERY seconds at most while it goes on, with the number of failed
    accepts and no traceback; an INFO line when accepting works again. A
    server hovering at its limit fails and recovers over and over: failures
    within REPORT_EVERY of the last line are counted, not announced."""

    def __init__(self) -> None:
        self._count = 0  # failed accepts since the last INFO line
        self._since = 0.0  # when the first of them failed
        self._unreported = 0  # failed accepts not counted in a log line yet
        self._reported_at = -math.inf  # when the last line was logged
        self._warned = False  # a WARNING was logged, and no INFO line since

    def failed(self, exc: OSError) -> None:
        """Count a failed accept; log it unless a line was logged lately."""
        now = trio.current_time()
        if not self._count:
            self._since = now
        self._count += 1
        self._unreported += 1
        if now - self._reported_at < REPORT_EVERY:
            return
        code = exc.errno or 0
        name, text = errno.errorcode.get(code, str(code)), os.strerror(code)
        if self._warned:
            logger.warning(
                "accept() still failing with %s (%s): %d failed accepts in the last %.0f s",
                name,
                text,
                self._unreported,
                now - self._reported_at,
            )
        else:
            logger.warning(
                "accept() failed with %s (%s): new connections wait in the listen "
                "queue; retrying, at most %g s apart",
                name,
                text,
                RETRY_MAX,
            )
        self._warned = True
        self._reported_at = now
        self._unreported = 0

    def recovered(self) -> None:
        """An accept worked after failures: say so, if they were reported
        (else the next line counts them)."""
        if not self._warned:
            return
        now = trio.current_time()
        logger.info(
            "accepting connections again after %d failed accepts in %.1f s",
            self._count,
            now - self._since,
        )
        self._warned = False
        self._reported_at = now
        self._count = self._unreported = 0


async def accept_connections(
    listener: trio.SocketListener,
    nursery: trio.Nursery,
    handle: Callable[[trio.SocketStream], Awaitable[None]],
    failures: AcceptFailures,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Accept connections on ``listener`` until cancelled, starting
    ``handle(stream)`` in ``nursery`` for each (``handle`` closes the
    stream); report ready once accepting. The listener is closed when this
    ends. accept() errors other than
    CAPACITY_ERRNOS are raised.

    Cancellation: stops accepting and closes the listener; the connections
    already handed over are the nursery's."""
    async with listener:
        task_status.started()
        delay = 0.0
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in CAPACITY_ERRNOS:
                    raise
                failures.failed(exc)
                delay = min(max(2 * delay, RETRY_FIRST), RETRY_MAX)
                await trio.sleep(delay)
                continue
            if delay:
                delay = 0.0
                failures.recovered()
            nursery.start_soon(handle, stream)
