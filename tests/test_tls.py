"""wss:// end to end with a test certificate authority."""

from __future__ import annotations

import ssl
from typing import Any

import pytest
import trio
from conftest import Recorder, start_server

import trio_ws
from trio_ws._test_hooks import background_tasks


async def test_wss_echo(nursery: trio.Nursery, tls: Any) -> None:
    server = await start_server(nursery, ssl_context=tls.server_context)
    url = f"wss://localhost:{server.port}/secure"
    async with trio_ws.connect(url, ssl_context=tls.client_context) as ws:
        for message in ("over tls", b"\x00" * 100_000):
            await ws.send(message)
            assert await ws.receive() == message
        assert await ws.ping() >= 0
    assert ws.close_code == 1000


async def test_untrusted_certificate(nursery: trio.Nursery, tls: Any) -> None:
    server = await start_server(nursery, ssl_context=tls.server_context)
    with pytest.raises(trio_ws.TLSError, match="certificate"):
        async with trio_ws.connect(f"wss://localhost:{server.port}/"):
            pass  # pragma: no cover


async def test_wrong_hostname(nursery: trio.Nursery, tls: Any) -> None:
    import trustme

    other = trustme.CA().issue_cert("elsewhere.example")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other.configure_cert(context)
    server = await start_server(nursery, ssl_context=context)
    client_context = ssl.create_default_context()
    tls.ca.configure_trust(client_context)
    with pytest.raises(trio_ws.TLSError):
        async with trio_ws.connect(f"wss://localhost:{server.port}/", ssl_context=client_context):
            pass  # pragma: no cover


async def test_plain_client_against_tls_server(nursery: trio.Nursery, tls: Any) -> None:
    server = await start_server(nursery, ssl_context=tls.server_context, open_timeout=1)
    with pytest.raises(trio_ws.HandshakeError):
        async with trio_ws.connect(f"ws://127.0.0.1:{server.port}/", open_timeout=2):
            pass  # pragma: no cover


async def test_server_shutdown_over_tls(tls: Any) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, ssl_context=tls.server_context)
        async with trio_ws.connect(
            f"wss://localhost:{server.port}/", ssl_context=tls.client_context
        ) as ws:
            await server.aclose()
            with pytest.raises(trio_ws.ConnectionClosed) as info:
                await ws.receive()
        assert info.value.code == 1001


async def test_start_connection_over_tls_closes_with_1001_when_cancelled(
    nursery: trio.Nursery, tls: Any
) -> None:
    """Over TLS the connection's work runs in its own shielded task (reads
    must not be interrupted there); cancelling the owner still closes it
    cleanly, and the server sees the 1001."""
    recorder = Recorder()
    server = await start_server(nursery, recorder, ssl_context=tls.server_context)
    url = f"wss://127.0.0.1:{server.port}/"
    async with trio.open_nursery() as owner:
        ws = await trio_ws.start_connection(owner, url, ssl_context=tls.client_context)
        await ws.send("hello")
        assert background_tasks(ws) == 3  # reader, writer, keepalive
        owner.cancel_scope.cancel()
    assert ws.close_code == 1001
    info = await recorder.closed()
    assert info.code == 1001
    assert info.initiator == "peer"
