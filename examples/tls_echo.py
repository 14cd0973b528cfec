"""wss:// end to end, with a throwaway certificate authority.

    python examples/tls_echo.py

Needs the ``trustme`` package (``pip install trustme``), which creates a
certificate authority and a certificate for ``localhost`` in memory; without
it the program says so and exits with status 0. It starts a TLS echo server,
talks to it with a client that trusts the throwaway authority, and shows that
a client using the system's default authorities refuses the connection with
``TLSError``.

With a real certificate, the server side is::

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain("fullchain.pem", "privkey.pem")
"""

from __future__ import annotations

import functools
import ssl
import sys

import trio

import trio_ws


async def echo(ws: trio_ws.WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


async def main() -> None:
    import trustme

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async with trio.open_nursery() as nursery:
        server: trio_ws.Server = await nursery.start(
            functools.partial(trio_ws.serve, echo, "127.0.0.1", 0, ssl_context=server_context)
        )
        url = f"wss://localhost:{server.port}/secure"
        print(f"TLS echo server on {url}")

        async with trio_ws.connect(url, ssl_context=client_context) as ws:
            for message in ("encrypted hello", b"\x00" * 100_000):
                await ws.send(message)
                reply = await ws.receive()
                shown = repr(reply) if isinstance(reply, str) else f"<{len(reply)} bytes>"
                print(f"echoed over TLS: {shown}, intact: {reply == message}")
            print(f"ping over TLS: {await ws.ping() * 1000:.2f} ms")
        print(f"closed: {ws.close_info}")

        try:
            async with trio_ws.connect(url):  # default context: the system's CAs
                print("unexpected: connected without trusting the throwaway CA")
        except trio_ws.TLSError as exc:
            print(f"without the CA: TLSError: {exc}")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    try:
        import trustme  # noqa: F401
    except ImportError:
        print("this example needs trustme for a throwaway certificate: pip install trustme")
        sys.exit(0)
    trio.run(main)
