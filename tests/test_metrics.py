"""Prometheus metrics: the /metrics endpoint on the WebSocket port."""

from __future__ import annotations

import functools
import sys
from typing import Any

import pytest
import trio
import trio.testing
from conftest import url_of
from server_helpers import http_exchange

import trio_ws


def prometheus() -> Any:
    return pytest.importorskip(
        "prometheus_client", reason="prometheus-client is not installed (trio_ws[metrics])"
    )


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition: (name, labels) -> value."""
    parser = pytest.importorskip("prometheus_client.parser")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
    }


async def get(port: int, path: str, method: str = "GET") -> tuple[str, dict[str, str], str]:
    answer = await http_exchange(port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head, _, body = answer.decode().partition("\r\n\r\n")
    status, *fields = head.split("\r\n")
    headers = dict(field.split(": ", 1) for field in fields)
    return status, headers, body


async def test_metrics_endpoint_answers_prometheus_text(nursery: trio.Nursery) -> None:
    prometheus()
    async with trio_ws.open_hub(policy="drop") as hub:
        metrics = trio_ws.PrometheusMetrics(hub=hub)

        async def handler(ws: trio_ws.WebSocket) -> None:
            async with hub.register(ws):
                hub.join(ws, ws.path)
                hub.send_to(ws, "joined")
                async for message in ws:
                    hub.broadcast(message, room=ws.path)

        server = await nursery.start(
            functools.partial(
                trio_ws.serve,
                handler,
                "127.0.0.1",
                0,
                process_request=metrics.process_request,
                origins=[None],
            )
        )
        metrics.server = server
        async with (
            trio_ws.connect(url_of(server, "/a")) as one,
            trio_ws.connect(url_of(server, "/a")) as two,
        ):
            assert await one.receive() == await two.receive() == "joined"
            await one.send("hello")
            assert await one.receive() == "hello"
            assert await two.receive() == "hello"
            await two.send(b"\x00\x01")
            assert await one.receive() == b"\x00\x01"
            assert await two.receive() == b"\x00\x01"
            with pytest.raises(trio_ws.ConnectionRejected):
                await trio_ws.start_connection(
                    nursery, url_of(server), headers={"Origin": "https://evil.example"}
                )
            status, headers, body = await get(server.port, "/metrics")
        assert status == "HTTP/1.1 200 OK"
        assert headers["Content-Type"].startswith("text/plain; version=")
        values = samples(body)
        assert values["trio_ws_server_open_connections", ()] == 2
        assert values["trio_ws_server_accepted_total", ()] == 2
        assert values["trio_ws_server_rejected_total", (("reason", "origin"),)] == 1
        assert values["trio_ws_server_rejected_total", (("reason", "capacity"),)] == 0
        assert values["trio_ws_server_messages_in_total", (("type", "text"),)] == 1
        assert values["trio_ws_server_messages_in_total", (("type", "binary"),)] == 1
        assert values["trio_ws_server_messages_out_total", (("type", "text"),)] == 4
        assert values["trio_ws_server_bytes_out_total", ()] > 0
        assert values["trio_ws_hub_connections", ()] == 2
        assert values["trio_ws_hub_rooms", ()] == 1
        assert values["trio_ws_hub_broadcasts_total", ()] == 2
        assert values["trio_ws_hub_deliveries_total", ()] == 6
        assert values["trio_ws_hub_drops_total", ()] == 0
        assert values["trio_ws_hub_slow_closes_total", ()] == 0
        assert values["trio_ws_hub_queued_bytes", ()] == 0

        # Once both are closed: close codes, and the scrape itself was counted.
        await trio.testing.wait_all_tasks_blocked()
        values = samples((await get(server.port, "/metrics"))[2])
        assert values["trio_ws_server_closed_total", (("code", "1000"),)] == 2
        assert values["trio_ws_server_rejected_total", (("reason", "http"),)] == 1
        assert values["trio_ws_hub_connections", ()] == 0

        # Other paths and methods.
        assert (await get(server.port, "/metrics", "POST"))[0] == "HTTP/1.1 405 Method Not Allowed"
        assert (await get(server.port, "/other"))[0] == "HTTP/1.1 426 Upgrade Required"


async def test_registry_namespace_and_partial_sources() -> None:
    client = prometheus()
    registry = client.CollectorRegistry()
    metrics = trio_ws.PrometheusMetrics(registry=registry, namespace="chat", path="/stats")
    assert metrics.registry is registry
    assert metrics.render() == b""  # neither a server nor a hub yet
    async with trio_ws.open_hub() as hub:
        metrics.hub = hub
        text = metrics.render().decode()
    assert "chat_hub_connections 0.0" in text
    assert "server" not in text
    assert metrics.process_request(trio_ws.Request.from_target("GET", "/metrics")) is None
    response = metrics.process_request(trio_ws.Request.from_target("GET", "/stats"))
    assert response is not None
    assert response.status_code == 200


def test_missing_prometheus_client_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"pip install 'trio_ws\[metrics\]'"):
        trio_ws.PrometheusMetrics()
