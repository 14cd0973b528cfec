"""Helpers for talking raw HTTP to a server."""

from __future__ import annotations

import trio


async def http_exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes, return everything the server answers until it closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(request)
    answer = b""
    while data := await stream.receive_some(65536):
        answer += data
    await stream.aclose()
    return answer
