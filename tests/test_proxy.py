"""``connect(url, proxy=...)`` through forward proxies.

Against a real proxy: pproxy (HTTP CONNECT and SOCKS5 on one port), started
once for this module as two subprocesses on 127.0.0.1, one open and one
asking for ``user:pass`` (``--auth 0``: pproxy would otherwise trust an
address for a month after one good login). Refusals pproxy cannot make
(403, 502, a SOCKS reply code, nonsense, a proxy that never answers) come
from small proxies of this file's own, in the test's trio run.
"""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from conftest import TLS, open_fds, start_server, url_of

import trio_ws
from trio_ws._endpoints.proxy import MAX_CONNECT_HEAD
from trio_ws._endpoints.url import parse_url

PROXY_VARIABLES = [
    name
    for base in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    for name in (base, base.upper())
]


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without proxy variables (conftest.py sets NO_PROXY)."""
    for name in [*PROXY_VARIABLES, "REQUEST_METHOD"]:
        monkeypatch.delenv(name, raising=False)


# -- pproxy ------------------------------------------------------------------------


@attrs.frozen
class PProxy:
    open_port: int  # no credentials
    auth_port: int  # user:pass

    def url(self, scheme: str, credentials: str = "") -> str:
        port = self.auth_port if credentials else self.open_port
        return f"{scheme}://{credentials}{'@' if credentials else ''}127.0.0.1:{port}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pproxy exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)  # polling: pproxy is still starting
    raise RuntimeError(f"pproxy is not listening on port {port}")


@pytest.fixture(scope="module")
def pproxy() -> Iterator[PProxy]:
    pytest.importorskip("pproxy")
    ports = PProxy(_free_port(), _free_port())
    commands = [
        ["-l", f"http+socks5://127.0.0.1:{ports.open_port}"],
        ["-l", f"http+socks5://127.0.0.1:{ports.auth_port}#user:pass", "--auth", "0"],
    ]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "pproxy", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for args in commands
    ]
    try:
        _wait_listening(processes[0], ports.open_port)
        _wait_listening(processes[1], ports.auth_port)
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)


async def round_trip(url: str, **kwargs: Any) -> None:
    kwargs.setdefault("open_timeout", 5)
    async with trio_ws.connect(url, **kwargs) as ws:
        await ws.send("through the proxy")
        assert await ws.receive() == "through the proxy"


# -- through pproxy ------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "socks5", "socks5h"])
@pytest.mark.parametrize("credentials", ["", "user:pass"])
async def test_ws_through_the_proxy(
    nursery: trio.Nursery, pproxy: PProxy, scheme: str, credentials: str
) -> None:
    server = await start_server(nursery)
    await round_trip(url_of(server), proxy=pproxy.url(scheme, credentials))


@pytest.mark.parametrize("scheme", ["http", "socks5", "socks5h"])
async def test_wss_through_the_tunnel(
    nursery: trio.Nursery, pproxy: PProxy, tls: TLS, scheme: str
) -> None:
    server = await start_server(nursery, ssl_context=tls.server_context)
    url = f"wss://localhost:{server.port}/"  # the name TLS checks, resolved by the proxy
    await round_trip(url, proxy=pproxy.url(scheme, "user:pass"), ssl_context=tls.client_context)


async def test_proxies_from_the_environment(
    nursery: trio.Nursery, pproxy: PProxy, tls: TLS, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await start_server(nursery)
    secure = await start_server(nursery, ssl_context=tls.server_context)
    monkeypatch.setenv("http_proxy", pproxy.url("http", "user:pass"))
    monkeypatch.setenv("HTTPS_PROXY", pproxy.url("socks5h"))
    await round_trip(url_of(server))
    await round_trip(f"wss://localhost:{secure.port}/", ssl_context=tls.client_context)


class Names(trio.abc.HostnameResolver):
    """Resolves ``ws.test`` to 127.0.0.1 in this process (and nowhere else),
    and records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def getaddrinfo(self, host: Any, port: Any, *args: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        self.asked.append(name)
        real = "127.0.0.1" if name == "ws.test" else host
        return await trio.to_thread.run_sync(socket.getaddrinfo, real, port, *args)

    async def getnameinfo(self, sockaddr: Any, flags: int) -> Any:  # pragma: no cover
        raise NotImplementedError


async def test_socks5_resolves_here_and_socks5h_at_the_proxy(
    nursery: trio.Nursery, pproxy: PProxy
) -> None:
    server = await start_server(nursery)
    names = Names()
    previous = trio.socket.set_custom_hostname_resolver(names)
    try:
        await round_trip(f"ws://ws.test:{server.port}/", proxy=pproxy.url("socks5"))
        assert names.asked == ["ws.test"]
        # The proxy is asked for ws.test, a name only this process knows.
        with pytest.raises(trio_ws.HandshakeError):
            await round_trip(f"ws://ws.test:{server.port}/", proxy=pproxy.url("socks5h"))
        assert names.asked == ["ws.test"]
    finally:
        trio.socket.set_custom_hostname_resolver(previous)


@pytest.mark.parametrize("credentials", ["user:wrong", "", "nobody:pass"])
async def test_http_proxy_refuses_credentials(
    nursery: trio.Nursery, pproxy: PProxy, credentials: str
) -> None:
    server = await start_server(nursery)
    proxy = f"http://{credentials}{'@' if credentials else ''}127.0.0.1:{pproxy.auth_port}"
    with pytest.raises(trio_ws.ProxyError) as caught:
        await round_trip(url_of(server), proxy=proxy)
    error = caught.value
    assert error.status_code == 407
    assert error.reason.startswith("Proxy Authentication Required")
    assert not error.retryable
    user = credentials.partition(":")[0]
    assert error.proxy == f"http://{user}{'@' if user else ''}127.0.0.1:{pproxy.auth_port}"
    message = str(error)
    assert message.startswith(f"proxy {error.proxy} refused CONNECT: HTTP 407 ")
    assert str(server.port) not in message  # the proxy is named, not the server
    assert "wrong" not in message
    assert ":pass" not in message
    if credentials:
        assert "credentials in the proxy URL were refused" in message
    else:
        assert 'it asks for Basic realm="simple"' in message


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
async def test_socks_proxy_refuses_credentials(
    nursery: trio.Nursery, pproxy: PProxy, scheme: str
) -> None:
    server = await start_server(nursery)
    # pproxy hangs up on bad SOCKS credentials, without a reply.
    with pytest.raises(trio_ws.ProxyError) as caught:
        await round_trip(url_of(server), proxy=pproxy.url(scheme, "user:wrong"))
    assert caught.value.proxy == f"{scheme}://user@127.0.0.1:{pproxy.auth_port}"
    assert caught.value.status_code is None
    assert "closed the connection during the SOCKS negotiation" in str(caught.value)
    assert str(server.port) not in str(caught.value)


async def test_server_unreachable_through_the_http_proxy(pproxy: PProxy) -> None:
    closed = _free_port()
    with pytest.raises(trio_ws.ProxyError) as caught:
        await round_trip(f"ws://127.0.0.1:{closed}/", proxy=pproxy.url("http"))
    # pproxy hangs up when it cannot connect; reconnect() would try again.
    assert caught.value.reason == "closed the connection without answering CONNECT"
    assert caught.value.retryable
    assert trio_ws.Reconnecting.default_retry(caught.value)


@pytest.mark.parametrize("scheme", ["http", "socks5"])
async def test_unreachable_proxy_is_connect_failed_naming_it(scheme: str) -> None:
    port = _free_port()
    with pytest.raises(trio_ws.ConnectFailed) as caught:
        await round_trip("ws://127.0.0.1:9/", proxy=f"{scheme}://u:secret@127.0.0.1:{port}")
    message = str(caught.value)
    assert message.startswith(f"cannot connect to the proxy {scheme}://u@127.0.0.1:{port}: ")
    assert "secret" not in message
    assert ":9" not in message


async def test_reconnect_and_pool_pass_the_proxy_on(nursery: trio.Nursery, pproxy: PProxy) -> None:
    server = await start_server(nursery)
    proxy = pproxy.url("http", "user:pass")
    async with trio_ws.reconnect(url_of(server), proxy=proxy, max_attempts=1) as connections:
        async for ws in connections:
            await ws.send("again")
            assert await ws.receive() == "again"
            break
    async with trio_ws.open_pool(proxy=proxy) as pool, pool.acquire(url_of(server)) as ws:
        await ws.send("pooled")
        assert await ws.receive() == "pooled"
    # Checked when called, as connect() checks them.
    with pytest.raises(trio_ws.InvalidURL):
        trio_ws.reconnect(url_of(server), proxy="ftp://127.0.0.1:21")
    with pytest.raises(ValueError, match="not both"):
        trio_ws.open_pool(proxy=proxy, unix_path="/tmp/x.sock")


async def test_reconnect_gives_up_at_once_on_a_refusal(pproxy: PProxy) -> None:
    proxy = pproxy.url("http", "user:wrong").replace(str(pproxy.open_port), str(pproxy.auth_port))
    async with trio_ws.reconnect("ws://127.0.0.1:9/", proxy=proxy, max_attempts=3) as connections:
        with pytest.raises(trio_ws.ProxyError):
            await connections.__anext__()


# -- proxies of our own: every refusal -----------------------------------------------


async def read_head(stream: trio.SocketStream) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        data = await stream.receive_some(4096)
        if not data:
            break
        head += data
    return head


Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def start_tcp(nursery: trio.Nursery, handler: Handler) -> int:
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
    )
    port: int = listeners[0].socket.getsockname()[1]
    return port


def answering(answer: bytes, heads: list[bytes] | None = None) -> Handler:
    """An HTTP proxy that reads the request's head and sends ``answer``."""

    async def handler(stream: trio.SocketStream) -> None:
        head = await read_head(stream)
        if heads is not None:
            heads.append(head)
        await stream.send_all(answer)

    return handler


@pytest.mark.parametrize(
    ("answer", "status", "reason", "retryable"),
    [
        (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", 403, "Forbidden", False),
        (b"HTTP/1.1 502 Bad Gateway\r\n\r\n", 502, "Bad Gateway", True),
        (b"HTTP/1.0 503 Service Unavailable\r\n\r\n", 503, "Service Unavailable", True),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 405 Method Not Allowed\r\n\r\n",
            405,
            "Method Not Allowed",
            False,
        ),
        (
            b"HTTP/1.1 407 Proxy Authentication Required\r\n"
            b"Proxy-Authenticate: Basic realm=corp\r\n\r\n",
            407,
            "Proxy Authentication Required (the credentials in the proxy URL were refused)",
            False,
        ),
        (
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
            None,
            "answered CONNECT with something that is not HTTP",
            False,
        ),
        (
            b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"x" * 4 * MAX_CONNECT_HEAD + b"\r\n\r\n",
            None,
            f"answered CONNECT with a head over {MAX_CONNECT_HEAD} bytes",
            False,
        ),
        (
            b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 101 early",
            None,
            "sent 18 bytes after its 200 answer to CONNECT, before we did",
            False,
        ),
        (b"", None, "closed the connection without answering CONNECT", True),
    ],
)
async def test_http_proxy_refusals(
    nursery: trio.Nursery,
    answer: bytes,
    status: int | None,
    reason: str,
    retryable: bool,
) -> None:
    heads: list[bytes] = []
    port = await start_tcp(nursery, answering(answer, heads))
    proxy = f"http://al%40ce:p%3As@127.0.0.1:{port}"
    with pytest.raises(trio_ws.ProxyError) as caught:
        await round_trip("ws://ws.example:8080/chat", proxy=proxy)
    error = caught.value
    assert (error.proxy, error.status_code, error.retryable) == (
        f"http://al%40ce@127.0.0.1:{port}",
        status,
        retryable,
    )
    assert error.reason.startswith(reason)
    assert "ws.example" not in str(error)
    # The request: the server's authority, credentials percent-decoded.
    lines = heads[0].decode().split("\r\n")
    assert lines[0] == "CONNECT ws.example:8080 HTTP/1.1"
    assert "Host: ws.example:8080" in lines
    assert "Proxy-Authorization: Basic YWxAY2U6cDpz" in lines  # al@ce:p:s


async def test_connect_target_for_ipv6_and_default_ports(nursery: trio.Nursery) -> None:
    heads: list[bytes] = []
    port = await start_tcp(nursery, answering(b"HTTP/1.1 403 No\r\n\r\n", heads))
    for url in ("wss://[::1]/", "ws://example.com/"):
        with pytest.raises(trio_ws.ProxyError):
            await round_trip(url, proxy=f"127.0.0.1:{port}")  # no scheme: http://
    assert heads[0].startswith(b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n")
    assert heads[1].startswith(b"CONNECT example.com:80 HTTP/1.1\r\n")
    assert b"Proxy-Authorization" not in heads[1]


async def forward(stream: trio.abc.Stream) -> None:
    """A working CONNECT proxy: the tunnel, then bytes both ways."""
    head = (await read_head(stream)).decode()  # type: ignore[arg-type]
    host, _, port = head.split(" ")[1].rpartition(":")
    target = await trio.open_tcp_stream(host.strip("[]"), int(port))
    await stream.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")

    async def pipe(source: trio.abc.Stream, sink: trio.abc.Stream) -> None:
        try:
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(sink)

    async with target, trio.open_nursery() as pipes:
        pipes.start_soon(pipe, stream, target)
        pipes.start_soon(pipe, target, stream)


async def test_https_proxy_tls_to_the_proxy_and_to_the_server(
    nursery: trio.Nursery, tls: TLS
) -> None:
    server = await start_server(nursery, ssl_context=tls.server_context)
    listeners = await nursery.start(
        functools.partial(
            trio.serve_ssl_over_tcp, forward, 0, tls.server_context, host="127.0.0.1"
        )
    )
    port = listeners[0].transport_listener.socket.getsockname()[1]
    # ssl_context checks both certificates (both from the test CA).
    proxy = f"https://localhost:{port}"
    await round_trip(
        f"wss://localhost:{server.port}/", proxy=proxy, ssl_context=tls.client_context
    )
    # Without the test CA the proxy's certificate is refused, and named.
    with pytest.raises(trio_ws.TLSError, match=f"TLS handshake with the proxy {proxy} failed"):
        await round_trip(f"wss://localhost:{server.port}/", proxy=proxy)


async def receive_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            raise trio.BrokenResourceError
        data += chunk
    return data


def socks5_replying(code: int) -> Handler:
    """A SOCKS5 proxy that takes any request and answers with reply ``code``."""

    async def handler(stream: trio.SocketStream) -> None:
        _, count = await receive_exactly(stream, 2)
        await receive_exactly(stream, count)
        await stream.send_all(b"\x05\x00")  # no authentication
        _, _, _, kind = await receive_exactly(stream, 4)
        size = {1: 4, 4: 16}.get(kind) or (await receive_exactly(stream, 1))[0]
        await receive_exactly(stream, size + 2)
        await stream.send_all(bytes([5, code, 0, 1]) + bytes(6))

    return handler


@pytest.mark.parametrize(
    ("code", "reason", "retryable"),
    [
        (5, "Connection refused by destination host", True),
        (4, "Host unreachable", True),
        (2, "Connection not allowed by ruleset", False),
    ],
)
async def test_socks_refusals(
    nursery: trio.Nursery, code: int, reason: str, retryable: bool
) -> None:
    port = await start_tcp(nursery, socks5_replying(code))
    with pytest.raises(trio_ws.ProxyError) as caught:
        await round_trip("ws://ws.example/", proxy=f"socks5h://127.0.0.1:{port}")
    error = caught.value
    assert (error.proxy, error.status_code, error.retryable) == (
        f"socks5h://127.0.0.1:{port}",
        None,
        retryable,
    )
    assert reason in error.reason
    assert str(error) == f"proxy socks5h://127.0.0.1:{port}: {error.reason}"


# -- cancellation and open_timeout ---------------------------------------------------


def silent(ended: list[trio.Event]) -> Handler:
    """A proxy that reads and never answers, until the client hangs up."""

    async def handler(stream: trio.SocketStream) -> None:
        done = trio.Event()
        ended.append(done)
        try:
            while await stream.receive_some(4096):
                pass
        finally:
            done.set()

    return handler


@pytest.mark.parametrize("scheme", ["http", "socks5", "socks5h"])
async def test_cancelled_during_the_proxy_step_leaves_no_socket(
    nursery: trio.Nursery, scheme: str
) -> None:
    ended: list[trio.Event] = []
    port = await start_tcp(nursery, silent(ended))
    proxy = f"{scheme}://u:p@127.0.0.1:{port}"
    await trio.testing.wait_all_tasks_blocked()
    before = open_fds()
    with trio.move_on_after(0.3) as scope:
        await round_trip("ws://ws.example/", proxy=proxy)
    assert scope.cancelled_caught
    with trio.fail_after(5):
        await ended[0].wait()  # the proxy saw the connection closed
    assert open_fds() == before
    # open_timeout covers the proxy step too.
    with pytest.raises(trio_ws.HandshakeTimeout):
        await round_trip("ws://ws.example/", proxy=proxy, open_timeout=0.2)
    with trio.fail_after(5):
        await ended[1].wait()
    assert open_fds() == before


# -- the environment -------------------------------------------------------------------


async def start_refusers(nursery: trio.Nursery, count: int) -> list[str]:
    """Proxies that answer 403: which one a connection used shows in the error."""
    refuse = answering(b"HTTP/1.1 403 No\r\n\r\n")
    return [f"http://127.0.0.1:{await start_tcp(nursery, refuse)}" for _ in range(count)]


async def used_proxy(url: str, **kwargs: Any) -> str | None:
    """The proxy a connection to ``url`` went to (a refuser), None for none."""
    try:
        await round_trip(url, **kwargs)
    except trio_ws.ProxyError as exc:
        return exc.proxy
    return None


async def test_environment_variables(
    nursery: trio.Nursery, tls: TLS, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = url_of(await start_server(nursery))
    secure = (
        f"wss://localhost:{(await start_server(nursery, ssl_context=tls.server_context)).port}/"
    )
    a, b, c, d = await start_refusers(nursery, 4)
    tls_kwargs = {"ssl_context": tls.client_context}

    monkeypatch.setenv("HTTP_PROXY", a)
    monkeypatch.setenv("HTTPS_PROXY", b)
    assert await used_proxy(plain) == a  # ws:// takes HTTP_PROXY
    assert await used_proxy(secure, **tls_kwargs) == b  # wss:// takes HTTPS_PROXY
    assert await used_proxy(plain, proxy=None) is None  # None ignores the environment
    assert await used_proxy(plain, proxy=False) is None
    assert await used_proxy(plain, proxy=c) == c  # an explicit proxy wins

    monkeypatch.setenv("http_proxy", c)  # lower case wins
    assert await used_proxy(plain) == c
    monkeypatch.setenv("http_proxy", "")  # set but empty: no proxy from this pair...
    monkeypatch.setenv("ALL_PROXY", d)  # ...so ALL_PROXY applies
    assert await used_proxy(plain) == d
    monkeypatch.delenv("http_proxy")
    monkeypatch.setenv("REQUEST_METHOD", "GET")  # CGI: HTTP_PROXY may be a request's header
    assert await used_proxy(plain) == d
    monkeypatch.delenv("REQUEST_METHOD")

    monkeypatch.setenv("NO_PROXY", "example.com, 127.0.0.0/8")  # CIDR: 127.0.0.1 directly
    assert await used_proxy(plain) is None
    assert await used_proxy(secure, **tls_kwargs) == b  # localhost is a name, not listed
    monkeypatch.setenv("no_proxy", ".localhost")  # lower case wins here too
    assert await used_proxy(secure, **tls_kwargs) is None
    assert await used_proxy(plain) == a
    assert await used_proxy(plain, proxy=b) == b  # NO_PROXY is for the environment's only
    monkeypatch.setenv("no_proxy", "*")
    assert await used_proxy(plain) is None
    # A value that is not a proxy URL, named by its variable.
    monkeypatch.setenv("no_proxy", "")
    monkeypatch.setenv("HTTP_PROXY", "ftp://user:secret@proxy.example")
    with pytest.raises(trio_ws.InvalidURL, match="the HTTP_PROXY environment variable") as caught:
        await used_proxy(plain)
    assert "secret" not in str(caught.value)
    # A Unix socket never goes through a proxy.
    assert (
        trio_ws.connect(plain, unix_path="/nonexistent")._route.proxy_for(parse_url(plain)) is None
    )


def test_connect_checks_the_proxy_when_called() -> None:
    with pytest.raises(trio_ws.InvalidURL, match="proxy: 'gopher://h'"):
        trio_ws.connect("ws://h/", proxy="gopher://h")
    with pytest.raises(ValueError, match="a proxy or a unix_path, not both"):
        trio_ws.connect("ws://h/", proxy="http://h", unix_path="/tmp/s")
    with pytest.raises(TypeError, match="proxy must be a URL, True, False or None"):
        trio_ws.connect("ws://h/", proxy=3128)  # type: ignore[arg-type]


async def test_start_connection_checks_the_proxy(nursery: trio.Nursery) -> None:
    with pytest.raises(trio_ws.InvalidURL):
        await trio_ws.start_connection(nursery, "ws://h/", proxy="socks://h")


# -- the socks extra -------------------------------------------------------------------


async def test_socks_without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated in this process: a None in sys.modules makes ``import
    python_socks`` (and its submodules) raise ImportError."""
    for name in list(sys.modules):
        if name == "python_socks" or name.startswith("python_socks."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "python_socks", None)
    with pytest.raises(ImportError) as caught:
        await round_trip("ws://h.example/", proxy="socks5://u:secret@127.0.0.1:1080")
    assert str(caught.value) == (
        "the SOCKS proxy socks5://u@127.0.0.1:1080 needs python-socks: "
        "pip install 'trio_ws[socks]'"
    )


def test_importing_trio_ws_does_not_import_python_socks() -> None:
    code = "import sys, trio_ws; print('python_socks' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert done.stdout == "False\n"
