"""Snapshots of counters: per connection, per server."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

__all__ = ["ConnectionStats", "ServerStats", "Traffic", "total"]


@attrs.frozen
class Traffic:
    """Messages and bytes, each way. Bytes are counted on the wire (frame
    headers included, after compression). Two records add up with ``+``."""

    #: Text messages received.
    text_in: int = 0
    #: Binary messages received.
    binary_in: int = 0
    #: Text messages sent.
    text_out: int = 0
    #: Binary messages sent.
    binary_out: int = 0
    #: Bytes read from the connection.
    bytes_in: int = 0
    #: Bytes written to the connection.
    bytes_out: int = 0

    @property
    def messages_in(self) -> int:
        """Messages received, text and binary."""
        return self.text_in + self.binary_in

    @property
    def messages_out(self) -> int:
        """Messages sent, text and binary."""
        return self.text_out + self.binary_out

    def __add__(self, other: Traffic) -> Traffic:
        # Field by field (a server adds each connection's traffic as it ends).
        return Traffic(
            self.text_in + other.text_in,
            self.binary_in + other.binary_in,
            self.text_out + other.text_out,
            self.binary_out + other.binary_out,
            self.bytes_in + other.bytes_in,
            self.bytes_out + other.bytes_out,
        )


def total(traffics: Iterable[Traffic]) -> Traffic:
    """The sum of several :class:`Traffic` records."""
    result = Traffic()
    for traffic in traffics:
        result = result + traffic
    return result


@attrs.frozen
class ConnectionStats:
    """A snapshot of one connection's counters (``ws.stats()``)."""

    #: The connection's messages and bytes so far.
    traffic: Traffic
    #: Messages received and not yet taken by receive().
    pending_in: int
    #: The memory those messages take, as ``max_queue_bytes`` counts it.
    pending_in_bytes: int
    #: Frames waiting to be written.
    pending_out: int
    #: The bytes of the broadcast messages queued for it.
    pending_out_bytes: int
    #: The last ping round-trip time, or None.
    latency: float | None


@attrs.frozen
class ServerStats:
    """A snapshot of a server's counters (``server.stats()``)."""

    #: Connections open now (handshake complete, not yet closed).
    open_connections: int
    #: Upgrades accepted since the server started.
    accepted: int
    #: Requests not accepted, by reason: "origin" (403), "capacity" (503),
    #: "rejected" (a Response from process_request), "http" (a plain HTTP
    #: request answered), "bad_request" (malformed, oversized, wrong method or
    #: version), "handshake_failed" (timed out, TLS failed, client left).
    rejected: Mapping[str, int]
    #: Connections closed, by close code.
    close_codes: Mapping[int, int]
    #: Traffic of every connection the server has had, open or closed.
    traffic: Traffic
