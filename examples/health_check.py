"""Plain HTTP health checks and token authentication on the WebSocket port.

    python examples/health_check.py                     # start, check itself, stop
    python examples/health_check.py --serve --port 8080 # serve until Ctrl-C

``process_request`` sees every HTTP request before the WebSocket handshake:

- ``GET /healthz`` is answered with ``200 ok`` over plain HTTP, so a load
  balancer can probe the same port the WebSocket clients use;
- upgrades to ``/ws`` need ``Authorization: Bearer <token>``, otherwise they
  are rejected with ``401``;
- other paths get ``404``; other plain HTTP requests get the default
  ``426 Upgrade Required``.

By default the program starts the server on a free port, makes one request
of each kind against it, prints the answers and exits (status 1 if an answer
was not the expected one). With ``--serve`` it keeps serving instead; try
``curl -i http://127.0.0.1:8080/healthz``.
"""

from __future__ import annotations

import argparse
import functools
import hmac
import math
import signal
import sys

import trio

import trio_ws

TOKEN = "change-me"


def process_request(request: trio_ws.Request) -> trio_ws.Response | None:
    if request.path == "/healthz":
        return trio_ws.Response.text(200, "ok\n")
    if not request.is_upgrade:
        return None  # default answer: 426 Upgrade Required
    if request.path != "/ws":
        return trio_ws.Response.text(404, f"no WebSocket endpoint at {request.path}\n")
    given = request.headers.get("Authorization") or ""
    if not hmac.compare_digest(given.encode(), f"Bearer {TOKEN}".encode()):
        return trio_ws.Response(
            401, [("WWW-Authenticate", 'Bearer realm="ws"')], "missing or wrong token\n"
        )
    return None  # accept the upgrade


async def greet(ws: trio_ws.WebSocket) -> None:
    async for message in ws:
        if isinstance(message, bytes):
            await ws.aclose(trio_ws.CloseCode.UNSUPPORTED_DATA, "text messages only")
            return
        await ws.send(f"authenticated echo: {message}")


async def http_get(port: int, path: str) -> str:
    """A minimal HTTP/1.1 GET; returns the status line and the body."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode("ascii")
        )
        answer = b""
        while data := await stream.receive_some(4096):
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n")[0].decode()
    return f"{status_line} | {body.decode().strip()}"


async def ws_attempt(url: str, headers: dict[str, str]) -> str:
    try:
        async with trio_ws.connect(url, headers=headers) as ws:
            await ws.send("hi")
            reply = await ws.receive()
            assert isinstance(reply, str)
            return f"open | {reply}"
    except trio_ws.ConnectionRejected as exc:
        return f"rejected {exc.status_code} | {exc.body.decode().strip()}"


async def self_check(port: int) -> bool:
    url = f"ws://127.0.0.1:{port}"
    good = {"Authorization": f"Bearer {TOKEN}"}
    checks = [
        ("GET /healthz", await http_get(port, "/healthz"), "200 OK"),
        ("GET /", await http_get(port, "/"), "426 Upgrade Required"),
        ("WS /ws, no token", await ws_attempt(f"{url}/ws", {}), "rejected 401"),
        (
            "WS /ws, bad token",
            await ws_attempt(f"{url}/ws", {"Authorization": "Bearer nope"}),
            "rejected 401",
        ),
        ("WS /other, token", await ws_attempt(f"{url}/other", good), "rejected 404"),
        ("WS /ws, token", await ws_attempt(f"{url}/ws", good), "open | authenticated echo: hi"),
    ]
    ok = True
    for what, answer, expected in checks:
        passed = expected in answer
        ok = ok and passed
        print(f"{'ok  ' if passed else 'FAIL'} {what:18} -> {answer}")
    return ok


async def main(host: str, port: int, serve_only: bool, duration: float) -> bool:
    async with trio.open_nursery() as nursery:
        server: trio_ws.Server = await nursery.start(
            functools.partial(trio_ws.serve, greet, host, port, process_request=process_request)
        )
        if serve_only:
            with (
                trio.move_on_after(duration),
                trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
            ):
                print(f"serving on port {server.port}: /healthz and /ws", flush=True)
                async for _ in signals:
                    break  # Ctrl-C: stop cleanly
            ok = True
        else:
            print(f"serving on port {server.port}: /healthz and /ws", flush=True)
            ok = await self_check(server.port)
        nursery.cancel_scope.cancel()
    return ok


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--serve", action="store_true", help="serve instead of self-checking")
    parser.add_argument("--duration", type=float, default=math.inf, help="with --serve: seconds")
    args = parser.parse_args()
    ok = trio.run(main, args.host, args.port, args.serve, args.duration)
    sys.exit(0 if ok else 1)
