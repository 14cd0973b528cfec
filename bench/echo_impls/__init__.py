"""The implementations the benchmark compares, one module each.

An implementation module provides, for its runtime ("trio" or "asyncio"):

- ``serve()``: an async context manager that runs an echo server on
  127.0.0.1 with a free port and yields that port;
- ``connect(url)``: an async context manager that yields a client connection
  to that server, open;
- ``echo(conn, message, count)``: sends ``message`` and waits for its echo,
  ``count`` times with one message in flight, and returns the last reply.
  The loop is timed as a whole, so keep it to the library's plain send and
  receive calls.

To add an implementation: write such a module here and add an ``Impl`` to
``IMPLS`` (the runtime's driver in ``runtimes/`` does the rest).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Awaitable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, cast

from control import Payload


class EchoModule(Protocol):
    """What an implementation module provides (see the module docstring)."""

    def serve(self) -> AbstractAsyncContextManager[int]: ...

    def connect(self, url: str) -> AbstractAsyncContextManager[Any]: ...

    def echo(self, conn: Any, message: Payload, count: int) -> Awaitable[Payload]: ...


@dataclass(frozen=True)
class Impl:
    """One implementation: client and server of the same library."""

    #: Name on the command line (``--only``).
    key: str
    #: Name in the table.
    label: str
    #: Module in this package.
    module: str
    #: The event loop it runs on: the name of a driver in ``runtimes``.
    runtime: str
    #: (module to import, what to pip install) for each library it needs.
    requires: tuple[tuple[str, str], ...]

    def missing(self) -> list[tuple[str, str]]:
        """(module, what to pip install) for each library missing to run it."""
        return [(name, package) for name, package in self.requires if not _importable(name)]

    def load(self) -> EchoModule:
        return cast(EchoModule, importlib.import_module(f"{__name__}.{self.module}"))


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a parent package is missing
        return False


#: The baseline of the paired ratios.
BASELINE = "trio_ws"

IMPLS: tuple[Impl, ...] = (
    Impl(
        "trio_ws",
        "trio_ws",
        "trio_ws_echo",
        "trio",
        (("trio_ws", "-e ."),),
    ),
    Impl(
        "trio_ws_pure",
        "trio_ws (no C accelerator)",
        "trio_ws_pure_echo",
        "trio",
        (("trio_ws", "-e ."),),
    ),
    Impl(
        "websockets_trio",
        "websockets.trio",
        "websockets_trio_echo",
        "trio",
        (("websockets.trio", "websockets==17.4"),),
    ),
    Impl(
        "websockets_asyncio",
        "websockets (asyncio)",
        "websockets_asyncio_echo",
        "asyncio",
        (("websockets.asyncio", "websockets==17.4"),),
    ),
    Impl(
        "trio_websocket",
        "trio-websocket",
        "trio_websocket_echo",
        "trio",
        (("trio_websocket", "trio-websocket==0.12.2"),),
    ),
    Impl(
        "bare",
        "bare trio + wsproto",
        "bare_echo",
        "trio",
        (("trio", "trio"), ("wsproto", "wsproto")),
    ),
)

BY_KEY = {impl.key: impl for impl in IMPLS}
