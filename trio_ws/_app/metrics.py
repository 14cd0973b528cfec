"""Prometheus metrics for a server and a hub: ``PrometheusMetrics``.

The counters themselves need nothing: ``server.stats()`` and ``hub.stats()``
return snapshots. This module renders them in the Prometheus text format with
the optional ``prometheus-client`` package (``pip install 'trio_ws[metrics]'``),
imported only when a :class:`PrometheusMetrics` is created, and answers
``GET /metrics`` on the WebSocket port through ``process_request``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

from .._cluster.backplane import BackplaneStats
from .._endpoints.server import Server
from .._http import Request, Response
from .hub import Hub

__all__ = ["PrometheusMetrics"]

#: The refusal reasons of ``ServerStats.rejected``, always exported (as 0 until seen).
REJECT_REASONS = (
    "origin",
    "capacity",
    "rejected",
    "http",
    "bad_request",
    "handshake_failed",
    "not_found",
)


def _import_prometheus() -> Any:
    try:
        return importlib.import_module("prometheus_client")
    except ImportError as exc:
        raise ImportError(
            "PrometheusMetrics needs the prometheus-client package: "
            "pip install 'trio_ws[metrics]' (or pip install prometheus-client)"
        ) from exc


class PrometheusMetrics:
    """Server and hub counters in the Prometheus text format.

    ``metrics = trio_ws.PrometheusMetrics(hub=hub)`` collects from ``hub``
    (and from ``metrics.server`` once you set it to the running
    :class:`Server`) each time it is scraped. Pass
    ``metrics.process_request`` to :func:`serve` (or call it from your own
    ``process_request``) to answer ``GET /metrics`` on the WebSocket port.

    ``registry``: a ``prometheus_client.CollectorRegistry`` to add the
    metrics to (for example ``prometheus_client.REGISTRY``, which also has
    the process metrics); by default a registry of their own. ``namespace``
    prefixes every metric name. Raises ImportError, with the command that
    installs it, when prometheus-client is missing.
    """

    def __init__(
        self,
        *,
        server: Server | None = None,
        hub: Hub | None = None,
        path: str = "/metrics",
        registry: Any = None,
        namespace: str = "trio_ws",
    ) -> None:
        self._prometheus = _import_prometheus()
        self._core = importlib.import_module("prometheus_client.core")
        #: The server whose ``stats()`` are exported (may be set later).
        self.server = server
        #: The hub whose ``stats()`` are exported (may be set later).
        self.hub = hub
        #: The path :meth:`process_request` answers.
        self.path = path
        self.namespace = namespace
        #: The ``prometheus_client.CollectorRegistry`` holding the metrics.
        self.registry: Any = (
            registry if registry is not None else self._prometheus.CollectorRegistry()
        )
        self.registry.register(_Collector(self))

    def render(self) -> bytes:
        """The current metrics in the Prometheus text exposition format."""
        data: bytes = self._prometheus.generate_latest(self.registry)
        return data

    def response(self) -> Response:
        """An HTTP 200 response with the current metrics."""
        content_type: str = self._prometheus.CONTENT_TYPE_LATEST
        return Response(200, [("Content-Type", content_type)], self.render())

    def process_request(self, request: Request) -> Response | None:
        """A ``process_request`` for :func:`serve`: answers a plain HTTP
        request for :attr:`path` with the metrics (405 for a method other
        than GET) and returns None, the default handling, for the rest."""
        if request.path != self.path or request.is_upgrade:
            return None
        if request.method != "GET":
            return Response(405, [("Allow", "GET")], "405 Method Not Allowed\n")
        return self.response()

    # -- what a scrape collects --------------------------------------------------

    def _families(self) -> Iterator[Any]:
        core = self._core
        prefix = f"{self.namespace}_" if self.namespace else ""

        def gauge(name: str, doc: str, value: float) -> Any:
            return core.GaugeMetricFamily(prefix + name, doc, value=value)

        def counter(name: str, doc: str, value: float) -> Any:
            return core.CounterMetricFamily(prefix + name, doc, value=value)

        def labelled(name: str, doc: str, label: str, values: dict[str, int]) -> Any:
            family = core.CounterMetricFamily(prefix + name, doc, labels=[label])
            for key, value in values.items():
                family.add_metric([key], value)
            return family

        if self.server is not None:
            stats = self.server.stats()
            traffic = stats.traffic
            yield gauge(
                "server_open_connections", "WebSocket connections open now", stats.open_connections
            )
            yield counter("server_accepted", "WebSocket upgrades accepted", stats.accepted)
            rejected = dict.fromkeys(REJECT_REASONS, 0)
            rejected.update(stats.rejected)
            yield labelled(
                "server_rejected", "Requests not upgraded, by reason", "reason", rejected
            )
            codes = {str(code): count for code, count in sorted(stats.close_codes.items())}
            yield labelled("server_closed", "Connections closed, by close code", "code", codes)
            yield labelled(
                "server_messages_in",
                "Messages received, by type",
                "type",
                {"text": traffic.text_in, "binary": traffic.binary_in},
            )
            yield labelled(
                "server_messages_out",
                "Messages sent, by type",
                "type",
                {"text": traffic.text_out, "binary": traffic.binary_out},
            )
            yield counter("server_bytes_in", "Bytes received on the wire", traffic.bytes_in)
            yield counter("server_bytes_out", "Bytes sent on the wire", traffic.bytes_out)
        if self.hub is not None:
            hub = self.hub.stats()
            yield gauge("hub_connections", "Connections registered with the hub", hub.connections)
            yield gauge("hub_rooms", "Rooms with at least one member", hub.rooms)
            yield counter("hub_broadcasts", "Broadcasts", hub.broadcasts)
            yield counter("hub_direct_sends", "Direct sends to one connection", hub.direct_sends)
            yield counter("hub_deliveries", "Messages queued for a connection", hub.deliveries)
            yield counter("hub_drops", "Messages slow clients missed", hub.drops)
            yield counter(
                "hub_slow_closes", "Connections closed for falling behind", hub.slow_closes
            )
            yield gauge(
                "hub_queued_frames", "Frames waiting in the connections' queues", hub.queued
            )
            yield gauge(
                "hub_queued_bytes", "Bytes waiting in the connections' queues", hub.queued_bytes
            )
            yield gauge(
                "hub_max_queued_bytes", "Bytes waiting in the deepest queue", hub.max_queued_bytes
            )
            if hub.backplane is not None:
                yield from _backplane_families(hub.backplane, gauge, counter)


def _backplane_families(stats: BackplaneStats, gauge: Any, counter: Any) -> Iterator[Any]:
    """The backplane's health and counters (a hub opened with one)."""
    yield gauge("backplane_up", "1 while the link to Redis works (probe on time)", stats.healthy)
    yield counter("backplane_published", "Envelopes written to Redis", stats.published)
    yield gauge("backplane_outbox", "Envelopes waiting to be published", stats.outbox)
    yield counter(
        "backplane_outbox_dropped", "Envelopes dropped: Redis slow or down", stats.outbox_dropped
    )
    yield counter("backplane_received", "Envelopes from other nodes delivered", stats.received)
    yield counter("backplane_gaps", "Sequence jumps: messages from other nodes lost", stats.gaps)
    yield counter("backplane_missed", "Messages those jumps skipped", stats.missed)
    yield counter(
        "backplane_reconnects", "Times the link to Redis was made again", stats.reconnects
    )
    yield gauge("backplane_rooms", "Rooms this node is subscribed to", stats.subscribed_rooms)


class _Collector:
    """A prometheus_client collector that reads the snapshots at scrape time."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        return self._metrics._families()
