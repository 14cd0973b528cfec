"""The server's plain HTTP answers: refusals of an upgrade (4xx, 5xx) and
the responses of ``process_request`` and of HTTP routes, serialised by h11
as complete responses that end the connection."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus

import h11
import trio

from .._http import Response

__all__ = ["answer", "client_error_status", "error_response", "response_bytes"]

logger = logging.getLogger("trio_ws")


def response_bytes(response: Response) -> bytes:
    """Serialise a complete HTTP/1.1 response that ends the connection."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.next_event()
    return send_response(conn, response)


def send_response(conn: h11.Connection, response: Response, *, head: bool = False) -> bytes:
    """Serialise ``response`` on ``conn``, closing the connection. With
    ``head`` (the request was HEAD) the body is left out, while
    Content-Length stays that of the body, as for the same GET."""
    headers = [
        (name, value)
        for name, value in response.headers
        if name.lower() not in ("content-length", "connection", "transfer-encoding")
    ]
    headers.append(("Content-Length", str(len(response.body))))
    headers.append(("Connection", "close"))
    try:
        reason = HTTPStatus(response.status_code).phrase
    except ValueError:
        reason = ""
    data = conn.send(
        h11.Response(status_code=response.status_code, headers=headers, reason=reason)
    )
    data = data or b""
    if not head:
        data += conn.send(h11.Data(data=response.body)) or b""
    return data + (conn.send(h11.EndOfMessage()) or b"")


def error_response(status: int, detail: str, headers: Sequence[tuple[str, str]] = ()) -> Response:
    phrase = HTTPStatus(status).phrase
    return Response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), *headers],
        f"{status} {phrase}: {detail}\n",
    )


def client_error_status(hint: int) -> int:
    """The status for a request h11 could not parse: h11's hint when it is a
    4xx, else 400. (h11 hints 501 for an unsupported Transfer-Encoding; the
    client's mistake gets a 4xx, so that nobody retries it as a server fault.)"""
    return hint if 400 <= hint < 500 else 400


async def answer(
    stream: trio.abc.Stream, h11conn: h11.Connection, response: Response, *, head: bool = False
) -> None:
    """Send ``response`` (without its body when ``head``); one that h11
    refuses, which process_request built, becomes a 500."""
    try:
        data = send_response(h11conn, response, head=head)
    except h11.LocalProtocolError:
        logger.exception("process_request returned an invalid response")
        data = response_bytes(error_response(500, "the server built an invalid response"))
    await stream.send_all(data)
