"""The connection options as typed keyword arguments: ConnectionOptions kept
equal to Options, every entry point typed with it, mypy rejecting a misspelt
or mistyped option, and the run-time error naming the closest valid one."""

from __future__ import annotations

import inspect
import re
import sys
import textwrap
import typing
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import trio
from conftest import echo, open_fds, start_server, url_of

import trio_ws
from trio_ws import ConnectionOptions, Options

ROOT = Path(__file__).resolve().parent.parent

OPTION_NAMES = [field.name for field in attrs.fields(Options)]

#: Every public function that takes the connection options as ``**options``.
ENTRY_POINTS: dict[str, Callable[..., object]] = {
    "connect": trio_ws.connect,
    "start_connection": trio_ws.start_connection,
    "serve": trio_ws.serve,
    "serve_listeners": trio_ws.serve_listeners,
    "open_pool": trio_ws.open_pool,
    "reconnect": trio_ws.reconnect,
    "Worker.serve": trio_ws.Worker.serve,
}


def _signature_of(function: Callable[..., object]) -> inspect.Signature:
    return inspect.signature(function.__init__ if inspect.isclass(function) else function)


# -- one source of truth ---------------------------------------------------------


def test_connection_options_are_the_attributes_of_options() -> None:
    """Same names, same order, same types: the TypedDict cannot drift from
    the attrs class (and mypy checks ``Options(**options)`` in options_from)."""
    assert list(ConnectionOptions.__annotations__) == OPTION_NAMES
    assert ConnectionOptions.__required_keys__ == frozenset()
    assert ConnectionOptions.__optional_keys__ == frozenset(OPTION_NAMES)
    typed = typing.get_type_hints(ConnectionOptions)
    fields = typing.get_type_hints(Options)
    assert typed == {name: fields[name] for name in OPTION_NAMES}


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_every_entry_point_takes_the_options_typed(name: str) -> None:
    function = ENTRY_POINTS[name]
    parameters = _signature_of(function).parameters
    var_keyword = [p for p in parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    assert [p.name for p in var_keyword] == ["options"]
    assert var_keyword[0].annotation == "Unpack[ConnectionOptions]"
    # No keyword argument of its own hides an option.
    assert not set(parameters) & set(OPTION_NAMES)
    if sys.version_info >= (3, 11):
        # Documentation tools can resolve it (on 3.10, Unpack exists for
        # type checkers only).
        target = function.__init__ if inspect.isclass(function) else function
        resolved = eval(var_keyword[0].annotation, target.__globals__)
        assert resolved == typing.Unpack[ConnectionOptions]


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_every_entry_point_names_the_options_in_its_docstring(name: str) -> None:
    doc = inspect.getdoc(ENTRY_POINTS[name]) or ""
    assert ":class:`Options`" in doc
    missing = [option for option in OPTION_NAMES if f"``{option}``" not in doc]
    assert not missing, f"{name}'s docstring does not name {missing}"


def _keywords(function: Callable[..., object], leave_out: set[str]) -> list[tuple[str, object]]:
    return [
        (p.name, p.default)
        for p in inspect.signature(function).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in leave_out
    ]


def test_worker_serve_takes_the_keyword_arguments_of_serve() -> None:
    assert _keywords(trio_ws.Worker.serve, set()) == _keywords(
        trio_ws.serve, {"host", "port", "reuse_port"}
    )


def test_run_workers_takes_the_keyword_arguments_of_open_workers() -> None:
    assert _keywords(trio_ws.run_workers, {"on_ready"}) == _keywords(trio_ws.open_workers, set())


# -- the run-time error ------------------------------------------------------------


def _did_you_mean(where: str, wrong: str, right: str) -> str:
    return re.escape(f"{where}(): unknown option {wrong!r}; did you mean {right!r}?")


def test_connect_names_the_closest_option() -> None:
    with pytest.raises(
        TypeError, match=_did_you_mean("connect", "ping_intervall", "ping_interval")
    ):
        trio_ws.connect("ws://127.0.0.1/", ping_intervall=5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=_did_you_mean("connect", "subprotocol", "subprotocols")):
        trio_ws.connect("ws://127.0.0.1/", subprotocol="chat")  # type: ignore[call-arg]
    # Nothing close: the message lists the options.
    with pytest.raises(
        TypeError, match=r"connect\(\): unknown option 'zzz'; the options are"
    ) as e:
        trio_ws.connect("ws://127.0.0.1/", zzz=1)  # type: ignore[call-arg]
    assert all(option in str(e.value) for option in OPTION_NAMES)
    # A bad value is still a ValueError naming the option.
    with pytest.raises(ValueError, match="max_message_size must be a positive integer"):
        trio_ws.connect("ws://127.0.0.1/", max_message_size="big")  # type: ignore[arg-type]


async def test_the_misspelt_option_is_named_before_any_connection(
    nursery: trio.Nursery,
) -> None:
    """Over loopback, with a server that would accept: connect() and
    start_connection() refuse the option before connecting."""
    connected: list[trio_ws.WebSocket] = []

    async def handler(ws: trio_ws.WebSocket) -> None:
        connected.append(ws)  # pragma: no cover

    server = await start_server(nursery, handler)
    with pytest.raises(TypeError, match=_did_you_mean("connect", "max_qeue", "max_queue")):
        async with trio_ws.connect(url_of(server), max_qeue=4):  # type: ignore[call-arg]
            pass  # pragma: no cover
    with pytest.raises(
        TypeError, match=_did_you_mean("start_connection", "ping_intervall", "ping_interval")
    ):
        await trio_ws.start_connection(nursery, url_of(server), ping_intervall=5)  # type: ignore[call-arg]
    await trio.sleep(0.05)
    assert connected == []
    assert server.stats().accepted == 0


async def test_serve_names_the_closest_option_before_binding() -> None:
    fds_before = open_fds()
    with pytest.raises(TypeError, match=_did_you_mean("serve", "ping_intervall", "ping_interval")):
        await trio_ws.serve(echo, "127.0.0.1", 0, ping_intervall=5)  # type: ignore[call-arg]
    # A misspelt keyword argument of serve's own is named too.
    with pytest.raises(
        TypeError, match=_did_you_mean("serve", "max_conections", "max_connections")
    ):
        await trio_ws.serve(echo, "127.0.0.1", 0, max_conections=5)  # type: ignore[call-arg]
    assert open_fds() == fds_before


async def test_serve_listeners_names_the_closest_option_and_closes_the_listeners() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    with pytest.raises(
        TypeError, match=_did_you_mean("serve_listeners", "close_timout", "close_timeout")
    ):
        await trio_ws.serve_listeners(echo, listeners, close_timout=1)  # type: ignore[call-arg]
    assert all(listener.socket.fileno() == -1 for listener in listeners)


def test_pool_and_reconnect_name_the_closest_option() -> None:
    with pytest.raises(TypeError, match=_did_you_mean("open_pool", "frame_sise", "frame_size")):
        trio_ws.open_pool(frame_sise=1024)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=_did_you_mean("open_pool", "max_idle", "max_idle_time")):
        trio_ws.open_pool(max_idle=5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=_did_you_mean("reconnect", "compresion", "compression")):
        trio_ws.reconnect("ws://127.0.0.1/", compresion=None)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=_did_you_mean("reconnect", "max_attempt", "max_attempts")):
        trio_ws.reconnect("ws://127.0.0.1/", max_attempt=3)  # type: ignore[call-arg]


async def test_worker_serve_names_the_closest_option_before_anything() -> None:
    """Raised alone (not in an ExceptionGroup), before the lifeline (here an
    invalid descriptor) is touched."""
    worker = trio_ws.Worker(index=0, host="127.0.0.1", port=0, fds=(), lifeline=-1)
    with pytest.raises(
        TypeError, match=_did_you_mean("Worker.serve", "open_timout", "open_timeout")
    ):
        await worker.serve(echo, open_timout=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="max_connections must be a positive integer"):
        await worker.serve(echo, max_connections=0)


# -- mypy --strict on code that uses the options ----------------------------------

GOOD = """\
import functools
import ssl
import sys

import trio
import trio_ws

SHARED: trio_ws.ConnectionOptions = {"ping_interval": 5.0, "max_queue": 64}


async def handler(ws: trio_ws.WebSocket) -> None:
    await ws.send("hello")


async def main(listeners: list[trio.SocketListener]) -> None:
    async with trio.open_nursery() as nursery:
        server: trio_ws.Server = await nursery.start(
            functools.partial(
                trio_ws.serve, handler, "127.0.0.1", 0, ping_interval=None, max_queue=8
            )
        )
        await nursery.start(
            functools.partial(trio_ws.serve_listeners, handler, listeners, open_timeout=1)
        )
        url = f"ws://127.0.0.1:{server.port}/"
        async with trio_ws.connect(
            url,
            subprotocols=["chat"],
            ssl_context=ssl.create_default_context(),
            max_message_size=None,
            compression=trio_ws.Deflate(level=1),
            close_timeout=2,
            frame_size=4096,
        ) as ws:
            await ws.send("x")
        async with trio_ws.connect(url, **SHARED) as ws:
            await ws.send("x")
        other = await trio_ws.start_connection(nursery, url, **SHARED)
        await other.aclose()
        async with trio_ws.open_pool(max_connections=2, max_queue_bytes=None) as pool:
            async with pool.acquire(url) as ws:
                await ws.send("x")
        async with trio_ws.reconnect(url, max_attempts=3, compression=None) as connections:
            async for ws in connections:
                break
        worker = trio_ws.current_worker()
        if worker is not None:
            await worker.serve(handler, max_connections=10, ping_interval=10)


def supervise() -> None:
    trio_ws.run_workers(
        [sys.executable, "app.py"], workers=2, host=None, port=8000, share="inherit"
    )
"""


def _misspelt(option: str, function: str, meant: str) -> str:
    return f'Unexpected keyword argument "{option}" for {function}; did you mean "{meant}"?'


def _mistyped(option: str, function: str, given: str, expected: str) -> str:
    return (
        f'Argument "{option}" to {function} has incompatible type "{given}"; expected "{expected}"'
    )


#: Each line a call with a misspelt or mistyped option, and the error mypy
#: must report for it.
BAD = {
    'trio_ws.connect("ws://h/", ping_intervall=5)': (
        _misspelt("ping_intervall", '"connect"', "ping_interval")
    ),
    'trio_ws.connect("ws://h/", max_message_size="big")': (
        _mistyped("max_message_size", '"connect"', "str", "int | None")
    ),
    "await trio_ws.serve(handler, None, 8000, ping_intervall=5)": (
        _misspelt("ping_intervall", '"serve"', "ping_interval")
    ),
    'await trio_ws.serve(handler, None, 8000, max_message_size="big")': (
        _mistyped("max_message_size", '"serve"', "str", "int | None")
    ),
    "await trio_ws.start_connection(nursery, url, ping_intervall=5)": (
        _misspelt("ping_intervall", '"start_connection"', "ping_interval")
    ),
    "await trio_ws.start_connection(nursery, url, compression=True)": (
        _mistyped("compression", '"start_connection"', "bool", "Deflate | None")
    ),
    "trio_ws.open_pool(max_conections=3)": (
        _misspelt("max_conections", '"open_pool"', "max_connections")
    ),
    'trio_ws.open_pool(open_timeout="10s")': (
        _mistyped("open_timeout", '"open_pool"', "str", "float | None")
    ),
    "trio_ws.reconnect(url, ping_intervall=5)": (
        _misspelt("ping_intervall", '"reconnect"', "ping_interval")
    ),
    "trio_ws.reconnect(url, max_queue=None)": (
        _mistyped("max_queue", '"reconnect"', "None", "int")
    ),
    "await worker.serve(handler, ping_intervall=5)": (
        _misspelt("ping_intervall", '"serve" of "Worker"', "ping_interval")
    ),
    'await worker.serve(handler, frame_size="1k")': (
        _mistyped("frame_size", '"serve" of "Worker"', "str", "int | None")
    ),
    'bad: trio_ws.ConnectionOptions = {"ping_intervall": 5}': (
        'Extra key "ping_intervall" for TypedDict "ConnectionOptions"'
    ),
    'trio_ws.run_workers(["app"], workers=2, host=None, port=0, max_restart=5)': (
        _misspelt("max_restart", '"run_workers"', "max_restarts")
    ),
}

BAD_PRELUDE = """\
import trio
import trio_ws


async def handler(ws: trio_ws.WebSocket) -> None:
    pass


async def main(nursery: trio.Nursery, url: str, worker: trio_ws.Worker) -> None:
"""

_ERROR = re.compile(r"^(?P<file>[\w.]+):(?P<line>\d+): error: (?P<message>.*?)  \[[\w-]+\]$")


@pytest.mark.slow
@pytest.mark.parametrize(
    "python_version",
    [
        "3.10",  # Unpack from typing_extensions, for type checkers only
        "3.12",  # Unpack from typing
    ],
)
def test_mypy_rejects_misspelt_and_mistyped_options(
    python_version: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """User code type-checked with mypy --strict: the correct snippet passes,
    each bad line gets its error (and no other). trio_ws is followed as an
    installed package would be, its own errors silenced."""
    api = pytest.importorskip("mypy.api")
    (tmp_path / "good.py").write_text(GOOD)
    body = "".join(f"    {line}\n" for line in BAD)
    (tmp_path / "bad.py").write_text(BAD_PRELUDE + body)
    first_bad_line = BAD_PRELUDE.count("\n") + 1
    (tmp_path / "mypy.ini").write_text("[mypy]\n")
    monkeypatch.setenv("MYPYPATH", str(ROOT))
    monkeypatch.chdir(tmp_path)
    stdout, stderr, _ = api.run(
        [
            "--config-file=mypy.ini",
            "--strict",
            f"--python-version={python_version}",
            "--follow-imports=silent",
            f"--cache-dir={tmp_path / 'cache'}",
            "--no-pretty",
            "--no-color-output",
            "--no-error-summary",
            "--hide-error-context",
            "good.py",
            "bad.py",
        ]
    )
    assert not stderr
    errors: dict[str, list[tuple[int, str]]] = {"good.py": [], "bad.py": []}
    for line in stdout.splitlines():
        found = _ERROR.match(line)
        if found is not None:
            errors[found["file"]].append((int(found["line"]), found["message"]))
        else:
            assert ": note: " in line, line
    assert errors["good.py"] == []
    expected = [
        (number, message) for number, message in enumerate(BAD.values(), start=first_bad_line)
    ]
    assert errors["bad.py"] == expected, textwrap.indent(stdout, "  ")
