"""The driver for asyncio implementations: the same commands and roles as
the trio driver (see ``trio_driver``), without step counting (answers none)."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from typing import Any

import control
from echo_impls import EchoModule


class Commands:
    """The harness's commands, read from stdin without blocking the loop."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    @classmethod
    async def open(cls) -> Commands:
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        await asyncio.get_running_loop().connect_read_pipe(lambda: protocol, sys.stdin)
        return cls(reader)

    async def next(self) -> dict[str, Any] | None:
        """The next command, or None at ``quit`` or end of input."""
        line = await self._reader.readline()
        if not line:
            return None
        command = control.decode(line)
        return None if command["cmd"] == "quit" else command


async def _serve(module: EchoModule) -> None:
    commands = await Commands.open()
    async with module.serve() as port:
        control.answer({"port": port})
        while (command := await commands.next()) is not None:
            if command["cmd"] not in ("count_start", "count_stop"):
                raise ValueError(f"unknown command {command!r}")
            control.answer({})


async def _run(module: EchoModule, conn: Any, command: dict[str, Any]) -> dict[str, Any]:
    message = control.payload(command["size"], command["kind"])
    gc.collect()
    start = time.perf_counter_ns()
    reply = await module.echo(conn, message, command["count"])
    elapsed = time.perf_counter_ns() - start
    if reply != message:
        raise RuntimeError(f"wrong echo: {reply[:40]!r}... for {message[:40]!r}...")
    return {"ns": elapsed}


async def _client(module: EchoModule, url: str) -> None:
    commands = await Commands.open()
    async with module.connect(url) as conn:
        control.answer({"ready": True})
        while (command := await commands.next()) is not None:
            if command["cmd"] != "run":
                raise ValueError(f"unknown command {command!r}")
            control.answer(await _run(module, conn, command))


async def _connect_many(module: EchoModule, url: str, count: int, concurrency: int) -> None:
    async def opener(n: int) -> None:
        for _ in range(n):
            async with module.connect(url):
                pass

    await asyncio.gather(
        *(opener(count // concurrency + (i < count % concurrency)) for i in range(concurrency))
    )


async def _connector(module: EchoModule, url: str) -> None:
    commands = await Commands.open()
    control.answer({"ready": True})
    while (command := await commands.next()) is not None:
        if command["cmd"] != "connect":
            raise ValueError(f"unknown command {command!r}")
        gc.collect()
        start = time.perf_counter_ns()
        await _connect_many(module, url, command["count"], command["concurrency"])
        control.answer({"ns": time.perf_counter_ns() - start})


def run_server(module: EchoModule) -> None:
    asyncio.run(_serve(module))


def run_connector(module: EchoModule, url: str) -> None:
    asyncio.run(_connector(module, url))


def run_client(module: EchoModule, url: str) -> None:
    asyncio.run(_client(module, url))
