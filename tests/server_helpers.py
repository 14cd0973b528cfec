"""Helpers for talking raw HTTP to a server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
from rawpeer import CLOSE, close_payload, frame


async def upgrade_then_close(
    receive: Callable[[int], Awaitable[bytes]],
    send: Callable[[bytes], Awaitable[object]],
    until: bytes = b"\r\n\r\n",
) -> bytes:
    """Read a raw upgrade's answer up to ``until`` (and check it is a 101),
    close with 1000 and read until the server hangs up; return what came
    before the close."""
    answer = b""
    while until not in answer:
        data = await receive(65536)
        assert data
        answer += data
    assert answer.startswith(b"HTTP/1.1 101 ")
    await send(frame(CLOSE, close_payload(1000)))
    while await receive(65536):
        pass
    return answer


async def http_exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes, return everything the server answers until it closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(request)
    answer = b""
    while data := await stream.receive_some(65536):
        answer += data
    await stream.aclose()
    return answer


async def response_head(port: int, request: bytes) -> bytes:
    """Send raw bytes, return the answer up to the end of its header block
    (or all of it, if the server closes first), then hang up: for a 101,
    after which the server keeps the connection open."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(request)
    answer = b""
    while b"\r\n\r\n" not in answer and (data := await stream.receive_some(65536)):
        answer += data
    await stream.aclose()
    return answer.partition(b"\r\n\r\n")[0]
