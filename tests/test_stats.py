"""Counters: per connection and per server."""

from __future__ import annotations

import re
from typing import Any

import pytest
import trio
import trio.testing
from conftest import Pair, echo, start_server, url_of
from server_helpers import http_exchange

import trio_ws


async def test_connection_stats(pair_factory: Any) -> None:
    pair: Pair = await pair_factory()
    await pair.client.send("hé")
    await pair.client.send(b"\x00" * 10)
    assert await pair.server.receive() == "hé"
    await pair.server.send("back")
    assert await pair.client.receive() == "back"
    client, server = pair.client.stats(), pair.server.stats()
    assert (client.traffic.text_out, client.traffic.binary_out) == (1, 1)
    assert (server.traffic.text_in, server.traffic.binary_in) == (1, 1)
    assert server.traffic.messages_in == 2
    assert client.traffic.text_in == 1
    # Wire bytes: 2-byte headers + 4-byte masks from the client.
    assert client.traffic.bytes_out == (2 + 4 + 3) + (2 + 4 + 10)
    assert server.traffic.bytes_in >= client.traffic.bytes_out
    assert server.pending_in == 1  # the binary message, not yet received
    assert server.pending_out == 0


async def test_server_stats_count_accepts_refusals_and_closes(nursery: trio.Nursery) -> None:
    server = await start_server(
        nursery,
        echo,
        origins=["https://good.example", re.compile(r"https://.*\.good\.example"), None],
        max_connections=1,
    )
    url = url_of(server)
    async with trio_ws.connect(url, headers={"Origin": "https://a.good.example"}) as ws:
        await ws.send("x")
        await ws.receive()
        # Full: the second upgrade gets 503 with Retry-After.
        with pytest.raises(trio_ws.ConnectionRejected) as full:
            await trio_ws.start_connection(nursery, url)
        assert full.value.status_code == 503
        assert full.value.headers["retry-after"] == "5"
    for origin in ("https://evil.example", "https://good.example.evil"):
        with pytest.raises(trio_ws.ConnectionRejected) as refused:
            await trio_ws.start_connection(nursery, url, headers={"Origin": origin})
        assert refused.value.status_code == 403
    await http_exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await trio.testing.wait_all_tasks_blocked()
    stats = server.stats()
    assert stats.accepted == 1
    assert stats.rejected == {"capacity": 1, "origin": 2, "http": 1}
    assert stats.close_codes == {1000: 1}
    assert stats.open_connections == 0
    assert stats.traffic.messages_in == 1
    assert stats.traffic.messages_out == 1


async def test_missing_origin_refused_unless_allowed(nursery: trio.Nursery) -> None:
    server = await start_server(nursery, echo, origins=["https://good.example"])
    with pytest.raises(trio_ws.ConnectionRejected) as refused:
        await trio_ws.start_connection(nursery, url_of(server))
    assert refused.value.status_code == 403
