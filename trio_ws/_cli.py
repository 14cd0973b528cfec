"""``python -m trio_ws``: a chat demo, an echo server, an interactive client, and a demo."""

from __future__ import annotations

import argparse
import functools
import importlib.util
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import trio

from ._cluster.backplane import BackplaneError
from ._cluster.workers import WorkerCrashLoop, Workers, run_workers
from ._conn.connection import WebSocket
from ._endpoints.client import connect
from ._endpoints.server import Server, serve
from ._errors import ConnectionClosed, HandshakeError, consists_of
from ._wire.close import CloseCode

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["main"]


async def echo(ws: WebSocket) -> None:
    """Send every message back to where it came from."""
    async for message in ws:
        await ws.send(message)


def _show(message: str | bytes) -> str:
    if isinstance(message, str):
        return message
    return f"<{len(message)} bytes: {message[:32].hex()}{'...' if len(message) > 32 else ''}>"


# -- serve -------------------------------------------------------------------


async def run_server(
    host: str,
    port: int,
    out: TextIO,
    *,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the echo server until cancelled (Ctrl-C)."""
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(functools.partial(serve, echo, host, port))
        for bound in sorted(set(server.ports)):
            shown = f"[{host}]" if ":" in host else host
            print(f"echo server listening on ws://{shown}:{bound}/ (Ctrl-C to stop)", file=out)
        out.flush()
        task_status.started(server)


# -- connect -----------------------------------------------------------------


async def run_client(url: str, read_line: Callable[[], str], out: TextIO) -> int:
    """Send each line read with ``read_line`` and print what arrives, until end
    of input (close with 1000) or until the server closes. Returns an exit status."""
    try:
        async with connect(url) as ws:
            print(f"connected to {url}; type messages, Ctrl-D to close", file=out)
            out.flush()
            async with trio.open_nursery() as nursery:

                async def printer() -> None:
                    try:
                        async for message in ws:
                            print(f"< {_show(message)}", file=out)
                            out.flush()
                    except ConnectionClosed:
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(printer)
                while True:
                    line = await trio.to_thread.run_sync(read_line, abandon_on_cancel=True)
                    if not line:
                        break
                    await ws.send(line.rstrip("\n"))
                await ws.aclose(CloseCode.NORMAL_CLOSURE)
    except HandshakeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ConnectionClosed:
        pass
    print(f"closed: {ws.close_info}", file=out)
    return 0


# -- demo --------------------------------------------------------------------


async def run_demo(out: TextIO) -> None:
    """Start an echo server, talk to it, and show the main features."""

    def say(text: str) -> None:
        print(text, file=out)
        out.flush()

    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(functools.partial(serve, echo, "127.0.0.1", 0))
        url = f"ws://127.0.0.1:{server.port}/demo"
        say(f"1. echo server started: {url}")
        async with connect(url) as ws:
            say(f"2. connected (connection #{ws.id})")
            await ws.send("hello, trio_ws")
            say(f"3. text echo: {await ws.receive()!r}")
            await ws.send(bytes(range(8)))
            say(f"4. binary echo: {await ws.receive()!r}")
            await ws.send_json({"kind": "greeting", "n": 1})
            say(f"5. JSON echo: {await ws.receive_json()!r}")
            rtt = await ws.ping()
            say(f"6. ping round trip: {rtt * 1e6:.0f} us")

            # A timeout-safe receive loop: a slow producer, a receive that
            # times out every 5 ms, and still every message, in order.
            async def slow_producer() -> None:
                for i in range(5):
                    await ws.send(f"message {i}")
                    await trio.sleep(0.02)

            received: list[str | bytes] = []
            timeouts = 0
            nursery.start_soon(slow_producer)
            while len(received) < 5:
                with trio.move_on_after(0.005) as scope:
                    received.append(await ws.receive())
                timeouts += scope.cancelled_caught
            say(f"7. receive loop with {timeouts} timeouts got every message: {received}")
        say(f"8. closed: {ws.close_info}")
        await server.aclose()
        say("9. server stopped: every connection was closed with 1001 first")


# -- chat and chat-client -----------------------------------------------------

#: Where the chat demo's source lives: it is an example, readable as a
#: tutorial (docs/chat.md), not a module of the installed package.
CHAT_DIRECTORY = Path("examples") / "chat"


def chat_module(name: str) -> Any:
    """Load ``examples/chat/<name>.py`` from the source tree this package
    comes from (or the current directory). Raises SystemExit with an
    explanation when there is no such tree, as after installing from a wheel."""
    for base in (Path(__file__).resolve().parent.parent, Path.cwd()):
        path = base / CHAT_DIRECTORY / f"{name}.py"
        if path.is_file():
            break
    else:
        raise SystemExit(
            f"the chat demo runs from a source checkout of trio_ws: {CHAT_DIRECTORY / name}.py "
            "was not found next to the package or in the current directory"
        )
    module_name = f"trio_ws_chat_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_chat(args: argparse.Namespace) -> int:
    """``python -m trio_ws chat``: one process, or ``--workers`` processes
    sharing their rooms through ``--redis``. Returns the exit status."""
    server = chat_module("server")  # fails early outside a source tree
    if args.workers == 1:
        options = ["--host", args.host, "--port", str(args.port)]
        if args.redis is not None:
            options += ["--redis", args.redis]
        try:
            return int(server.run(options, client_command="python -m trio_ws chat-client"))
        except BaseException as exc:
            # Redis unreachable, or the redis extra missing: one line, no traceback.
            if args.redis is None or not consists_of(exc, (BackplaneError, ImportError)):
                raise
            while isinstance(exc, BaseExceptionGroup):
                exc = exc.exceptions[0]
            print(f"python -m trio_ws chat: error: {exc}", file=sys.stderr)
            return 1
    if args.redis is None:
        print(
            f"python -m trio_ws chat: error: --workers {args.workers} needs --redis URL "
            "(without Redis, each worker would have rooms of its own)",
            file=sys.stderr,
        )
        return 2
    # Each worker is `python -m trio_ws chat --redis URL`, which serves the
    # supervisor's port when it finds itself started as a worker.
    command = [sys.executable, "-m", "trio_ws", *(["-v"] if args.verbose else [])]
    command += ["chat", "--host", args.host, "--port", str(args.port), "--redis", args.redis]

    def banner(workers: Workers) -> None:
        shown = f"[{args.host}]" if ":" in args.host else args.host
        url = f"{shown}:{workers.port}/"
        print(f"chat server on http://{url} with {workers.count} workers (Ctrl-C to stop)")
        print("open that page in a browser, or join from a terminal:")
        print(f"  python -m trio_ws chat-client ws://{url} --name YOUR_NAME", flush=True)

    try:
        run_workers(command, workers=args.workers, host=args.host, port=args.port, on_ready=banner)
    except WorkerCrashLoop as exc:
        print(f"python -m trio_ws chat: error: {exc}", file=sys.stderr)
        return 1
    print("stopped", flush=True)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


# -- entry point -----------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trio_ws", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)
    chat_cmd = commands.add_parser(
        "chat", help="run the chat demo: rooms, a web page at /, terminal clients"
    )
    chat_cmd.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    chat_cmd.add_argument("--port", type=int, default=8765, help="default: 8765; 0: a free port")
    chat_cmd.add_argument(
        "--redis", metavar="URL", help="share rooms through Redis (redis://host:port/db)"
    )
    chat_cmd.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="serve the port with N processes (needs --redis); default: 1",
    )
    client_cmd = commands.add_parser("chat-client", help="join a chat server from the terminal")
    client_cmd.add_argument("url", help="the chat server's ws:// URL")
    client_cmd.add_argument("--name", required=True, help="your name in the chat")
    client_cmd.add_argument("--room", default="lobby", help="the room to join first (lobby)")
    serve_cmd = commands.add_parser("serve", help="run an echo server")
    serve_cmd.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8765, help="default: 8765")
    connect_cmd = commands.add_parser(
        "connect", help="interactive client: stdin lines are sent, messages printed"
    )
    connect_cmd.add_argument("url", help="ws:// or wss:// URL")
    commands.add_parser("demo", help="start an echo server, talk to it, stop it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        if args.command == "chat":
            return run_chat(args)
        if args.command == "chat-client":
            client = chat_module("client")
            return int(client.run([args.url, "--name", args.name, "--room", args.room]))
        if args.command == "serve":
            trio.run(run_server, args.host, args.port, sys.stdout)
        elif args.command == "connect":
            return trio.run(run_client, args.url, sys.stdin.readline, sys.stdout)
        else:
            trio.run(run_demo, sys.stdout)
    except BaseException as exc:
        # Ctrl-C may arrive wrapped in a group by a nursery.
        if consists_of(exc, KeyboardInterrupt):
            return 130
        raise
    return 0
