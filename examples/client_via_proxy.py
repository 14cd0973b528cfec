"""A client that reaches its server through a forward proxy.

    python examples/client_via_proxy.py URL [--proxy PROXY] [MESSAGE ...]

sends each MESSAGE (default: "hello") to URL and prints the replies, through
PROXY (http://user:pass@host:port, socks5h://host:port...), or through the
proxy the environment names (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY)
when --proxy is not given; --proxy none connects directly.

Without URL it starts what it needs on 127.0.0.1: an echo server, and a
small HTTP CONNECT proxy that wants the credentials demo:s3cret. It then
talks to the server through the proxy, and shows what a wrong password
gives: a ProxyError naming the proxy.
"""

from __future__ import annotations

import argparse
import base64
import functools
import sys

import trio

import trio_ws

#: The credentials the demonstration proxy accepts.
CREDENTIALS = "demo:s3cret"


async def talk(url: str, proxy: str | bool | None, messages: list[str]) -> None:
    async with trio_ws.connect(url, proxy=proxy, open_timeout=10) as ws:
        for message in messages:
            await ws.send(message)
            print(f"  sent {message!r}, got back {await ws.receive()!r}")


# -- the demonstration: an echo server and a proxy of our own ---------------------------


async def echo(ws: trio_ws.WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


async def pipe(source: trio.abc.Stream, sink: trio.abc.Stream) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(sink)


async def connect_proxy(client: trio.SocketStream) -> None:
    """Just enough of an HTTP proxy: CONNECT host:port with Basic credentials."""
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 8192:
        data = await client.receive_some(4096)
        if not data:
            return
        head += data
    request, *fields = head.decode("latin-1").split("\r\n")
    method, target, _ = request.split(" ", 2)
    if method != "CONNECT":
        await client.send_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
        return
    expected = "Basic " + base64.b64encode(CREDENTIALS.encode()).decode()
    if f"Proxy-Authorization: {expected}" not in fields:
        await client.send_all(
            b"HTTP/1.1 407 Proxy Authentication Required\r\n"
            b'Proxy-Authenticate: Basic realm="demo"\r\nContent-Length: 0\r\n\r\n'
        )
        return
    host, _, port = target.rpartition(":")
    server = await trio.open_tcp_stream(host.strip("[]"), int(port))
    await client.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
    async with server, trio.open_nursery() as nursery:
        nursery.start_soon(pipe, client, server)
        nursery.start_soon(pipe, server, client)


async def demonstrate() -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_ws.serve, echo, "127.0.0.1", 0)
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, connect_proxy, 0, host="127.0.0.1")
        )
        proxy_port = listeners[0].socket.getsockname()[1]
        url = f"ws://127.0.0.1:{server.port}/"
        print(f"echo server on {url}, HTTP proxy on 127.0.0.1:{proxy_port}")

        print(f"through http://{CREDENTIALS}@127.0.0.1:{proxy_port}:")
        await talk(url, f"http://{CREDENTIALS}@127.0.0.1:{proxy_port}", ["hello", "wörld"])

        print("with a wrong password:")
        try:
            await talk(url, f"http://demo:wrong@127.0.0.1:{proxy_port}", ["hello"])
        except trio_ws.ProxyError as exc:
            print(f"  ProxyError: {exc}")
            print(f"  proxy={exc.proxy!r} status_code={exc.status_code}")
        nursery.cancel_scope.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", nargs="?", help="ws:// or wss:// URL (none: a demonstration)")
    parser.add_argument("messages", nargs="*", default=["hello"], metavar="MESSAGE")
    parser.add_argument("--proxy", help="proxy URL; 'none': directly (default: environment)")
    args = parser.parse_args()
    if args.url is None:
        trio.run(demonstrate)
        return 0
    proxy: str | bool | None = {None: True, "none": None}.get(args.proxy, args.proxy)
    try:
        print(f"{args.url} through {args.proxy or 'the environment proxy, if any'}:")
        trio.run(talk, args.url, proxy, args.messages)
    except (trio_ws.HandshakeError, trio_ws.InvalidURL) as exc:
        print(f"could not connect: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
