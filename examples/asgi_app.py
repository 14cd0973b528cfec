"""trio_ws chat rooms inside an ASGI server, beside a Starlette HTTP page.

One port serves both: Starlette answers ``GET /``, and everything under
``/ws`` goes to a trio_ws router (``trio_ws.asgi.App``), whose handlers get
real ``trio_ws.WebSocket`` connections registered in a hub. The hub lives
as long as the application: Starlette's lifespan opens and closes it.

Serve it with Hypercorn's Trio worker, from this folder::

    hypercorn --worker-class trio asgi_app:app

or run this file, which serves it on a free port with Hypercorn in-process,
has two clients chat in a room, prints what they got, and stops.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import trio_ws
import trio_ws.asgi

router = trio_ws.Router()
hubs: list[trio_ws.Hub] = []  # the application's hub, while it runs


@router.websocket("/chat/{room}")
async def chat(ws: trio_ws.WebSocket, room: str) -> None:
    """Each message is ``{"name": ..., "text": ...}``; everyone in the room
    (the sender too) gets ``"name: text"``."""
    hub = hubs[0]
    async with hub.register(ws):
        hub.join(ws, room)
        while True:
            try:
                message = await ws.receive_json()
            except trio_ws.ConnectionClosed:
                return
            hub.broadcast(f"{message['name']}: {message['text']}", room=room)


async def homepage(request: Request) -> PlainTextResponse:
    return PlainTextResponse("trio_ws chat: connect to /ws/chat/{room}")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with trio_ws.open_hub() as hub:
        hubs.append(hub)
        yield
        hubs.remove(hub)


app = Starlette(
    routes=[Route("/", homepage), Mount("/ws", trio_ws.asgi.App(router))],
    lifespan=lifespan,
)


async def fetch_page(host: str, port: int) -> str:
    """GET / with a minimal HTTP/1.0 request: the status and the body."""
    async with await trio.open_tcp_stream(host, port) as stream:
        await stream.send_all(b"GET / HTTP/1.0\r\nHost: " + host.encode() + b"\r\n\r\n")
        response = b""
        while data := await stream.receive_some():
            response += data
    head, _, body = response.partition(b"\r\n\r\n")
    return f"{head.split()[1].decode()} {body.decode()}"


async def main() -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            functools.partial(serve, app, config, shutdown_trigger=stop.wait)
        )
        host, port = binds[0].removeprefix("http://").split(":")
        print("GET / ->", await fetch_page(host, int(port)))
        url = f"ws://{host}:{port}/ws/chat/blue"
        async with trio_ws.connect(url) as ann, trio_ws.connect(url) as bob:
            await ann.send_json({"name": "ann", "text": "hello, room blue"})
            print("bob got:", await bob.receive())
            await bob.send_json({"name": "bob", "text": "hi ann"})
            await ann.receive()  # ann's own message comes back first
            print("ann got:", await ann.receive())
        stop.set()


if __name__ == "__main__":
    trio.run(main)
