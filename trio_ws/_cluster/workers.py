"""Worker processes: one port served by several processes, under a supervisor.

This module is the supervisor: a Trio program (:func:`open_workers`,
:func:`run_workers`) that starts ``workers`` copies of a command, each a
child process that serves the same port, and restarts those that exit.
Where the kernel spreads connections among sockets bound with
``SO_REUSEPORT`` (Linux), each worker binds its own listening socket with
it; elsewhere the supervisor binds one listening socket and the workers
inherit it. The worker's side, :func:`current_worker` and
:meth:`Worker.serve`, is in worker.py.

The supervisor and each worker are joined by a socket pair, the worker's
*lifeline*: the worker reports on it that it is serving, and sees the
supervisor's end close when the supervisor is gone, however it ended
(SIGKILL included), upon which it stops too.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, NoReturn

import attrs
import trio

from .._app.reconnect import Backoff
from .._errors import WebSocketError
from .worker import ENV_VAR, READY, describe

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["WorkerCrashLoop", "Workers", "open_workers", "run_workers"]

logger = logging.getLogger("trio_ws")

#: How the workers share the port: their own ``SO_REUSEPORT`` sockets, or
#: one socket of the supervisor's; "auto" picks the first where the kernel
#: balances connections among ``SO_REUSEPORT`` sockets (Linux).
Share = Literal["auto", "reuse_port", "inherit"]

#: The default wait before restarting a worker that exited: 0.2 s after a
#: worker that had run for a while, doubling for one that keeps exiting, up to 5 s.
RESTART_BACKOFF = Backoff(initial=0.2, factor=2.0, max_delay=5.0)


class WorkerCrashLoop(WebSocketError):
    """A worker kept exiting: more than ``max_restarts`` times within
    ``restart_window`` seconds (a worker not serving ``ready_timeout``
    seconds after it started is stopped, and that counts). The supervisor
    stopped every worker before raising it."""

    def __init__(self, index: int, exits: int, window: float, last: str) -> None:
        super().__init__(
            f"worker {index} exited {exits} times within {window:g} s "
            f"(the last time: {last}); gave up and stopped every worker"
        )
        #: The index of the worker that kept exiting.
        self.index = index
        #: How many times it exited within the window...
        self.exits = exits
        #: ... of this many seconds.
        self.window = window
        #: How its last run ended, in words.
        self.last = last


def _choose_share(share: Share) -> Literal["reuse_port", "inherit"]:
    if share == "auto":
        # Elsewhere (macOS, the BSDs) SO_REUSEPORT does not spread
        # connections among the sockets: one of them would get them all.
        return "reuse_port" if sys.platform.startswith("linux") else "inherit"
    if share == "reuse_port" and not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("share='reuse_port': this platform has no SO_REUSEPORT")
    if share not in ("reuse_port", "inherit"):
        raise ValueError(f"share must be 'auto', 'reuse_port' or 'inherit', not {share!r}")
    return share


async def _bind_shared(
    host: str | None, port: int, share: Literal["reuse_port", "inherit"]
) -> list[socket.socket]:
    """The supervisor's sockets, one per address of ``host``, all on one port
    (the one the first got, for ``port=0``). With "reuse_port" they are
    bound, with ``SO_REUSEPORT``, but do not listen: they hold the port while
    workers come and go, and get no connections. With "inherit" they listen,
    and the workers accept on them."""
    addresses = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in addresses:
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as exc:
                if exc.errno == errno.EAFNOSUPPORT:
                    continue
                raise
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if share == "reuse_port":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address[0], port, *address[2:]))
            port = sock.getsockname()[1]
            if share == "inherit":
                sock.listen(0xFFFF)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise OSError(errno.EAFNOSUPPORT, f"no usable address family for {host!r}")
    return sockets


def _ended(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


@attrs.define(eq=False)
class _Run:
    """One run of one worker process."""

    process: trio.Process
    started_at: float
    ready: bool = False
    timed_out: bool = False


class Workers:
    """Worker processes serving one port, as given by ``async with
    open_workers(...) as workers``."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        count: int,
        host: str | None,
        port: int,
        share: Literal["reuse_port", "inherit"],
        sockets: Sequence[socket.socket],
        env: Mapping[str, str],
        backoff: Backoff,
        max_restarts: int,
        restart_window: float,
        ready_timeout: float,
        stop_timeout: float,
    ) -> None:
        self._command = list(command)
        #: How many workers there are.
        self.count = count
        #: The interface they serve (None: every interface).
        self.host = host
        #: The port they serve.
        self.port = port
        #: How they share it: "reuse_port" or "inherit".
        self.share = share
        self._inherited = [sock.fileno() for sock in sockets] if share == "inherit" else []
        self._env = dict(env)
        self._backoff = backoff
        self._max_restarts = max_restarts
        self._restart_window = restart_window
        self._ready_timeout = ready_timeout
        self._stop_timeout = stop_timeout
        self._pids: dict[int, int] = {}
        #: How many times a worker was restarted after it exited.
        self.restarts = 0

    @property
    def pids(self) -> dict[int, int]:
        """The process id of each worker serving now, by index (a worker
        being started or restarted is missing until it serves)."""
        return dict(self._pids)

    def __repr__(self) -> str:
        return f"<Workers {len(self._pids)}/{self.count} serving port {self.port}>"

    async def _keep_running(self, index: int, serving: trio.Event) -> NoReturn:
        """Run worker ``index`` and restart it whenever it exits, until
        cancelled (then it is stopped) or until it exits too often."""
        exits: deque[float] = deque()
        failures = 0
        while True:
            run = await self._run_once(index, serving)
            # An exit while the supervisor stops is no reason to restart.
            await trio.lowlevel.checkpoint_if_cancelled()
            now = trio.current_time()
            exits.append(now)
            while exits[0] < now - self._restart_window:
                exits.popleft()
            returncode = run.process.returncode
            assert returncode is not None
            ended = _ended(returncode)
            if run.timed_out:
                ended += f", stopped: not serving within {self._ready_timeout:g} s"
            elif not run.ready:
                ended += ", before it was serving"
            if len(exits) > self._max_restarts:
                raise WorkerCrashLoop(index, len(exits), self._restart_window, ended)
            uptime = now - run.started_at
            # A worker that ran for a while is restarted at once (or nearly);
            # one that keeps exiting, after longer and longer waits.
            failures = failures + 1 if uptime < self._backoff.max_delay else 1
            delay = self._backoff.delay(failures)
            logger.warning(
                "worker %d (pid %d) exited unexpectedly (%s) after %.1f s; "
                "restarting it in %.2f s",
                index,
                run.process.pid,
                ended,
                uptime,
                delay,
            )
            await trio.sleep(delay)
            self.restarts += 1

    async def _run_once(self, index: int, serving: trio.Event) -> _Run:
        """Start worker ``index``, wait for it to exit, return how it went.
        Cancelled, it stops the worker first (SIGTERM, then SIGKILL after
        ``stop_timeout``)."""
        ours, theirs = socket.socketpair()
        with trio.socket.from_stdlib_socket(ours) as lifeline:
            try:
                described = describe(index, self.host, self.port, self._inherited, theirs.fileno())
                process = await trio.lowlevel.open_process(
                    self._command,
                    env={**self._env, ENV_VAR: described},
                    pass_fds=(theirs.fileno(), *self._inherited),
                    stdin=subprocess.DEVNULL,
                    # Its own process group: a Ctrl-C in the terminal reaches
                    # the supervisor only, which then stops every worker.
                    start_new_session=True,
                )
            finally:
                theirs.close()
            run = _Run(process, trio.current_time())
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._await_serving, index, run, lifeline, serving)
                    await process.wait()
                    nursery.cancel_scope.cancel()
            finally:
                self._pids.pop(index, None)
                with trio.CancelScope(shield=True):
                    await self._stop(index, process)
        return run

    async def _await_serving(
        self, index: int, run: _Run, lifeline: trio.socket.SocketType, serving: trio.Event
    ) -> None:
        with trio.move_on_after(self._ready_timeout):
            try:
                said = await lifeline.recv(1)
            except OSError:
                said = b""
            if said == READY:
                run.ready = True
                self._pids[index] = run.process.pid
                serving.set()
                logger.info("worker %d (pid %d) started", index, run.process.pid)
            return  # b"": it closed its lifeline, so it is exiting
        run.timed_out = True
        logger.warning(
            "worker %d (pid %d) was not serving after %g s: is it using "
            "trio_ws.current_worker().serve()? Stopping it",
            index,
            run.process.pid,
            self._ready_timeout,
        )
        await self._stop(index, run.process)

    async def _stop(self, index: int, process: trio.Process) -> None:
        if process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(self._stop_timeout):
            await process.wait()
        if process.returncode is None:
            logger.warning(
                "worker %d (pid %d) did not stop within %g s of SIGTERM: killing it",
                index,
                process.pid,
                self._stop_timeout,
            )
            process.kill()
            await process.wait()


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, not {value!r}")


def _lone_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The only exception in ``group`` (however nested), or None."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc


@asynccontextmanager
async def open_workers(
    command: Sequence[str],
    *,
    workers: int,
    host: str | None,
    port: int,
    share: Share = "auto",
    env: Mapping[str, str] | None = None,
    backoff: Backoff = RESTART_BACKOFF,
    max_restarts: int = 5,
    restart_window: float = 60.0,
    ready_timeout: float = 30.0,
    stop_timeout: float = 15.0,
) -> AsyncIterator[Workers]:
    """Supervise ``workers`` processes running ``command`` (an argv list,
    such as ``[sys.executable, "app.py"]``) that all serve ``host``:``port``:
    ``async with trio_ws.open_workers(...) as group:`` enters once every
    worker serves; leaving the block stops them all.

    Each worker is a child process whose program serves with
    ``await trio_ws.current_worker().serve(handler)``. ``share`` says how
    they share the port: "reuse_port" (each worker listens on a socket of
    its own, bound with ``SO_REUSEPORT``; the kernel spreads connections
    among them), "inherit" (the supervisor listens; the workers inherit its
    socket and accept on it) or "auto": the first on Linux, the second
    elsewhere. Either way the supervisor holds the port from the start
    (``port=0`` picks a free one: ``group.port``) and raises OSError if it
    is taken. ``env`` adds to the workers' environment.

    A worker that exits while the block runs is restarted after a wait from
    ``backoff`` (longer each time it exits again soon), each exit logged as
    a warning on the "trio_ws" logger. One that exits more than
    ``max_restarts`` times within ``restart_window`` seconds, or is not
    serving ``ready_timeout`` seconds after it started (then stopped and
    counted as an exit), makes the supervisor stop every worker and raise
    :class:`WorkerCrashLoop` out of the block.

    Stopping (leaving the block, or cancellation) sends SIGTERM to every
    worker, which closes its connections with 1001 Going Away, and waits;
    a worker still running ``stop_timeout`` seconds later is killed. Should
    the supervisor die without stopping them (SIGKILL), each worker sees its
    lifeline close and stops the same way. POSIX only.
    """
    if sys.platform == "win32":  # pragma: no cover
        raise RuntimeError("worker processes need a POSIX system")
    command = list(command)
    if not command or not all(isinstance(part, str) for part in command):
        raise TypeError(f"command must be a non-empty list of str, not {command!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, not {workers!r}")
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise ValueError(f"max_restarts must be an integer >= 0, not {max_restarts!r}")
    for name, value in (
        ("restart_window", restart_window),
        ("ready_timeout", ready_timeout),
        ("stop_timeout", stop_timeout),
    ):
        _positive(name, value)
    chosen = _choose_share(share)
    sockets = await _bind_shared(host, port, chosen)
    try:
        group = Workers(
            command,
            count=workers,
            host=host,
            port=sockets[0].getsockname()[1],
            share=chosen,
            sockets=sockets,
            env={**os.environ, **(env or {})},
            backoff=backoff,
            max_restarts=max_restarts,
            restart_window=restart_window,
            ready_timeout=ready_timeout,
            stop_timeout=stop_timeout,
        )
        try:
            async with trio.open_nursery() as nursery:
                serving = [trio.Event() for _ in range(workers)]
                for index, event in enumerate(serving):
                    nursery.start_soon(group._keep_running, index, event)
                for event in serving:
                    await event.wait()
                logger.info(
                    "%d workers serving port %d (pids %s)",
                    workers,
                    group.port,
                    ", ".join(str(pid) for _, pid in sorted(group.pids.items())),
                )
                try:
                    yield group
                finally:
                    logger.info("stopping %d workers", workers)
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as exc_group:
            # One clear error (a crash loop, or the block's own), not a group of one.
            lone = _lone_error(exc_group)
            if lone is None:
                raise
            raise lone from lone.__cause__
    finally:
        for sock in sockets:
            sock.close()


def run_workers(
    command: Sequence[str],
    *,
    workers: int,
    host: str | None,
    port: int,
    on_ready: Callable[[Workers], object] | None = None,
    share: Share = "auto",
    env: Mapping[str, str] | None = None,
    backoff: Backoff = RESTART_BACKOFF,
    max_restarts: int = 5,
    restart_window: float = 60.0,
    ready_timeout: float = 30.0,
    stop_timeout: float = 15.0,
) -> None:
    """Run :func:`open_workers` as a program: start the workers, call
    ``on_ready(group)`` (if given) once every one serves, and supervise them
    until SIGINT (Ctrl-C) or SIGTERM; then stop them all and return. Raises
    :class:`WorkerCrashLoop` if a worker keeps exiting. The other keyword
    arguments are those of :func:`open_workers` (``share``, ``env``,
    ``backoff``, ``max_restarts``, ``restart_window``, ``ready_timeout``,
    ``stop_timeout``); the connection options are given to each worker's
    :meth:`Worker.serve`, in its own program."""
    try:
        trio.run(
            functools.partial(
                _supervise_until_signal,
                command,
                workers=workers,
                host=host,
                port=port,
                on_ready=on_ready,
                share=share,
                env=env,
                backoff=backoff,
                max_restarts=max_restarts,
                restart_window=restart_window,
                ready_timeout=ready_timeout,
                stop_timeout=stop_timeout,
            )
        )
    except BaseExceptionGroup as exc_group:
        lone = _lone_error(exc_group)
        if lone is None:
            raise
        raise lone from lone.__cause__


async def _supervise_until_signal(
    command: Sequence[str],
    *,
    on_ready: Callable[[Workers], object] | None,
    **options: Any,
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    logger.info("supervisor: %s", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            async with open_workers(command, **options) as group:
                if on_ready is not None:
                    on_ready(group)
                await trio.sleep(math.inf)
