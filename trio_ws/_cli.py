"""The command line, ``python -m trio_ws`` or ``trio-ws``: its arguments,
and how its commands end -- Ctrl-C, and a one-line error with an exit status
of its own for every failure a user can expect. The programs it runs are in
:mod:`trio_ws.demo`."""

from __future__ import annotations

import argparse
import enum
import errno
import functools
import importlib
import logging
import signal
import socket
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import trio

from ._cluster.backplane import BackplaneError
from ._cluster.workers import WorkerCrashLoop, Workers, run_workers
from ._errors import (
    ConnectionRejected,
    HandshakeError,
    InvalidHandshake,
    InvalidURL,
)
from .demo.command_line import port_number, trio_ws_command
from .demo.echo import run_client, run_demo, run_server, run_unix_server

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["ExitStatus", "main"]


@enum.unique
class ExitStatus(enum.IntEnum):
    """The exit status of ``python -m trio_ws``, one for each kind of failure."""

    OK = 0
    FAILED = 1
    USAGE = 2
    INVALID_URL = 3
    CANNOT_CONNECT = 4
    REJECTED = 5
    ADDRESS_IN_USE = 6
    PERMISSION_DENIED = 7
    CANNOT_LISTEN = 8


#: What each exit status means, as ``--help`` and docs/cli.md say it.
EXIT_STATUS_MEANING = {
    ExitStatus.OK: "success, or stopped with Ctrl-C",
    ExitStatus.FAILED: "failed while running (Redis unreachable, workers crashing)",
    ExitStatus.USAGE: "bad arguments",
    ExitStatus.INVALID_URL: "not a ws:// or wss:// URL",
    ExitStatus.CANNOT_CONNECT: "cannot connect (refused, unreachable, unknown host, timeout, TLS)",
    ExitStatus.REJECTED: "the server refused the WebSocket handshake",
    ExitStatus.ADDRESS_IN_USE: "cannot listen: the address is already in use",
    ExitStatus.PERMISSION_DENIED: "cannot listen: permission denied (a port below 1024)",
    ExitStatus.CANNOT_LISTEN: "cannot listen on that address (not this machine's, unknown)",
}

#: The commands that listen: their OSErrors are about --host and --port.
LISTENING = ("chat", "serve")


class UsageError(Exception):
    """Bad arguments: one line, ``PROG COMMAND: error: WHAT``, exit status 2."""


def prog() -> str:
    """How the user ran us: ``trio-ws``, or ``python -m trio_ws``."""
    return "trio-ws" if Path(sys.argv[0]).stem == "trio-ws" else "python -m trio_ws"


# -- Ctrl-C -------------------------------------------------------------------


async def until_interrupted(command: Callable[[], Awaitable[object]]) -> None:
    """Run ``command()`` until it returns; on Ctrl-C (SIGINT) or SIGTERM,
    cancel it, which closes its connections with 1001 (going away), and say
    "stopped". Every command ends this way: the chat demo's server and
    client, which are programs of their own too, do the same themselves."""
    interrupted = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                nonlocal interrupted
                async for _ in signals:
                    interrupted = True
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            await command()
            nursery.cancel_scope.cancel()
    if interrupted:
        print("stopped", flush=True)


# -- chat and chat-client -------------------------------------------------------


def chat_module(name: str) -> ModuleType:
    """The chat demo's ``server`` or ``client`` module (trio_ws.demo.chat.NAME),
    imported when a chat command runs."""
    return importlib.import_module(f"{__package__}.demo.chat.{name}")


def run_chat(args: argparse.Namespace) -> int:
    """``chat``: one process, or ``--workers`` processes sharing their rooms
    through ``--redis``. Returns the exit status."""
    if args.workers == 1:
        options = ["--host", args.host, "--port", str(args.port)]
        if args.redis is not None:
            options += ["--redis", args.redis]
        return int(chat_module("server").run(options))
    if args.redis is None:
        raise UsageError(
            f"{prog()} chat: error: --workers {args.workers} needs --redis URL "
            "(without Redis, each worker would have rooms of its own)"
        )
    # Each worker is `python -m trio_ws chat --redis URL`, which serves the
    # supervisor's port when it finds itself started as a worker.
    command = [sys.executable, "-m", "trio_ws", *(["-v"] if args.verbose else [])]
    command += ["chat", "--host", args.host, "--port", str(args.port), "--redis", args.redis]

    def banner(workers: Workers) -> None:
        shown = f"[{args.host}]" if ":" in args.host else args.host
        url = f"{shown}:{workers.port}/"
        print(f"chat server on http://{url} with {workers.count} workers (Ctrl-C to stop)")
        print("open that page in a browser, or join from a terminal:")
        join = trio_ws_command("chat-client", f"ws://{url}", "--name", "YOUR_NAME")
        print(f"  {join}", flush=True)

    run_workers(command, workers=args.workers, host=args.host, port=args.port, on_ready=banner)
    print("stopped", flush=True)
    return 0


def run_chat_client(args: argparse.Namespace) -> int:
    trio.run(chat_module("client").main, args.url, args.name, args.room)
    return 0


# -- serve, connect, demo -----------------------------------------------------------


def run_echo_server(args: argparse.Namespace) -> int:
    if args.unix is not None:
        if args.host is not None or args.port is not None:
            raise UsageError(f"{prog()} serve: error: --unix goes without --host and --port")
        server = functools.partial(run_unix_server, args.unix, args.mode, sys.stdout)
        trio.run(until_interrupted, server)
        return 0
    if args.mode is not None:
        raise UsageError(f"{prog()} serve: error: --mode is for --unix")
    args.host = "127.0.0.1" if args.host is None else args.host
    args.port = 8765 if args.port is None else args.port
    trio.run(until_interrupted, functools.partial(run_server, args.host, args.port, sys.stdout))
    return 0


def _file_mode(text: str) -> int:
    """An argparse ``type``: a file mode in octal (660, 0o660)."""
    try:
        mode = int(text.removeprefix("0o"), 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal file mode: {text!r}") from None
    if not 0 <= mode <= 0o7777:
        raise argparse.ArgumentTypeError(f"not a file mode: {text!r}")
    return mode


def run_interactive_client(args: argparse.Namespace) -> int:
    proxy = True if args.proxy is None else (None if args.proxy == "none" else args.proxy)
    if args.unix is not None and args.proxy is not None:
        raise UsageError(f"{prog()} connect: error: --unix goes without --proxy")
    client = functools.partial(
        run_client, args.url, sys.stdin.readline, sys.stdout, proxy=proxy, unix_path=args.unix
    )
    trio.run(until_interrupted, client)
    return 0


def run_tour(args: argparse.Namespace) -> int:
    trio.run(until_interrupted, functools.partial(run_demo, sys.stdout))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "chat": run_chat,
    "chat-client": run_chat_client,
    "serve": run_echo_server,
    "connect": run_interactive_client,
    "demo": run_tour,
}


# -- failures -------------------------------------------------------------------------


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions in ``exc``, out of the groups that nurseries put them in."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _cannot_listen_unix(exc: OSError, path: str) -> tuple[ExitStatus, str]:
    where = f"cannot listen on the Unix socket {path}"
    if exc.errno == errno.EADDRINUSE:
        return ExitStatus.ADDRESS_IN_USE, (
            f"{where}: another process is listening on it; stop it, or choose another --unix"
        )
    if isinstance(exc, FileExistsError):
        return ExitStatus.CANNOT_LISTEN, f"{where}: it exists and is not a socket (not replaced)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ExitStatus.PERMISSION_DENIED, f"{where}: permission denied (its directory?)"
    return ExitStatus.CANNOT_LISTEN, f"{where}: {exc.strerror or exc}"


def _cannot_listen(exc: OSError, args: argparse.Namespace) -> tuple[ExitStatus, str]:
    if getattr(args, "unix", None) is not None:
        return _cannot_listen_unix(exc, args.unix)
    host = f"[{args.host}]" if ":" in args.host else args.host
    where = f"cannot listen on {host}:{args.port}"
    if isinstance(exc, socket.gaierror):
        return ExitStatus.CANNOT_LISTEN, f"{where}: unknown host ({exc.strerror})"
    if exc.errno == errno.EADDRINUSE:
        return ExitStatus.ADDRESS_IN_USE, (
            f"{where}: the address is already in use (by another program?); "
            "choose another --port, or --port 0 for a free one"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return ExitStatus.CANNOT_LISTEN, f"{where}: {args.host} is not an address of this machine"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ExitStatus.PERMISSION_DENIED, (
            f"{where}: permission denied (ports below 1024 need privileges); "
            "choose a --port of 1024 or above"
        )
    return ExitStatus.CANNOT_LISTEN, f"{where}: {exc.strerror or exc}"


def _explain_one(exc: BaseException, args: argparse.Namespace) -> tuple[ExitStatus, str] | None:
    if isinstance(exc, InvalidURL):
        return ExitStatus.INVALID_URL, str(exc)
    if isinstance(exc, (ConnectionRejected, InvalidHandshake)):
        return ExitStatus.REJECTED, str(exc)
    if isinstance(exc, HandshakeError):
        return ExitStatus.CANNOT_CONNECT, str(exc)
    if isinstance(exc, (WorkerCrashLoop, BackplaneError)):
        return ExitStatus.FAILED, str(exc)
    if isinstance(exc, ImportError) and getattr(args, "redis", None) is not None:
        return ExitStatus.FAILED, str(exc)  # it names the extra to install
    if isinstance(exc, ImportError) and "trio_ws[socks]" in str(exc):
        return ExitStatus.FAILED, str(exc)  # a SOCKS proxy without the extra
    if isinstance(exc, OSError) and args.command in LISTENING:
        return _cannot_listen(exc, args)
    return None


def explain(exc: BaseException, args: argparse.Namespace) -> tuple[ExitStatus, str] | None:
    """The exit status and the one line of error for a failure that a user
    can expect, or None for one that is a bug (to be shown in full)."""
    explained = []
    for leaf in _leaves(exc):
        found = _explain_one(leaf, args)
        if found is None:
            return None
        explained.append(found)
    status, message = explained[0]  # a group of expected failures: the first one
    return status, f"{prog()} {args.command}: error: {' '.join(message.splitlines())}"


# -- arguments -----------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line on stderr, not the usage and a line."""

    def error(self, message: str) -> NoReturn:
        if self.prog == prog():  # no command, or an unknown one
            message += f"; see {prog()} --help"
        raise UsageError(f"{self.prog}: error: {message}")


def _epilog() -> str:
    statuses = "\n".join(
        f"  {status.value:<3} {meaning}" for status, meaning in EXIT_STATUS_MEANING.items()
    )
    return f"""\
Ctrl-C (or SIGTERM) stops any command cleanly: open connections are closed
with 1001 (going away), "stopped" is printed, and the exit status is 0.

exit status:
{statuses}
A failure is one line on stderr ("COMMAND: error: ..."); -v also shows
its traceback.

examples:
  {prog()} chat
  {prog()} chat-client ws://127.0.0.1:8765/ --name ann
  {prog()} serve --port 9000
  {prog()} connect ws://127.0.0.1:9000/

"{prog()} COMMAND --help" shows the options of a command."""


def _parser() -> argparse.ArgumentParser:
    import trio_ws  # its __version__, however it is defined

    parser = _Parser(
        prog=prog(),
        description="trio_ws's command line: a chat demo, an echo server, an interactive\n"
        "WebSocket client, and a guided tour of the library.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"trio_ws {trio_ws.__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log at INFO level; show errors' tracebacks"
    )
    # -v after the command too: `serve -v`; SUPPRESS keeps a -v given before it.
    verbose = _Parser(add_help=False)
    verbose.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log at INFO level; show errors' tracebacks",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", title="commands"
    )

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=summary,
            description=description,
            parents=[verbose],
            epilog=f"Exit status: see {prog()} --help.",
        )

    chat_cmd = command(
        "chat",
        "the chat demo: rooms, a web page at /, terminal clients",
        "Run the chat demo until Ctrl-C: rooms, its web page at http://HOST:PORT/, "
        "and terminal clients (chat-client). It prints the page's address and the "
        "command that joins from a terminal.",
    )
    chat_cmd.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    chat_cmd.add_argument(
        "--port", type=port_number, default=8765, help="default: 8765; 0: a free port"
    )
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
    client_cmd = command(
        "chat-client",
        "join a chat server from the terminal",
        "Join a chat server from the terminal: each line you type is said in the room "
        "you joined last. Commands: /join ROOM, /leave ROOM, /quit; Ctrl-D also quits.",
    )
    client_cmd.add_argument("url", help="the chat server's ws:// URL")
    client_cmd.add_argument("--name", required=True, help="your name in the chat")
    client_cmd.add_argument("--room", default="lobby", help="the room to join first (lobby)")
    serve_cmd = command(
        "serve",
        "run an echo server",
        "Run a WebSocket echo server until Ctrl-C: every message comes back.",
    )
    serve_cmd.add_argument("--host", help="default: 127.0.0.1")
    serve_cmd.add_argument("--port", type=port_number, help="default: 8765; 0: a free port")
    serve_cmd.add_argument(
        "--unix",
        metavar="PATH",
        help="serve on this Unix socket instead of a TCP port (a stale socket file is "
        "replaced; the file is removed on exit)",
    )
    serve_cmd.add_argument(
        "--mode", type=_file_mode, help="with --unix: the socket file's mode, in octal (660)"
    )
    connect_cmd = command(
        "connect",
        "interactive client: lines you type are sent, messages printed",
        "Connect to a WebSocket server: each line you type is sent as a text message, "
        "the messages that arrive are printed, Ctrl-D closes with 1000.",
    )
    connect_cmd.add_argument("url", help="ws:// or wss:// URL")
    connect_cmd.add_argument(
        "--proxy",
        metavar="URL",
        help="connect through this forward proxy (http://[user:pass@]host:port, "
        "socks5://..., socks5h://...); 'none': directly. Default: HTTPS_PROXY, "
        "HTTP_PROXY, ALL_PROXY and NO_PROXY from the environment",
    )
    connect_cmd.add_argument(
        "--unix",
        metavar="PATH",
        help="connect over this Unix socket (the URL still gives the Host header and the path)",
    )
    command(
        "demo",
        "start an echo server, talk to it, stop it",
        "A guided tour: start an echo server on a free port, exchange text, binary and "
        "JSON messages with it, ping it, run a receive loop under timeouts, then stop.",
    )
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


# -- entry point -----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    try:
        args = _parser().parse_args(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return int(ExitStatus.USAGE)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return int(ExitStatus.USAGE)
    except BaseException as exc:
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in _leaves(exc)):
            # Ctrl-C before (or after) a command listens for it.
            print("stopped", flush=True)
            return int(ExitStatus.OK)
        failure = explain(exc, args)
        if failure is None:
            raise  # a bug: its traceback
        if args.verbose:
            traceback.print_exception(exc)
        status, line = failure
        print(line, file=sys.stderr, flush=True)
        return int(status)
