"""Named hooks into a live connection, for tests and debugging only.

Tests assert things that the public API does not (and should not) expose:
how many tasks an idle connection costs, whether reading is paused, which
parsing path is in use. Rather than reach into a :class:`WebSocket`'s
private attributes, they call these functions, so that the connection's
internals can change without touching every test that observes them: only
this module (besides the connection's own modules) reads them.

Nothing here is re-exported from :mod:`trio_ws`, and nothing here changes
how a connection behaves, except :func:`set_socket_buffers`, which changes
the kernel's socket buffers as any owner of the socket could.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import trio

from ._wire.framing import FrameBuffer, frame_decoder

if TYPE_CHECKING:
    from ._conn.connection import WebSocket
    from ._wire.deflate import DeflateExtension

__all__ = [
    "background_tasks",
    "copy_free_reading",
    "guarded_scopes",
    "holds_compressor",
    "negotiated_deflate",
    "pings_waiting",
    "reading_paused",
    "set_socket_buffers",
    "socket_of",
]


def socket_of(ws: WebSocket) -> trio.socket.SocketType | None:
    """The TCP socket under ``ws`` (under its TLS layer too), or None on other
    streams. For tests that shrink kernel buffers, or that end the TCP
    connection for real (``close()``, ``shutdown()``, a reset with
    ``SO_LINGER``) to see how the connection copes."""
    stream: trio.abc.Stream = ws._stream
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        return stream.socket
    return None


def set_socket_buffers(ws: WebSocket, send: int | None = None, receive: int | None = None) -> None:
    """Set the kernel's send and/or receive buffer sizes of ``ws``'s socket
    (``SO_SNDBUF``, ``SO_RCVBUF``): small buffers make a peer that does not
    read block our writes, or our reading back up, after a few KiB instead
    of megabytes. TypeError if ``ws`` runs on no socket."""
    sock = socket_of(ws)
    if sock is None:
        raise TypeError(f"{ws!r} runs on no socket")
    if send is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send)
    if receive is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive)


def background_tasks(ws: WebSocket) -> int:
    """How many tasks run in ``ws``'s own nursery now (its background task,
    writer task, keepalive task, closing handshake; 0 before it was
    started): what a connection costs in tasks."""
    nursery = ws._nursery
    return 0 if nursery is None else len(nursery.child_tasks)


def guarded_scopes(ws: WebSocket) -> int:
    """How many cancel scopes ``ws`` keeps for its running tasks (one per
    task it guards, dropped when the task ends): a leak check for
    connections whose tasks start and end on demand."""
    return len(ws._task_scopes)


def reading_paused(ws: WebSocket) -> bool:
    """True while ``ws`` reads nothing because its message queue is full
    (``max_queue`` or ``max_queue_bytes``): the backpressure that a peer
    sees as a full TCP window."""
    return ws._reader.paused


def pings_waiting(ws: WebSocket) -> int:
    """How many pings (:meth:`WebSocket.ping` and keepalive's) wait for
    their pong: a check that cancelled pings leave nothing behind."""
    return len(ws._pings)


def negotiated_deflate(ws: WebSocket) -> DeflateExtension | None:
    """The permessage-deflate extension ``ws`` uses, or None when
    compression was not negotiated."""
    return ws._protocol.deflate


def holds_compressor(ws: WebSocket) -> bool:
    """True while ``ws`` keeps a zlib compressor: between messages only when
    it keeps its compression context (no ``*_no_context_takeover`` for its
    side); each one holds a few hundred KiB."""
    deflate = ws._protocol.deflate
    return deflate is not None and deflate._compressor is not None


def copy_free_reading(ws: WebSocket) -> bool | None:
    """Whether ``ws`` reads through its copy-free paths: None when it has no
    whole-message fast path at all (wsproto's internals not as expected),
    else True when wsproto decodes frames from trio_ws's
    :class:`FrameBuffer` and the whole-message path is open now (between
    messages), False otherwise."""
    protocol = ws._protocol
    if protocol._between_messages is None:
        return None
    decoder = frame_decoder(protocol._conn)
    buffered = decoder is not None and isinstance(decoder.buffer, FrameBuffer)
    return buffered and protocol._between_messages()
