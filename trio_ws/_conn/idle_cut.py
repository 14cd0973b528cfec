"""Noticing a proxy that cuts idle connections.

nginx closes a proxied WebSocket after ``proxy_read_timeout`` (60 s by
default) without traffic, HAProxy after ``timeout tunnel``; load balancers
have their own idle timeouts. When that is shorter than ``ping_interval``
(or keepalive is off), quiet connections die at that timeout, and each side
sees the connection end without a close frame: 1006, with nothing in the
logs to say why. This module gives the server that explanation, once.

The rule (see :func:`idle_cut_seconds`): the stream ended (end-of-file or an
error) while the connection was open, no close frame either way, and the
kernel says no data went either way for at least :data:`IDLE_CUT_SECONDS`
before. That is what an idle timeout looks like. A client that crashes or
loses its network in the middle of a conversation does not match (data went
one way or the other moments before); one that sat silent for a second or
more and then vanished without a close frame does, and cannot be told
apart, so the warning is worded as a question, and logged at most once
every :data:`WARNING_INTERVAL` seconds per process (later ones in that
window at DEBUG), so that a crowd of such clients cannot fill the log.

The idle time comes from the kernel (``TCP_INFO``: when data was last sent
and received), so noticing costs nothing while the connection runs; hence
it works on TCP on Linux only (TLS included), not on Unix sockets.
"""

from __future__ import annotations

import logging
import math
import socket
import struct
import sys
import time

import trio

__all__ = ["IDLE_CUT_SECONDS", "WARNING_INTERVAL", "explain_idle_cut", "idle_cut_seconds"]

#: The least time without data, both ways, before an unannounced end that
#: is worth a warning.
IDLE_CUT_SECONDS = 1.0
#: At most one warning per this many seconds (per process).
WARNING_INTERVAL = 60.0

# struct tcp_info (linux/tcp.h): 8 one-byte fields, 9 u32 fields, then
# tcpi_last_data_sent, tcpi_last_ack_sent (unused), tcpi_last_data_recv, in
# milliseconds before now. Stable since Linux 2.6.
_LAST_DATA = struct.Struct("=III")
_LAST_DATA_OFFSET = 8 + 9 * 4
_TCP_INFO_SIZE = 104

_last_warning = -math.inf
_suppressed = 0


def idle_cut_seconds(stream: trio.abc.Stream) -> float | None:
    """How long ``stream``'s TCP socket had carried no data in either
    direction, in seconds, when at least :data:`IDLE_CUT_SECONDS`; None when
    it carried some more recently, or the kernel cannot say (not Linux, not
    TCP, a socket already closed)."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if not isinstance(stream, trio.SocketStream) or not sys.platform.startswith("linux"):
        return None
    sock = stream.socket
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except (OSError, AttributeError):  # pragma: no cover - closed, or an old kernel
        return None
    if len(info) < _LAST_DATA_OFFSET + _LAST_DATA.size:  # pragma: no cover
        return None
    sent_ms, _, received_ms = _LAST_DATA.unpack_from(info, _LAST_DATA_OFFSET)
    idle = min(sent_ms, received_ms) / 1000
    return idle if idle >= IDLE_CUT_SECONDS else None


def explain_idle_cut(
    log: logging.LoggerAdapter,  # type: ignore[type-arg]
    idle: float,
    ping_interval: float | None,
) -> None:
    """Log why a connection that ended ``idle`` seconds into a silence
    probably ended (at WARNING, rate-limited: see the module docstring)."""
    global _last_warning, _suppressed
    keepalive = "off" if ping_interval is None else f"{ping_interval:g} s"
    message = (
        "connection lost without a close frame after %.1f s with no data either way: "
        "a proxy's idle timeout (nginx proxy_read_timeout, 60 s by default; HAProxy "
        "timeout tunnel) shorter than ping_interval (%s)? Keep ping_interval below it "
        "(see docs/deployment.md)"
    )
    now = time.monotonic()
    if now - _last_warning < WARNING_INTERVAL:
        _suppressed += 1
        log.debug(message, idle, keepalive)
        return
    if _suppressed:
        message += f"; {_suppressed} more such connections since the last warning"
    _last_warning, _suppressed = now, 0
    log.warning(message, idle, keepalive)


def reset_warnings() -> None:
    """Forget the last warning (for tests: the next one is logged)."""
    global _last_warning, _suppressed
    _last_warning, _suppressed = -math.inf, 0
