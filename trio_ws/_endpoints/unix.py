"""Serving on a Unix socket: ``serve_unix``.

The socket file is ours from bind to stop. Before binding, whatever is at
the path is looked at: nothing, or a socket nobody listens on (left behind
by a server that was killed: connecting to it is refused), is fine, the
latter being removed; a socket someone listens on is an error (EADDRINUSE),
and so is anything that is not a socket (FileExistsError): a regular file is
never deleted. The file's mode is set between ``bind()`` and ``listen()``,
while a client that tries to connect is still refused, so that nobody ever
connects with more rights than ``mode`` gives. When the server stops, the
file is removed if it is still the one we bound (same device and inode):
one that another server has put there meanwhile is left alone.

A path that starts with ``"\\0"`` names a socket in Linux's abstract
namespace: no file, no mode, nothing to clean up.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl
import stat
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from .._options import ConnectionOptions
from .forwarded import X_FORWARDED_FOR, trusted_proxies_from
from .server import Handler, Server, check_serve_arguments, serve_listeners
from .server_handshake import OriginRule, ProcessRequest

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Unpack  # for type checkers only

__all__ = ["bind_unix", "serve_unix"]

logger = logging.getLogger("trio_ws")

#: The backlog when none is given (as trio.open_tcp_listeners uses).
_DEFAULT_BACKLOG = 0xFFFF


def _clear_stale(path: str) -> None:
    """Make room at ``path``: remove a socket file nobody listens on; raise
    for one somebody does (EADDRINUSE) and for anything that is not a
    socket (FileExistsError)."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(found.st_mode):
        raise FileExistsError(
            errno.EEXIST,
            f"{path!r} exists and is not a socket; not replacing it (remove it, or "
            "choose another path)",
            path,
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.setblocking(False)  # a full backlog answers EAGAIN, not a wait
        result = probe.connect_ex(path)
    finally:
        probe.close()
    if result == errno.ECONNREFUSED:
        logger.info("removing the stale socket file %r (nobody listens on it)", path)
        try:
            os.unlink(path)
        except FileNotFoundError:  # removed meanwhile: as good
            pass
    elif result in (0, errno.EAGAIN, errno.EINPROGRESS):
        raise OSError(
            errno.EADDRINUSE,
            f"another process is listening on the Unix socket {path!r} "
            "(stop it, or choose another path)",
        )
    elif result != errno.ENOENT:  # (ENOENT: removed meanwhile)
        raise OSError(result, f"cannot tell whether {path!r} is in use: {os.strerror(result)}")


def bind_unix(
    path: str | os.PathLike[str], *, mode: int | None = None, backlog: int | None = None
) -> tuple[trio.SocketListener, tuple[int, int] | None]:
    """A listening Unix socket at ``path`` (see the module docstring), and
    the (device, inode) of its file (None in the abstract namespace)."""
    name = os.fspath(path)
    if not hasattr(socket, "AF_UNIX"):  # pragma: no cover - Windows
        raise OSError(errno.EAFNOSUPPORT, "Unix sockets are not available on this platform")
    abstract = name.startswith("\0")
    if abstract and not sys.platform.startswith("linux"):  # pragma: no cover
        raise ValueError("abstract Unix sockets (a path starting with '\\0') need Linux")
    if abstract and mode is not None:
        raise ValueError("an abstract Unix socket has no file, hence no mode")
    if mode is not None and (not isinstance(mode, int) or not 0 <= mode <= 0o7777):
        raise ValueError(f"mode must be a file mode such as 0o660, not {mode!r}")
    if not name or name == "\0":
        raise ValueError("serve_unix() needs a path")
    if not abstract:
        _clear_stale(name)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(name)
        identity = None
        try:
            if not abstract:
                found = os.stat(name)
                identity = (found.st_dev, found.st_ino)
                if mode is not None:
                    os.chmod(name, mode)  # before listen(): nobody connected yet
            sock.listen(_DEFAULT_BACKLOG if backlog is None else min(backlog, _DEFAULT_BACKLOG))
        except BaseException:  # no file of ours left behind
            if identity is not None:
                _remove_if_ours(name, identity)
            raise
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    except BaseException:
        sock.close()
        raise
    return listener, identity


def _remove_if_ours(path: str, identity: tuple[int, int]) -> None:
    """Remove ``path`` if it is still the socket file we bound."""
    try:
        found = os.lstat(path)
        if (found.st_dev, found.st_ino) == identity:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # pragma: no cover - a directory made unwritable meanwhile
        logger.warning("could not remove the socket file %r: %s", path, exc)


async def serve_unix(
    handler: Handler,
    path: str | os.PathLike[str],
    *,
    mode: int | None = None,
    backlog: int | None = None,
    ssl_context: ssl.SSLContext | None = None,
    process_request: ProcessRequest | None = None,
    subprotocols: Sequence[str] = (),
    origins: Sequence[OriginRule] | None = None,
    max_connections: int | None = None,
    trusted_proxies: Sequence[str] | None = None,
    forwarded_header: str = X_FORWARDED_FOR,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
    **options: Unpack[ConnectionOptions],
) -> None:
    """Serve WebSocket connections on the Unix socket ``path``, calling
    ``await handler(ws)`` in a new task for each one: as :func:`serve`
    does on a TCP port, with the same keyword arguments (``ssl_context``
    serves TLS over the socket) and the same :class:`Server` from
    ``server = await nursery.start(trio_ws.serve_unix, handler, path)``,
    whose ``unix_path`` is ``path`` and ``ports`` empty. Clients connect with
    ``trio_ws.connect(url, unix_path=path)``, the URL giving the Host header
    and the request path.

    ``mode`` (an int such as ``0o660``) is set on the socket file before it
    accepts connections; None leaves what the umask gives. Connecting needs
    write permission on the file: a reverse proxy running as another user
    needs a mode (and group) that lets it. A stale socket file at ``path``
    (nobody listening on it) is replaced; a live one raises OSError
    (EADDRINUSE) and anything else that exists there FileExistsError, before
    anything is bound. The file is removed when the server stops, if it is
    still the one this server bound. A ``path`` starting with ``"\\0"`` is a
    Linux abstract socket: no file, no ``mode``.

    Peers on a Unix socket have no IP address: ``"unix"`` in
    ``trusted_proxies`` trusts them (a proxy on this machine) to name the
    client in ``forwarded_header``.

    Cancellation: as for :func:`serve`. Cancelling the nursery that runs the
    server (or ``await server.aclose()``) stops listening, closes every
    connection with 1001 within ``close_timeout``, then removes the file.
    """
    # Checked before the path is touched: no stale file removed for nothing.
    check_serve_arguments(max_connections, options, serve_unix)
    trusted_proxies_from(trusted_proxies, forwarded_header)
    listener, identity = bind_unix(path, mode=mode, backlog=backlog)
    try:
        await serve_listeners(
            handler,
            [listener],
            ssl_context=ssl_context,
            process_request=process_request,
            subprotocols=subprotocols,
            origins=origins,
            max_connections=max_connections,
            trusted_proxies=trusted_proxies,
            forwarded_header=forwarded_header,
            task_status=task_status,
            **options,
        )
    finally:
        if identity is not None:
            _remove_if_ours(os.fspath(path), identity)
