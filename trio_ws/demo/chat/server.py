"""A chat server: rooms, a typed JSON protocol and a web page, on one port.

    python -m trio_ws chat                         # http://127.0.0.1:8765/ until Ctrl-C
    python -m trio_ws chat --port 0                # a free port
    python -m trio_ws chat --redis redis://127.0.0.1:6379/0 --workers 2
                                                   # 2 processes, rooms shared through Redis
    python examples/chat/server.py                 # the same, from a source checkout

Open the URL it prints in a browser, or join from a terminal with the
command it prints (``python -m trio_ws chat-client URL --name ann``, with
this Python). The page is ``index.html``, beside this file; the terminal
client is ``client.py``. docs/chat.md walks through this file.

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
import logging
import os
import re
import signal
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from importlib import resources
from typing import Any

import attrs
import trio

import trio_ws
from trio_ws.demo.command_line import port_number, trio_ws_command

# -- 1. Limits ---------------------------------------------------------------------
# Everything a client sends is checked against these before it is used.

MAX_NAME = 32  # characters in a name
MAX_TEXT = 2000  # characters in a chat message
MAX_ROOMS = 10  # rooms one connection may be in
MAX_ERRORS = 10  # bad messages tolerated before the connection is closed
MAX_MESSAGE_BYTES = 8 * 1024  # larger messages close the connection with 1009
MAX_CONNECTIONS = 1000  # beyond this, new clients get 503
ROOM_NAME = re.compile(r"[\w-]{1,32}")  # letters, digits, _ and -

PAGE = resources.files("trio_ws.demo.chat") / "index.html"  # installed with the package

logger = logging.getLogger("trio_ws")


# -- 2. The protocol: typed messages --------------------------------------------------
# Each message is an attrs class; MessageCodec checks what arrives against
# them (the JSON types of every field), and names each on the wire by its
# "type" field: Join is {"type": "join", ...}.


@attrs.frozen
class Join:
    room: str
    name: str


@attrs.frozen
class Chat:
    room: str
    text: str


@attrs.frozen
class Leave:
    room: str


ClientMessage = Join | Chat | Leave
CLIENT: trio_ws.MessageCodec[ClientMessage] = trio_ws.MessageCodec(ClientMessage)


class ServerMessage:
    """What the server sends: the attrs subclasses of this class."""


@attrs.frozen
class Welcome(ServerMessage):
    room: str
    you: str
    members: list[str]


@attrs.frozen
class Joined(ServerMessage):
    room: str
    name: str


@attrs.frozen
class Message(ServerMessage):
    room: str
    name: str
    text: str


@attrs.frozen
class Left(ServerMessage):
    room: str
    name: str


@attrs.frozen
class Error(ServerMessage):
    error: str


SERVER = trio_ws.MessageCodec(ServerMessage)


class BadMessage(Exception):
    """A message that breaks the protocol; its text is sent back as an error."""


def check(message: ClientMessage) -> ClientMessage:
    """The rules the types cannot say, or raise BadMessage."""
    if not ROOM_NAME.fullmatch(message.room):
        raise BadMessage("a room name is 1 to 32 letters, digits, '_' or '-'")
    if isinstance(message, Join):
        name = message.name.strip()
        if not 0 < len(name) <= MAX_NAME:
            raise BadMessage(f"a name is 1 to {MAX_NAME} characters")
        if not name.isprintable():
            raise BadMessage("a name cannot contain control characters")
        return Join(message.room, name)
    if isinstance(message, Chat):
        if not message.text.strip():
            raise BadMessage("a chat message needs some 'text'")
        if len(message.text) > MAX_TEXT:
            raise BadMessage(f"a chat message is at most {MAX_TEXT} characters")
    return message


def parse(raw: str | bytes) -> ClientMessage:
    """Decode and check one client message, or raise BadMessage."""
    try:
        return check(CLIENT.decode(raw))
    except trio_ws.InvalidMessage as exc:
        raise BadMessage(exc.problem) from None


# -- 3. The chat: a hub, and what each message does to it ------------------------------


class ChatRooms:
    """The chat's state is the hub's: who is connected (with their name as
    metadata) and who is in which room. Every message a client gets goes
    through the hub, which never blocks: a slow client cannot slow down the
    handler of anyone else, or even its own. A message for many is encoded
    once, whatever the number of its recipients."""

    def __init__(self, hub: trio_ws.Hub) -> None:
        self.hub = hub

    def tell(self, message: ServerMessage, **recipients: Any) -> None:
        """Broadcast ``message`` (to ``room=``, except ``exclude=``), encoded once."""
        self.hub.broadcast(SERVER.encode(message), **recipients)

    async def handler(self, ws: trio_ws.WebSocket) -> None:
        """One connection, from its first message to its last."""
        async with self.hub.register(ws, name=None) as member:
            try:
                await self.converse(ws, member)
            finally:
                # However the connection ended, tell the rooms it was in.
                for room in member.rooms:
                    self.tell(Left(room, member.metadata["name"]), room=room, exclude=ws)

    async def converse(self, ws: trio_ws.WebSocket, member: trio_ws.Member) -> None:
        errors = 0
        async for raw in ws:
            try:
                request = parse(raw)
                match request:
                    case Join():
                        await self.join(member, request)
                    case Chat():
                        self.chat(member, request)
                    case Leave():
                        self.leave(member, request)
            except BadMessage as exc:
                errors += 1
                if errors > MAX_ERRORS:
                    await ws.aclose(trio_ws.CloseCode.POLICY_VIOLATION, "too many bad messages")
                    return
                self.hub.send_to(ws, SERVER.encode(Error(str(exc))))

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
        welcome = Welcome(room, request.name, [*names, request.name])
        self.hub.send_to(member, SERVER.encode(welcome))
        self.tell(Joined(room, request.name), room=room, exclude=member)

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
        name = member.metadata["name"]
        self.tell(Message(request.room, name, request.text), room=request.room)

    def leave(self, member: trio_ws.Member, request: Leave) -> None:
        if request.room not in member.rooms:
            raise BadMessage(f"you are not in {request.room!r}")
        self.tell(Left(request.room, member.metadata["name"]), room=request.room)
        self.hub.leave(member, request.room)


# -- 4. Routes on one port: the chat, the page, the metrics, the Origin check --------


def same_origin(request: trio_ws.Request) -> trio_ws.Response | None:
    """The chat route's guard. Browsers send Origin with every WebSocket
    upgrade: accept only our own page (Origin matches the Host it asked for)
    and clients that are not browsers (no Origin), so that no other web site
    can use a visitor's browser to talk to this server (cross-site WebSocket
    hijacking)."""
    origin = request.origin
    if origin is None or origin in (f"http://{request.host}", f"https://{request.host}"):
        return None
    return trio_ws.Response.text(403, "this page's origin may not use the chat\n")


def page(request: trio_ws.Request) -> trio_ws.Response:
    return trio_ws.Response(200, [("Content-Type", "text/html; charset=utf-8")], PAGE.read_bytes())


def metrics_for(hub: trio_ws.Hub) -> trio_ws.PrometheusMetrics | None:
    """Prometheus metrics at /metrics, if prometheus-client is installed."""
    try:
        return trio_ws.PrometheusMetrics(hub=hub)
    except ImportError:
        return None


def routes(rooms: ChatRooms, metrics: trio_ws.PrometheusMetrics | None) -> trio_ws.Router:
    """Everything the server answers; any other path gets 404. An upgrade of
    "/" goes to the chat, a plain GET of "/" to the page."""
    router = trio_ws.Router()
    router.add_websocket("/", rooms.handler, guard=same_origin)
    router.add_http("/", page)
    if metrics is not None:
        router.add_http("/metrics", functools.partial(metrics_page, metrics))
    return router


def metrics_page(metrics: trio_ws.PrometheusMetrics, request: trio_ws.Request) -> trio_ws.Response:
    return metrics.process_request(request) or trio_ws.Response.text(404, "not found\n")


def worker_header(request: trio_ws.Request) -> trio_ws.Accept:
    """With several processes (--workers), say which one took the connection."""
    return trio_ws.Accept(headers=[("X-Worker-Pid", str(os.getpid()))])


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
                routes(ChatRooms(hub), metrics),
                process_request=None if worker is None else worker_header,
                max_connections=MAX_CONNECTIONS,
                max_message_size=MAX_MESSAGE_BYTES,
            )
        )
        if metrics is not None:
            metrics.server = server
        task_status.started(server)


async def main(host: str, port: int, redis: str | None = None) -> None:
    worker = trio_ws.current_worker()
    if worker is not None:
        # Started by `python -m trio_ws chat --workers N`: serve the shared port
        # until the supervisor's SIGTERM, then close every connection with 1001.
        await serve_chat(host, port, redis=redis, worker=worker)
        return
    # Ctrl-C (SIGINT) and SIGTERM are received from here on, not raised.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server: trio_ws.Server = await nursery.start(
                functools.partial(serve_chat, host, port, redis=redis)
            )
            shown = f"[{host}]" if ":" in host else host
            url = f"ws://{shown}:{server.port}/"
            print(f"chat server on http://{shown}:{server.port}/ (Ctrl-C to stop)")
            print("open that page in a browser, or join from a terminal:")
            print(f"  {trio_ws_command('chat-client', url, '--name', 'YOUR_NAME')}", flush=True)
            async for _ in signals:
                break  # Ctrl-C, or SIGTERM
            nursery.cancel_scope.cancel()  # every connection is closed with 1001 first
    print("stopped", flush=True)


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=port_number, default=8765, help="0 picks a free port")
    parser.add_argument("--redis", metavar="URL", help="share rooms through this Redis server")
    args = parser.parse_args(argv)
    trio.run(main, args.host, args.port, args.redis)
    return 0
