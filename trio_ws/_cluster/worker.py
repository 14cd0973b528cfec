"""The worker's side of worker processes: :func:`current_worker` and :class:`Worker`.

A supervisor (workers.py) starts each worker process with its description
in the ``TRIO_WS_WORKER`` environment variable: its index, the host and
port it serves, the listening sockets it inherits (if the workers share
one socket of the supervisor's) and its end of its *lifeline*, a socket
pair to the supervisor. :func:`current_worker` reads that description;
:meth:`Worker.serve` serves the port, says on the lifeline that it does,
and stops on SIGTERM, SIGINT, or when the supervisor's end of the lifeline
closes (the supervisor is gone, however it ended).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._endpoints.forwarded import X_FORWARDED_FOR
from .._endpoints.server import Handler, Server, check_serve_arguments, serve, serve_listeners
from .._endpoints.server_handshake import OriginRule, ProcessRequest
from .._options import ConnectionOptions

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Unpack  # for type checkers only

__all__ = ["ENV_VAR", "READY", "Worker", "current_worker", "describe"]

logger = logging.getLogger("trio_ws")

#: The environment variable through which the supervisor describes a worker
#: to itself (JSON: index, host, port, inherited sockets, lifeline).
ENV_VAR = "TRIO_WS_WORKER"

#: What a worker sends on its lifeline once it serves.
READY = b"r"


def describe(index: int, host: str | None, port: int, fds: Sequence[int], lifeline: int) -> str:
    """The value of ``ENV_VAR`` for a worker: what :func:`current_worker` reads."""
    return json.dumps(
        {"index": index, "host": host, "port": port, "fds": list(fds), "lifeline": lifeline}
    )


@attrs.define(eq=False)
class Worker:
    """This process, as one of the workers of a supervisor: see
    :func:`current_worker`."""

    #: Which worker this is, from 0 to ``workers - 1``; a restarted worker
    #: gets the index of the one it replaces.
    index: int
    #: The interface and port every worker serves.
    host: str | None
    port: int
    #: The listening sockets inherited from the supervisor (file descriptors);
    #: empty when each worker binds its own with ``SO_REUSEPORT``.
    fds: tuple[int, ...]
    #: This worker's end of its lifeline to the supervisor.
    lifeline: int
    _serving: bool = attrs.field(default=False, init=False)

    async def serve(
        self,
        handler: Handler,
        *,
        ssl_context: ssl.SSLContext | None = None,
        process_request: ProcessRequest | None = None,
        subprotocols: Sequence[str] = (),
        origins: Sequence[OriginRule] | None = None,
        max_connections: int | None = None,
        backlog: int | None = None,
        trusted_proxies: Sequence[str] | None = None,
        forwarded_header: str = X_FORWARDED_FOR,
        task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
        **options: Unpack[ConnectionOptions],
    ) -> None:
        """:func:`trio_ws.serve` on the supervisor's port, until SIGTERM or
        SIGINT arrives, the supervisor is gone, or this is cancelled; then
        every connection is closed with 1001 Going Away (within
        ``close_timeout``) and it returns. The keyword arguments are those of
        ``serve``, all but ``host``, ``port`` and ``reuse_port`` (``backlog``
        counts only where each worker binds its own socket). ``**options``
        are the connection options of :class:`Options` (``open_timeout``,
        ``close_timeout``, ``max_message_size``, ``max_queue``,
        ``max_queue_bytes``, ``ping_interval``, ``ping_timeout``,
        ``frame_size``, ``compression``), checked before anything starts: an
        unknown name raises TypeError naming the closest valid one, a bad
        value ValueError.

        With ``server = await nursery.start(worker.serve, handler)`` it gives
        the :class:`Server` once it listens, after telling the supervisor so.
        The signal handlers stay installed until every connection is closed,
        so that a second SIGTERM does not cut the shutdown short. Called once
        per worker process."""
        for name in ("host", "port", "reuse_port"):
            if name in options:
                raise TypeError(f"Worker.serve() listens where the supervisor says: no {name}=")
        check_serve_arguments(max_connections, options, Worker.serve)
        if self._serving:
            raise RuntimeError("Worker.serve() runs once per worker process")
        self._serving = True
        listen = functools.partial(
            self._listen,
            handler,
            ssl_context=ssl_context,
            process_request=process_request,
            subprotocols=subprotocols,
            origins=origins,
            max_connections=max_connections,
            backlog=backlog,
            trusted_proxies=trusted_proxies,
            forwarded_header=forwarded_header,
            **options,
        )
        lifeline = trio.socket.from_stdlib_socket(socket.socket(fileno=self.lifeline))
        with lifeline, trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                server: Server = await nursery.start(listen)
                nursery.start_soon(self._watch_supervisor, lifeline, nursery.cancel_scope)
                try:
                    await lifeline.send(READY)
                except OSError:
                    pass  # the supervisor is gone: _watch_supervisor sees it
                logger.info(
                    "worker %d (pid %d) serving on port %d", self.index, os.getpid(), self.port
                )
                task_status.started(server)
                async for signum in signals:
                    logger.info(
                        "worker %d (pid %d): %s, closing its connections",
                        self.index,
                        os.getpid(),
                        signal.Signals(signum).name,
                    )
                    break
                nursery.cancel_scope.cancel()

    async def _listen(
        self,
        handler: Handler,
        *,
        backlog: int | None,
        task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
        **serve_arguments: Any,
    ) -> None:
        if not self.fds:
            await serve(
                handler,
                self.host,
                self.port,
                backlog=backlog,
                reuse_port=True,
                task_status=task_status,
                **serve_arguments,
            )
            return
        # The supervisor's listening sockets: the backlog is the one it chose.
        listeners = [
            trio.SocketListener(trio.socket.from_stdlib_socket(socket.socket(fileno=fd)))
            for fd in self.fds
        ]
        await serve_listeners(handler, listeners, task_status=task_status, **serve_arguments)

    async def _watch_supervisor(
        self, lifeline: trio.socket.SocketType, scope: trio.CancelScope
    ) -> None:
        try:
            while await lifeline.recv(64):
                pass
        except OSError:
            pass
        logger.warning(
            "worker %d (pid %d): the supervisor is gone, closing its connections",
            self.index,
            os.getpid(),
        )
        scope.cancel()


_current: Worker | None = None


def current_worker() -> Worker | None:
    """This process as a worker started by :func:`open_workers` or
    :func:`run_workers`, or None when it was started some other way.

    The supervisor describes the worker in the ``TRIO_WS_WORKER`` environment
    variable; the first call reads it and removes it from ``os.environ``, so
    that the worker's own child processes do not take themselves for
    workers; later calls return the same :class:`Worker`."""
    global _current
    if _current is None:
        described = os.environ.pop(ENV_VAR, None)
        if described is None:
            return None
        try:
            fields = json.loads(described)
            _current = Worker(
                index=int(fields["index"]),
                host=fields["host"],
                port=int(fields["port"]),
                fds=tuple(int(fd) for fd in fields["fds"]),
                lifeline=int(fields["lifeline"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(f"malformed {ENV_VAR} in the environment: {described!r}") from exc
    return _current
