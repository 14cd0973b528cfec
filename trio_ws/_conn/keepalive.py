"""Pings waiting for their pongs, and the keepalive schedule.

Keepalive has no task of its own: the connection's background task (the one
that reads while no ``receive()`` does) waits with its cancel scope's
deadline set to :attr:`Keepalive.deadline`, and when that passes asks
:meth:`Keepalive.tick` what to do. A task costs a Trio connection about
3 KiB at rest; this keeps an idle connection at one background task.
"""

from __future__ import annotations

import enum

import trio

__all__ = ["Keepalive", "Ping", "Step"]


class Ping:
    """A ping sent and not yet answered (or just answered: ``rtt`` set)."""

    __slots__ = ("answered", "rtt", "sent_at")

    def __init__(self, sent_at: float, answered: trio.Event | None = None) -> None:
        self.sent_at = sent_at
        #: The round-trip time, once a pong answered this ping (or a later one).
        self.rtt: float | None = None
        #: Set when answered or when the connection closes (for ping() callers).
        self.answered = answered


class Step(enum.Enum):
    """What the connection does when the keepalive deadline passes."""

    PING = 1  # send a keepalive ping now (then call Keepalive.sent)
    WAIT = 2  # nothing yet: the deadline moved
    TIMEOUT = 3  # the ping went unanswered for ping_timeout: fail the connection


class Keepalive:
    """A ping every ``interval`` seconds after the last pong; a timeout when a
    pong takes longer than ``timeout`` (the ping's own write included, since
    it is queued for writing when sent)."""

    __slots__ = ("deadline", "interval", "ping", "timeout")

    def __init__(self, interval: float, timeout: float, now: float) -> None:
        self.interval = interval
        self.timeout = timeout
        #: When the background task next calls :meth:`tick`.
        self.deadline = now + interval
        #: The keepalive ping waiting for its pong, if any.
        self.ping: Ping | None = None

    def tick(self, now: float, paused: bool, resumed_at: float) -> Step:
        """The deadline passed. ``paused``: our own reading is paused because
        the application's queue is full; ``resumed_at``: when it last resumed.
        Time with reading paused does not count against the peer, whose pong
        may be waiting behind messages we have not read yet."""
        ping = self.ping
        if ping is None:
            return Step.PING
        if ping.rtt is not None:
            self.ping = None
            self.deadline = ping.sent_at + ping.rtt + self.interval
            return Step.PING if self.deadline <= now else Step.WAIT
        if paused:
            self.deadline = now + min(self.timeout, self.interval)  # look again later
            return Step.WAIT
        due = max(ping.sent_at, resumed_at) + self.timeout
        if due > now:
            self.deadline = min(due, now + self.interval)
            return Step.WAIT
        return Step.TIMEOUT

    def sent(self, ping: Ping) -> None:
        """A keepalive ping was queued for writing. The pong is looked for
        when the timeout runs out, or an interval later if that is sooner
        (so that with a long or no timeout, pinging goes on once answered)."""
        self.ping = ping
        self.deadline = ping.sent_at + min(self.timeout, self.interval)
