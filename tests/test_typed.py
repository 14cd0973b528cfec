"""Typed messages (``_app/typed.py``): the codec on its own, then typed
connections over loopback (valid messages, invalid ones closing with 1007 or
raised to the handler), a hub broadcast, mypy's view of the types, and the
missing-extra message."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Literal

import attrs
import pytest
import trio
import trio.testing
from conftest import start_server, url_of

import trio_ws
from trio_ws._app.typed import InvalidMessage, MessageCodec, typed
from trio_ws.testing import TestClient

# -- a chat protocol -------------------------------------------------------------------


@attrs.frozen
class Join:
    name: str
    room: str = "lobby"


@attrs.frozen
class ChatMessage:
    text: str
    mentions: list[str] = attrs.field(factory=list)


@attrs.frozen
class Leave:
    pass


ClientMessage = Join | ChatMessage | Leave


class ServerMessage:
    """Base class: its attrs subclasses are the server's messages."""


@attrs.frozen
class Joined(ServerMessage):
    name: str
    members: int


@attrs.frozen
class Said(ServerMessage):
    name: str
    text: str


@attrs.frozen
class Problem(ServerMessage):
    detail: str


@attrs.frozen
class Point:
    x: float
    y: float


@attrs.frozen
class Shape:
    kind: Literal["polygon", "line"]
    points: list[Point]
    label: str | None = None


CLIENT: MessageCodec[ClientMessage] = MessageCodec(ClientMessage)
SERVER = MessageCodec(ServerMessage)


# -- the codec -------------------------------------------------------------------------


def test_round_trip_and_wire_format() -> None:
    assert CLIENT.encode(ChatMessage("hi", ["bo"])) == (
        '{"type":"chat_message","text":"hi","mentions":["bo"]}'
    )
    assert CLIENT.encode(Leave()) == '{"type":"leave"}'
    for message in (Join("ann"), Join("ann", "kitchen"), ChatMessage("é ✓"), Leave()):
        assert CLIENT.decode(CLIENT.encode(message)) == message
    assert CLIENT.decode(b'{"name": "ann", "type": "join"}') == Join("ann")
    assert SERVER.tags == {Joined: "joined", Said: "said", Problem: "problem"}
    shapes = MessageCodec(Shape)
    shape = Shape("line", [Point(0, 1.5), Point(2, 3)])
    assert shapes.decode(shapes.encode(shape)) == shape
    assert shapes.decode('{"type":"shape","kind":"line","points":[{"x":1,"y":2}]}') == Shape(
        "line", [Point(1.0, 2.0)]
    )


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ('{"type":"chat_message","text":5}', "chat_message.text: expected str"),
        ('{"type":"join","name":true}', "join.name: expected str"),
        ('{"type":"join"}', "join.name: required field missing"),
        ('{"type":"join","name":"a","nick":"b"}', "join: unknown field nick"),
        ('{"type":"chat_message","text":"a","mentions":["x",1]}', "mentions[1]: expected str"),
        ('{"type":"shout","text":"a"}', "unknown type 'shout'"),
        ('{"type":7}', "unknown type 7"),
        ('{"name":"a"}', "no 'type' field"),
        ("[1, 2]", "expected a JSON object, not list"),
        ("hello", "not JSON"),
    ],
)
def test_what_does_not_match_is_named(data: str, problem: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        CLIENT.decode(data)
    assert problem in info.value.problem
    assert info.value.data == data


def test_nested_problems_name_their_path() -> None:
    shapes = MessageCodec(Shape)
    with pytest.raises(InvalidMessage, match=r"shape.points\[1\].y: expected float"):
        shapes.decode('{"type":"shape","kind":"line","points":[{"x":1,"y":2},{"x":1,"y":"2"}]}')
    with pytest.raises(InvalidMessage, match=r"shape\.kind"):
        shapes.decode('{"type":"shape","kind":"circle","points":[]}')


def test_settings() -> None:
    named = MessageCodec(Join | Leave, tag="kind", names={Join: "hello"})
    assert named.encode(Join("a")) == '{"kind":"hello","name":"a","room":"lobby"}'
    assert named.decode('{"kind":"leave"}') == Leave()
    lenient = MessageCodec(Join, extra_fields="ignore")
    assert lenient.decode('{"type":"join","name":"a","nick":"b"}') == Join("a")
    with pytest.raises(TypeError, match="Said is not one of the message types"):
        CLIENT.encode(Said("a", "b"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not an attrs class"):
        MessageCodec(Join | int)

    class Empty:
        pass

    with pytest.raises(TypeError, match="no attrs classes"):
        MessageCodec(Empty)

    @attrs.frozen
    class Other:
        pass

    with pytest.raises(ValueError, match="two message classes are named 'join'"):
        MessageCodec(Join | Other, names={Other: "join"})


# -- over a connection -----------------------------------------------------------------


async def _chat_handler(ws: trio_ws.WebSocket) -> None:
    chat = typed(ws, receive=CLIENT, send=SERVER)
    name = "?"
    async for message in chat:
        match message:
            case Join(name=joined):
                name = joined
                await chat.send(Joined(name=name, members=1))
            case ChatMessage(text=text):
                await chat.send(Said(name=name, text=text))
            case Leave():
                await chat.aclose()


async def test_typed_connection() -> None:
    async with TestClient(_chat_handler) as app, app.connect() as ws:
        client = typed(ws, receive=SERVER, send=CLIENT)
        await client.send(Join("ann"))
        assert await client.receive() == Joined("ann", 1)
        await client.send(ChatMessage("hello"))
        assert await client.receive() == Said("ann", "hello")
        await client.send(Leave())
        with pytest.raises(trio_ws.ConnectionClosed) as info:
            await client.receive()
        assert info.value.code == 1000


async def test_an_invalid_message_closes_with_1007() -> None:
    async with TestClient(_chat_handler) as app:
        async with app.connect() as ws:
            await ws.send('{"type":"chat_message","text":5}')
            with pytest.raises(trio_ws.ConnectionClosed) as info:
                await ws.receive()
        assert info.value.code == 1007
        assert info.value.reason == "chat_message.text: expected str"
        await trio.testing.wait_all_tasks_blocked()  # the server's side is over too
        assert app.server.stats().close_codes[1007] == 1


async def test_an_invalid_message_can_be_answered() -> None:
    async def handler(ws: trio_ws.WebSocket) -> None:
        chat = typed(ws, receive=CLIENT, send=SERVER, on_invalid="raise")
        while True:
            try:
                message = await chat.receive()
            except InvalidMessage as exc:
                await chat.send(Problem(exc.problem))
                continue
            except trio_ws.ConnectionClosed:
                return
            if isinstance(message, ChatMessage):
                await chat.send(Said("?", message.text))

    async with TestClient(handler) as app, app.connect() as ws:
        client = typed(ws, receive=SERVER, send=CLIENT)
        await ws.send("not json")
        answer = await client.receive()
        assert isinstance(answer, Problem)
        assert answer.detail.startswith("not JSON")
        await client.send(ChatMessage("still here"))
        assert await client.receive() == Said("?", "still here")


async def test_a_broadcast_is_encoded_once(nursery: trio.Nursery) -> None:
    encoded: list[object] = []

    class Counting(MessageCodec[ServerMessage]):
        def encode(self, message: ServerMessage) -> str:
            encoded.append(message)
            return super().encode(message)

    codec = Counting(ServerMessage)
    async with trio_ws.open_hub() as hub:
        joined = trio.Semaphore(0)

        async def handler(ws: trio_ws.WebSocket) -> None:
            async with hub.register(ws) as member:
                hub.join(member, "lobby")
                joined.release()
                async for _ in ws:
                    pass

        server = await start_server(nursery, handler)
        async with trio_ws.connect(url_of(server)) as a, trio_ws.connect(url_of(server)) as b:
            await joined.acquire()
            await joined.acquire()
            hub.broadcast(codec.encode(Said("server", "welcome")), room="lobby")
            for ws in (a, b):
                assert SERVER.decode(await ws.receive()) == Said("server", "welcome")
    assert encoded == [Said("server", "welcome")]


# -- mypy's view -----------------------------------------------------------------------


@pytest.mark.slow
def test_mypy_understands_the_types(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api")
    snippet = tmp_path / "snippet.py"
    snippet.write_text(
        textwrap.dedent(
            """
            import attrs
            import trio_ws

            class ServerMessage: ...

            @attrs.frozen
            class Joined(ServerMessage):
                name: str

            @attrs.frozen
            class Join:
                name: str

            @attrs.frozen
            class ChatMessage:
                text: str

            ClientMessage = Join | ChatMessage
            CODEC: trio_ws.MessageCodec[ServerMessage] = trio_ws.MessageCodec(ServerMessage)

            async def handler(ws: trio_ws.WebSocket) -> None:
                chat = trio_ws.typed(ws, receive=ServerMessage, send=ServerMessage)
                message = await chat.receive()
                reveal_type(message)
                await chat.send(Joined(name="a"))
                await chat.send(Join(name="a"))  # not a ServerMessage
                annotated: trio_ws.TypedWebSocket[ClientMessage, ServerMessage] = trio_ws.typed(
                    ws, receive=ClientMessage, send=CODEC
                )
                async for got in annotated:
                    match got:
                        case ChatMessage(text=text):
                            reveal_type(text)
                        case _:
                            pass
            """
        )
    )
    out, _, _ = api.run(
        ["--strict", "--no-incremental", "--follow-imports=silent", str(snippet)],
    )
    assert 'Revealed type is "snippet.ServerMessage"' in out, out
    assert 'Revealed type is "str"' in out or 'Revealed type is "builtins.str"' in out, out
    assert 'Argument 1 to "send" of "TypedWebSocket" has incompatible type "Join"' in out, out
    assert out.count("error:") == 1, out


def test_without_cattrs_the_error_says_so() -> None:
    code = (
        "import sys; sys.modules['cattrs'] = None\n"
        "import attrs, trio_ws\n"
        "@attrs.frozen\nclass A:\n    x: int\n"
        "try:\n    trio_ws.MessageCodec(A)\nexcept ImportError as e:\n    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "typed messages need cattrs, a dependency of trio_ws: pip install cattrs" in done.stdout
