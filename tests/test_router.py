"""Routing (``_app/router.py`` and the handshake's routing step): matching
and URL building on their own, then a router served over real loopback
sockets: 404 and 405 before any upgrade, typed parameters, HTTP routes,
per-route settings and guards, mounting."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import trio
import trio.testing
from conftest import start_server, url_of
from server_helpers import http_exchange

import trio_ws
from trio_ws._endpoints.routes import HttpEndpoint, NoRoute, WebSocketEndpoint

UPGRADE = (
    "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


def upgrade(path: str, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\n{UPGRADE}{extra}\r\n".encode()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def header(answer: bytes, name: str) -> str | None:
    head = answer.partition(b"\r\n\r\n")[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.lower() == name.lower():
            return value.strip()
    return None


def request(path: str, method: str = "GET", upgrade: bool = True) -> trio_ws.Request:
    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade")] if upgrade else []
    return trio_ws.Request.from_target(method, path, headers)


async def _echo_params(ws: trio_ws.WebSocket, **params: Any) -> None:
    await ws.send(json.dumps({k: repr(v) for k, v in params.items()}))
    await ws.send(json.dumps({k: repr(v) for k, v in ws.path_params.items()}))


def make_router() -> trio_ws.Router:
    router = trio_ws.Router()
    router.add_websocket("/chat/{room}", _echo_params, name="chat")
    router.add_websocket("/items/{id:int}", _echo_params, name="item")
    router.add_websocket("/prices/{x:float}", _echo_params)
    router.add_websocket("/users/{u:uuid}", _echo_params)
    router.add_websocket("/files/{rest:path}", _echo_params, name="file")
    router.add_websocket("/", _echo_params, name="root")

    @router.http("/health")
    def health(request: trio_ws.Request) -> trio_ws.Response:
        return trio_ws.Response(200, [("Content-Type", "text/plain")], "ok\n")

    @router.http("/status/{name}", methods=["GET", "POST"])
    async def status(request: trio_ws.Request, name: str) -> trio_ws.Response:
        await trio.lowlevel.checkpoint()
        body = json.dumps({"name": name, "method": request.method})
        return trio_ws.Response(200, [("Content-Type", "application/json")], body)

    return router


# -- matching on its own ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/chat/lobby", {"room": "lobby"}),
        ("/chat/a%20b", {"room": "a b"}),
        ("/chat/a%2Fb", {"room": "a/b"}),  # an encoded slash stays in its segment
        ("/items/42", {"id": 42}),
        ("/prices/2.5", {"x": 2.5}),
        (
            "/users/12345678-1234-5678-1234-567812345678",
            {"u": uuid.UUID(int=0x12345678123456781234567812345678)},
        ),
        ("/files/a/b/c.txt", {"rest": "a/b/c.txt"}),
        ("/", {}),
    ],
)
def test_matching(path: str, params: dict[str, Any]) -> None:
    found = make_router().resolve(request(path))
    assert isinstance(found, WebSocketEndpoint)
    assert dict(found.params) == params


@pytest.mark.parametrize(
    "path",
    ["/chat", "/chat/", "/chat/a/b", "/items/x", "/items/-1", "/prices/nan", "/users/1", "/nope"],
)
def test_no_match(path: str) -> None:
    assert make_router().resolve(request(path)) == NoRoute()


def test_methods_and_kinds() -> None:
    router = make_router()
    assert make_router().resolve(request("/chat/x", "POST")) == NoRoute(("GET",))
    assert isinstance(router.resolve(request("/health", upgrade=False)), HttpEndpoint)
    assert isinstance(router.resolve(request("/health", "HEAD", upgrade=False)), HttpEndpoint)
    assert router.resolve(request("/health", "DELETE")) == NoRoute(("GET", "HEAD"))
    # Both kinds on one path: upgrades go to the WebSocket route.
    both = trio_ws.Router()
    both.add_http("/x", lambda r: trio_ws.Response(200))
    both.add_websocket("/x", _echo_params)
    assert isinstance(both.resolve(request("/x")), WebSocketEndpoint)
    assert isinstance(both.resolve(request("/x", upgrade=False)), HttpEndpoint)
    reverse = trio_ws.Router()  # the order of adding does not change that
    reverse.add_websocket("/x", _echo_params)
    reverse.add_http("/x", lambda r: trio_ws.Response(200))
    assert isinstance(reverse.resolve(request("/x")), WebSocketEndpoint)
    assert isinstance(reverse.resolve(request("/x", upgrade=False)), HttpEndpoint)


def test_custom_converters_and_rejection() -> None:
    router = trio_ws.Router()

    def even(text: str) -> int:
        if int(text) % 2:
            raise ValueError("odd")
        return int(text)

    router.converter("even", trio_ws.Converter(r"[0-9]+", even))
    router.converter("slug", trio_ws.Converter(r"[a-z0-9-]+"))
    router.add_websocket("/n/{n:even}", _echo_params, name="even")
    router.add_websocket("/n/{n:int}", _echo_params)  # what the first rejects
    router.add_websocket("/post/{slug:slug}", _echo_params)
    found = router.resolve(request("/n/4"))
    assert isinstance(found, WebSocketEndpoint)
    assert found.params == {"n": 4}
    odd = router.resolve(request("/n/3"))
    assert isinstance(odd, WebSocketEndpoint)
    assert odd.params == {"n": 3}
    assert router.resolve(request("/post/Hello")) == NoRoute()
    with pytest.raises(ValueError, match="unknown converter 'nope'"):
        router.add_websocket("/x/{a:nope}", _echo_params)
    with pytest.raises(ValueError, match="starts with '/'"):
        router.add_websocket("x", _echo_params)
    with pytest.raises(ValueError, match="two routes are named 'even'"):
        router.add_websocket("/y", _echo_params, name="even")
    with pytest.raises(TypeError, match="unknown option 'ping_intervall'"):
        router.add_websocket("/z", _echo_params, ping_intervall=5)


def test_url_for_and_mount() -> None:
    router = make_router()
    assert router.url_for("chat", room="a b/c") == "/chat/a%20b%2Fc"
    assert router.url_for("file", rest="a b/c.txt") == "/files/a%20b/c.txt"
    assert router.url_for("item", id=7) == "/items/7"
    with pytest.raises(TypeError, match="takes parameters"):
        router.url_for("item")
    with pytest.raises(KeyError):
        router.url_for("nope")
    site = trio_ws.Router()
    site.mount("/api", router)
    assert site.url_for("chat", room="x") == "/api/chat/x"
    found = site.resolve(request("/api/items/3"))
    assert isinstance(found, WebSocketEndpoint)
    assert found.params == {"id": 3}
    assert site.resolve(request("/items/3")) == NoRoute()
    with pytest.raises(ValueError, match="prefix"):
        site.mount("/api/", router)


# -- served ------------------------------------------------------------------------------


async def test_routes_over_a_socket(nursery: trio.Nursery) -> None:
    server = await start_server(nursery, make_router())
    for path, expected in (
        ("/chat/a%20b", {"room": "'a b'"}),
        ("/items/42", {"id": "42"}),
        ("/", {}),
    ):
        async with trio_ws.connect(url_of(server, path)) as ws:
            assert json.loads(await ws.receive()) == expected  # keyword arguments
            assert json.loads(await ws.receive()) == expected  # ws.path_params


async def test_unknown_paths_get_404_before_any_upgrade(nursery: trio.Nursery) -> None:
    server = await start_server(nursery, make_router())
    answer = await http_exchange(server.port, upgrade("/nope"))
    assert status_of(answer) == 404
    assert b"101" not in answer.split(b"\r\n")[0]
    with pytest.raises(trio_ws.ConnectionRejected) as info:
        async with trio_ws.connect(url_of(server, "/items/x")):
            pass  # pragma: no cover
    assert info.value.status_code == 404
    answer = await http_exchange(server.port, upgrade("/chat/lobby", "POST"))
    assert status_of(answer) == 405
    assert header(answer, "Allow") == "GET"
    # A plain GET to a WebSocket route: 426 (upgrade required), as without a router.
    plain = await http_exchange(server.port, b"GET /chat/lobby HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(plain) == 426
    await trio.testing.wait_all_tasks_blocked()
    rejected = server.stats().rejected
    assert rejected["not_found"] == 2
    assert rejected["bad_request"] == 1


async def test_http_routes(nursery: trio.Nursery) -> None:
    server = await start_server(nursery, make_router())
    answer = await http_exchange(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(answer) == 200
    assert answer.endswith(b"\r\n\r\nok\n")
    head = await http_exchange(server.port, b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(head) == 200
    assert head.endswith(b"\r\n\r\n")
    assert header(head, "Content-Length") == "3"
    posted = await http_exchange(
        server.port, b"POST /status/db HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    )
    assert json.loads(posted.partition(b"\r\n\r\n")[2]) == {"name": "db", "method": "POST"}
    assert status_of(await http_exchange(server.port, upgrade("/health", "DELETE"))) == 405


async def test_a_failing_http_route_is_a_500(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    router = trio_ws.Router()

    @router.http("/boom")
    def boom(request: trio_ws.Request) -> trio_ws.Response:
        raise RuntimeError("boom")

    server = await start_server(nursery, router)
    answer = await http_exchange(server.port, b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(answer) == 500
    assert "HTTP route failed for GET /boom" in caplog.text


async def test_per_route_settings(nursery: trio.Nursery) -> None:
    router = trio_ws.Router()

    async def echo(ws: trio_ws.WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    router.add_websocket("/small", echo, max_message_size=100, compression=None)
    router.add_websocket("/v2", echo, subprotocols=["v2"])
    router.add_websocket("/app", echo, origins=["https://app.example"])
    server = await start_server(nursery, router, subprotocols=["v1"])
    async with trio_ws.connect(url_of(server, "/small")) as ws:
        assert ws.response is not None
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        await ws.send("x" * 101)
        with pytest.raises(trio_ws.ConnectionClosed) as info:
            await ws.receive()
        assert info.value.code == 1009
    async with trio_ws.connect(url_of(server, "/v2"), subprotocols=["v1", "v2"]) as ws:
        assert ws.subprotocol == "v2"
    async with trio_ws.connect(url_of(server, "/small"), subprotocols=["v1", "v2"]) as ws:
        assert ws.subprotocol == "v1"  # the server's
    with pytest.raises(trio_ws.ConnectionRejected) as rejected:
        async with trio_ws.connect(url_of(server, "/app"), headers={"Origin": "https://evil"}):
            pass  # pragma: no cover
    assert rejected.value.status_code == 403
    async with trio_ws.connect(url_of(server, "/app"), headers={"Origin": "https://app.example"}):
        pass


async def test_guards(nursery: trio.Nursery) -> None:
    router = trio_ws.Router()

    async def check_token(request: trio_ws.Request, room: str) -> trio_ws.Response | None:
        await trio.lowlevel.checkpoint()
        token = request.headers.get("Authorization") or dict(
            part.partition("=")[::2] for part in request.query.split("&")
        ).get("token")
        if token in ("Bearer sesame", "sesame"):
            return None
        return trio_ws.Response(401, [("WWW-Authenticate", "Bearer")], f"no entry to {room}")

    router.add_websocket("/rooms/{room}", _echo_params, guard=check_token)
    server = await start_server(nursery, router)
    with pytest.raises(trio_ws.ConnectionRejected) as info:
        async with trio_ws.connect(url_of(server, "/rooms/vault")):
            pass  # pragma: no cover
    assert info.value.status_code == 401
    assert info.value.headers.get("WWW-Authenticate") == "Bearer"
    assert info.value.body == b"no entry to vault"
    headers = {"Authorization": "Bearer sesame"}
    async with trio_ws.connect(url_of(server, "/rooms/vault"), headers=headers) as ws:
        assert json.loads(await ws.receive()) == {"room": "'vault'"}
    async with trio_ws.connect(url_of(server, "/rooms/vault?token=sesame")) as ws:
        assert json.loads(await ws.receive()) == {"room": "'vault'"}


async def test_mounted_router_served(nursery: trio.Nursery) -> None:
    site = trio_ws.Router()
    site.mount("/api/v1", make_router())
    server = await start_server(nursery, site)
    async with trio_ws.connect(url_of(server, site.url_for("item", id=5))) as ws:
        assert json.loads(await ws.receive()) == {"id": "5"}
    answer = await http_exchange(server.port, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(answer) == 200
