"""``RedisBackplane``: what a hub needs to span processes and machines.

A backplane is configuration until a hub opens with it
(``open_hub(backplane=...)``); the hub then starts a :class:`~._cluster.node.Node`
in its own nursery, which owns the Redis connections and tasks. This module
holds the settings, the check for the optional extra, and the snapshots a
node reports (:class:`BackplaneStats`, :class:`ClusterMember`).
"""

from __future__ import annotations

import importlib
from typing import Any, Literal

import attrs

from .._errors import WebSocketError

__all__ = ["BackplaneError", "BackplaneStats", "ClusterMember", "RedisBackplane"]

#: The states of a node's link to Redis.
LinkState = Literal["connecting", "up", "down", "closed"]


class BackplaneError(WebSocketError):
    """Redis could not be reached, or did not answer in time, for an operation
    that needs it (opening a hub with a backplane, a presence query)."""


def import_coredis() -> Any:
    """The coredis module, or ImportError naming the extra that installs it."""
    try:
        return importlib.import_module("coredis")
    except ImportError as exc:
        raise ImportError(
            "RedisBackplane needs the coredis package: pip install 'trio_ws[redis]' "
            "(or pip install coredis)"
        ) from exc


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, not {value!r}")
    return float(value)


def _prefix(value: str) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in " \r\n"):
        raise ValueError(f"prefix must be a non-empty str without spaces, not {value!r}")
    return value


def shown(url: str) -> str:
    """``url`` fit for a log line or an error: any password replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


@attrs.define(eq=False)
class RedisBackplane:
    """A Redis pub/sub backplane: hubs opened with the same ``url`` and
    ``prefix`` (in any process, on any machine) share their rooms.

    ``backplane = trio_ws.RedisBackplane("redis://127.0.0.1:6379/0", prefix="chat")``
    then ``async with trio_ws.open_hub(backplane=backplane) as hub:``. It
    needs the optional extra (``pip install 'trio_ws[redis]'``); without it,
    constructing one raises ImportError naming the extra.

    Settings (seconds unless said otherwise):

    - ``prefix``: namespaces every Redis channel and key, so several
      applications can share one Redis.
    - ``outbox_size``: envelopes waiting to be published (default 10,000).
      When Redis is slow or down the oldest are dropped and counted.
    - ``probe_interval`` / ``probe_timeout``: the node publishes a probe to
      itself every ``probe_interval``; a probe not back within
      ``probe_timeout`` means the link stalled, and it is reconnected.
    - ``presence_ttl``: a node that stops refreshing its presence (it
      crashed, or lost Redis) leaves the cluster presence after this long.
    - ``unsubscribe_delay``: how long a node stays subscribed to a room after
      its last local member left (a member joining again meanwhile costs
      nothing).
    - ``reconnect_delay`` / ``max_reconnect_delay``: the backoff between
      attempts to reach Redis (doubling, with jitter).
    - ``connect_timeout``: how long opening a hub waits for Redis.
    """

    url: str = attrs.field(repr=shown)
    prefix: str = attrs.field(default="trio_ws", converter=_prefix)
    outbox_size: int = attrs.field(default=10_000, kw_only=True)
    probe_interval: float = attrs.field(default=1.0, kw_only=True)
    probe_timeout: float = attrs.field(default=3.0, kw_only=True)
    presence_ttl: float = attrs.field(default=10.0, kw_only=True)
    unsubscribe_delay: float = attrs.field(default=1.0, kw_only=True)
    reconnect_delay: float = attrs.field(default=0.1, kw_only=True)
    max_reconnect_delay: float = attrs.field(default=5.0, kw_only=True)
    connect_timeout: float = attrs.field(default=5.0, kw_only=True)

    def __attrs_post_init__(self) -> None:
        import_coredis()  # fail here, naming the extra, not when the hub opens
        if not isinstance(self.url, str) or not self.url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError(
                f"a Redis URL starts with redis://, rediss:// or unix://: {shown(self.url)!r}"
            )
        if isinstance(self.outbox_size, bool) or not isinstance(self.outbox_size, int):
            raise ValueError(f"outbox_size must be a positive int, not {self.outbox_size!r}")
        if self.outbox_size <= 0:
            raise ValueError(f"outbox_size must be a positive int, not {self.outbox_size!r}")
        for name in (
            "probe_interval",
            "probe_timeout",
            "presence_ttl",
            "unsubscribe_delay",
            "reconnect_delay",
            "max_reconnect_delay",
            "connect_timeout",
        ):
            setattr(self, name, _positive(name, getattr(self, name)))
        if self.probe_timeout <= self.probe_interval:
            raise ValueError("probe_timeout must be longer than probe_interval")


@attrs.frozen
class ClusterMember:
    """A member of a room somewhere in the cluster (``await hub.cluster_members(room)``)."""

    #: Its cluster-wide connection id (what ``hub.send_to`` and ``exclude=`` take).
    id: int
    #: The number of the node (hub) it is connected to.
    node: int
    #: The ``register()`` metadata, as JSON carried it (values JSON cannot
    #: hold arrive as their ``str``); for a local member, the live dict.
    metadata: dict[str, Any]
    #: True for a member of this node.
    local: bool


@attrs.frozen
class BackplaneStats:
    """A snapshot of a node's backplane counters (``hub.stats().backplane``)."""

    #: This node's number (the high half of its connection ids).
    node: int
    #: The link to Redis: "connecting", "up", "down" (reconnecting) or "closed".
    state: LinkState
    #: True when the link is up and the last probe came back in time: what a
    #: health check should read.
    healthy: bool
    #: Envelopes written to Redis (broadcasts, direct sends).
    published: int
    #: Envelopes waiting in the outbox now.
    outbox: int
    #: Envelopes dropped from the outbox because Redis was slow or down.
    outbox_dropped: int
    #: Envelopes from other nodes handed to local connections.
    received: int
    #: Times a sequence jump showed that messages from another node were lost.
    gaps: int
    #: How many messages those jumps skipped, in total.
    missed: int
    #: Envelopes seen twice (republished after a failed write) and skipped.
    duplicates: int
    #: Messages on our channels that were not envelopes, skipped.
    malformed: int
    #: Times the link was lost and made again.
    reconnects: int
    #: Commands Redis refused (e.g. a key of another type under our prefix): logged, not retried.
    refused: int
    #: Rooms this node is subscribed to.
    subscribed_rooms: int
    #: The last probe's round trip through Redis, in seconds (None before the first).
    probe_rtt: float | None
    #: What went wrong last (None if nothing has).
    last_error: str | None
