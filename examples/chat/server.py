"""A chat server: rooms, a typed JSON protocol and a web page, on one port.

    python examples/chat/server.py                 # http://127.0.0.1:8765/ until Ctrl-C
    python examples/chat/server.py --port 0        # a free port
    python -m trio_ws chat                         # the same, from the command line
    python -m trio_ws chat --redis redis://127.0.0.1:6379/0 --workers 2
                                                   # 2 processes, rooms shared through Redis

Open the URL it prints in a browser, or join from a terminal with
``python examples/chat/client.py ws://127.0.0.1:8765/ --name ann``.
docs/chat.md walks through this file.

The protocol: every message is a JSON object with a ``"type"``.

    client -> server
      {"type": "join", "room": "lobby", "name": "ann"}
      {"type": "chat", "room": "lobby", "text": "hello"}
      {"type": "leave", "room": "lobby"}

    server -> client
      {"type": "welcome", "room": "lobby", "you": "ann", "members": ["bob", "ann"]}
      {"type": "joined", "room": "lobby", "name": "ann"}     to the others in the room
      {"type": "message", "room": "lobby", "name": "ann", "text": "hello"}
                                                             to the room, sender included
      {"type": "left", "room": "lobby", "name": "ann"}       to the room
      {"type": "error", "error": "..."}                      to the sender of a bad message
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import signal
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

import trio_ws

# -- 1. Limits ---------------------------------------------------------------------
# Everything a client sends is checked against these before it is used.

MAX_NAME = 32  # characters in a name
MAX_TEXT = 2000  # characters in a chat message
MAX_ROOMS = 10  # rooms one connection may be in
MAX_ERRORS = 10  # bad messages tolerated before the connection is closed
MAX_MESSAGE_BYTES = 8 * 1024  # larger messages close the connection with 1009
MAX_CONNECTIONS = 1000  # beyond this, new clients get 503
ROOM_NAME = re.compile(r"[\w-]{1,32}")  # letters, digits, _ and -

PAGE = Path(__file__).with_name("index.html")

logger = logging.getLogger("chat")


# -- 2. The protocol: what a client may send -----------------------------------------


@dataclass(frozen=True)
class Join:
    room: str
    name: str


@dataclass(frozen=True)
class Chat:
    room: str
    text: str


@dataclass(frozen=True)
class Leave:
    room: str


class BadMessage(Exception):
    """A message that breaks the protocol; its text is sent back as an error."""


def _room(fields: dict[str, Any]) -> str:
    room = fields.get("room")
    if not isinstance(room, str) or not ROOM_NAME.fullmatch(room):
        raise BadMessage("a room name is 1 to 32 letters, digits, '_' or '-'")
    return room


def parse(raw: str | bytes) -> Join | Chat | Leave:
    """Decode and validate one client message, or raise BadMessage."""
    if isinstance(raw, bytes):
        raise BadMessage("send JSON in text messages, not binary ones")
    try:
        fields = json.loads(raw)
    except ValueError:
        raise BadMessage("not JSON") from None
    if not isinstance(fields, dict):
        raise BadMessage("a message is a JSON object with a 'type'")
    kind = fields.get("type")
    if kind == "join":
        name = fields.get("name")
        if not isinstance(name, str) or not 0 < len(name.strip()) <= MAX_NAME:
            raise BadMessage(f"a name is 1 to {MAX_NAME} characters")
        if not name.isprintable():
            raise BadMessage("a name cannot contain control characters")
        return Join(_room(fields), name.strip())
    if kind == "chat":
        text = fields.get("text")
        if not isinstance(text, str) or not text.strip():
            raise BadMessage("a chat message needs some 'text'")
        if len(text) > MAX_TEXT:
            raise BadMessage(f"a chat message is at most {MAX_TEXT} characters")
        return Chat(_room(fields), text)
    if kind == "leave":
        return Leave(_room(fields))
    raise BadMessage(f"unknown message type {kind!r}: use join, chat or leave")


# -- 3. The chat: a hub, and what each message does to it ------------------------------


class ChatRooms:
    """The chat's state is the hub's: who is connected (with their name as
    metadata) and who is in which room. Every message a client gets goes
    through the hub, which never blocks: a slow client cannot slow down the
    handler of anyone else, or even its own."""

    def __init__(self, hub: trio_ws.Hub) -> None:
        self.hub = hub

    async def handler(self, ws: trio_ws.WebSocket) -> None:
        """One connection, from its first message to its last."""
        async with self.hub.register(ws, name=None) as member:
            try:
                await self.converse(ws, member)
            finally:
                # However the connection ended, tell the rooms it was in.
                for room in member.rooms:
                    self.hub.broadcast_json(
                        {"type": "left", "room": room, "name": member.metadata["name"]},
                        room=room,
                        exclude=ws,
                    )

    async def converse(self, ws: trio_ws.WebSocket, member: trio_ws.Member) -> None:
        errors = 0
        async for raw in ws:
            try:
                request = parse(raw)
                if isinstance(request, Join):
                    await self.join(member, request)
                elif isinstance(request, Chat):
                    self.chat(member, request)
                else:
                    self.leave(member, request)
            except BadMessage as exc:
                errors += 1
                if errors > MAX_ERRORS:
                    await ws.aclose(trio_ws.CloseCode.POLICY_VIOLATION, "too many bad messages")
                    return
                self.hub.send_json_to(ws, {"type": "error", "error": str(exc)})

    async def join(self, member: trio_ws.Member, request: Join) -> None:
        name, room = member.metadata["name"], request.room
        if name is not None and request.name != name:
            raise BadMessage(f"you are already called {name!r}")
        if room in member.rooms:
            raise BadMessage(f"you are already in {room!r}")
        if len(member.rooms) >= MAX_ROOMS:
            raise BadMessage(f"you can be in at most {MAX_ROOMS} rooms")
        names = await self.names_in(room)
        if request.name in names:
            raise BadMessage(f"the name {request.name!r} is taken in {room!r}")
        member.metadata["name"] = request.name
        if not self.hub.join(member, room):
            return  # the connection is closing: nobody to welcome
        welcome = {"type": "welcome", "room": room, "you": request.name}
        self.hub.send_json_to(member, {**welcome, "members": [*names, request.name]})
        self.hub.broadcast_json(
            {"type": "joined", "room": room, "name": request.name}, room=room, exclude=member
        )

    async def names_in(self, room: str) -> list[str]:
        """The names in ``room``: in every chat process sharing this one's
        Redis (``--redis``), or in this process alone."""
        try:
            members = await self.hub.cluster_members(room)
        except trio_ws.BackplaneError as exc:
            logger.warning("no answer from Redis (%s): names in %r are this process's", exc, room)
            members = ()
        # This process's members as they are now, after the await (another
        # connection may have joined meanwhile), then those of the others,
        # as Redis knew them a moment ago.
        here = [other.metadata["name"] for other in self.hub.members(room)]
        return here + [other.metadata["name"] for other in members if not other.local]

    def chat(self, member: trio_ws.Member, request: Chat) -> None:
        if request.room not in member.rooms:
            raise BadMessage(f"join {request.room!r} before you chat there")
        message = {"room": request.room, "name": member.metadata["name"], "text": request.text}
        self.hub.broadcast_json({"type": "message", **message}, room=request.room)

    def leave(self, member: trio_ws.Member, request: Leave) -> None:
        if request.room not in member.rooms:
            raise BadMessage(f"you are not in {request.room!r}")
        self.hub.broadcast_json(
            {"type": "left", "room": request.room, "name": member.metadata["name"]},
            room=request.room,
        )
        self.hub.leave(member, request.room)


# -- 4. Plain HTTP on the same port: the page, the metrics, and the Origin check ------


def same_origin(request: trio_ws.Request) -> bool:
    """Browsers send Origin with every WebSocket upgrade. Accept only our own
    page (Origin matches the Host it asked for) and clients that are not
    browsers (no Origin), so that no other web site can use a visitor's
    browser to talk to this server (cross-site WebSocket hijacking)."""
    origin = request.origin
    return origin is None or origin in (f"http://{request.host}", f"https://{request.host}")


def metrics_for(hub: trio_ws.Hub) -> trio_ws.PrometheusMetrics | None:
    """Prometheus metrics at /metrics, if prometheus-client is installed."""
    try:
        return trio_ws.PrometheusMetrics(hub=hub)
    except ImportError:
        return None


def process_request_for(
    metrics: trio_ws.PrometheusMetrics | None, worker: trio_ws.Worker | None = None
) -> Callable[[trio_ws.Request], trio_ws.Response | trio_ws.Accept | None]:
    """The server's process_request: it sees every HTTP request first."""

    def process_request(request: trio_ws.Request) -> trio_ws.Response | trio_ws.Accept | None:
        if request.is_upgrade:
            if not same_origin(request):
                return trio_ws.Response.text(403, "this page's origin may not use the chat\n")
            if worker is not None:
                # One of several processes: say which one took the connection.
                return trio_ws.Accept(headers=[("X-Worker-Pid", str(os.getpid()))])
            return None  # upgrade: the handler takes it from here
        if request.path == "/":
            return trio_ws.Response(
                200, [("Content-Type", "text/html; charset=utf-8")], PAGE.read_bytes()
            )
        if metrics is not None and request.path == "/metrics":
            return metrics.process_request(request)
        return trio_ws.Response.text(404, "not found\n")

    return process_request


# -- 5. Starting it ------------------------------------------------------------------


def open_chat_hub(redis: str | None) -> AbstractAsyncContextManager[trio_ws.Hub]:
    """The chat's hub: in this process alone, or, given the URL of a Redis
    server, sharing its rooms with every chat process using the same Redis."""
    if redis is None:
        return trio_ws.open_hub()
    return trio_ws.open_hub(backplane=trio_ws.RedisBackplane(redis, prefix="chat"))


async def serve_chat(
    host: str,
    port: int,
    *,
    redis: str | None = None,
    worker: trio_ws.Worker | None = None,
    task_status: trio.TaskStatus[trio_ws.Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the chat server until cancelled; ``nursery.start`` gives the Server.
    ``redis``: a Redis URL, to share rooms with other chat processes.
    ``worker``: serve the port of a supervisor (``--workers``), not host:port,
    until SIGTERM."""
    listen: Callable[..., Awaitable[None]]
    if worker is None:
        listen = functools.partial(trio_ws.serve, host=host, port=port)
    else:
        listen = worker.serve
    # The hub is opened around the server, so that it outlives every handler.
    async with open_chat_hub(redis) as hub, trio.open_nursery() as nursery:
        metrics = metrics_for(hub)
        server: trio_ws.Server = await nursery.start(
            functools.partial(
                listen,
                ChatRooms(hub).handler,
                process_request=process_request_for(metrics, worker),
                max_connections=MAX_CONNECTIONS,
                max_message_size=MAX_MESSAGE_BYTES,
            )
        )
        if metrics is not None:
            metrics.server = server
        task_status.started(server)


async def main(host: str, port: int, client_command: str, redis: str | None = None) -> None:
    worker = trio_ws.current_worker()
    if worker is not None:
        # Started by `python -m trio_ws chat --workers N`: serve the shared port
        # until the supervisor's SIGTERM, then close every connection with 1001.
        await serve_chat(host, port, redis=redis, worker=worker)
        return
    async with trio.open_nursery() as nursery:
        server: trio_ws.Server = await nursery.start(
            functools.partial(serve_chat, host, port, redis=redis)
        )
        shown = f"[{host}]" if ":" in host else host
        print(f"chat server on http://{shown}:{server.port}/ (Ctrl-C to stop)")
        print("open that page in a browser, or join from a terminal:")
        print(f"  {client_command} ws://{shown}:{server.port}/ --name YOUR_NAME", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        print("stopping", flush=True)
        nursery.cancel_scope.cancel()  # every connection is closed with 1001 first


def run(
    argv: list[str] | None = None, client_command: str = "python examples/chat/client.py"
) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--redis", metavar="URL", help="share rooms through this Redis server")
    args = parser.parse_args(argv)
    trio.run(main, args.host, args.port, client_command, args.redis)
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
