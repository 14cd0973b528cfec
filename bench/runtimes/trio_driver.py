"""The driver for trio implementations, with scheduler step counting.

Commands (one JSON object per line on stdin; see ``control``):

- server: ``count_start`` / ``count_stop`` bracket a client's run and answer
  the task steps and scheduler batches the server did in between (the task
  that reads these commands is not counted);
- client: ``run`` times ``echo(conn, payload, count)`` and answers the
  elapsed nanoseconds, plus task steps and batches when ``steps`` is true
  (then the run is for counting, not timing: the instrument costs time);
- connector (a client that only opens and closes connections, for
  ``handshake.py``): ``connect`` opens and closes ``count`` connections,
  ``concurrency`` at a time, and answers the elapsed nanoseconds;
- all: ``quit``, or end of input.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

import control
import trio
from echo_impls import EchoModule


class StepCounter(trio.abc.Instrument):
    """Counts task steps, and batches: the scheduler's trips through its I/O
    wait (each is one run of every task that became ready)."""

    def __init__(self, ignore: trio.lowlevel.Task | None = None) -> None:
        self.ignore = ignore
        self.steps = 0
        self.batches = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is not self.ignore:
            self.steps += 1

    def before_io_wait(self, timeout: float) -> None:
        self.batches += 1


class Commands:
    """The harness's commands, read from stdin without blocking the loop."""

    def __init__(self) -> None:
        self._stream = trio.lowlevel.FdStream(os.dup(0))
        self._buffer = bytearray()

    async def next(self) -> dict[str, Any] | None:
        """The next command, or None at ``quit`` or end of input."""
        while (end := self._buffer.find(b"\n")) < 0:
            data = await self._stream.receive_some()
            if not data:
                return None
            self._buffer += data
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        command = control.decode(line)
        return None if command["cmd"] == "quit" else command


async def _serve(module: EchoModule) -> None:
    commands = Commands()
    counter = StepCounter(ignore=trio.lowlevel.current_task())
    async with module.serve() as port:
        control.answer({"port": port})
        while (command := await commands.next()) is not None:
            if command["cmd"] == "count_start":
                counter.steps = counter.batches = 0
                trio.lowlevel.add_instrument(counter)
                control.answer({})
            elif command["cmd"] == "count_stop":
                trio.lowlevel.remove_instrument(counter)
                control.answer({"steps": counter.steps, "batches": counter.batches})
            else:
                raise ValueError(f"unknown command {command!r}")


async def _run(module: EchoModule, conn: Any, command: dict[str, Any]) -> dict[str, Any]:
    message = control.payload(command["size"], command["kind"])
    count = command["count"]
    counter = StepCounter() if command.get("steps") else None
    gc.collect()
    if counter is not None:
        trio.lowlevel.add_instrument(counter)
    start = time.perf_counter_ns()
    reply = await module.echo(conn, message, count)
    elapsed = time.perf_counter_ns() - start
    if counter is not None:
        trio.lowlevel.remove_instrument(counter)
    if reply != message:
        raise RuntimeError(f"wrong echo: {reply[:40]!r}... for {message[:40]!r}...")
    result: dict[str, Any] = {"ns": elapsed}
    if counter is not None:
        result.update(steps=counter.steps, batches=counter.batches)
    return result


async def _client(module: EchoModule, url: str) -> None:
    commands = Commands()
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

    async with trio.open_nursery() as nursery:
        for index in range(concurrency):
            nursery.start_soon(opener, count // concurrency + (index < count % concurrency))


async def _connector(module: EchoModule, url: str) -> None:
    commands = Commands()
    control.answer({"ready": True})
    while (command := await commands.next()) is not None:
        if command["cmd"] != "connect":
            raise ValueError(f"unknown command {command!r}")
        gc.collect()
        start = time.perf_counter_ns()
        await _connect_many(module, url, command["count"], command["concurrency"])
        control.answer({"ns": time.perf_counter_ns() - start})


def run_server(module: EchoModule) -> None:
    trio.run(_serve, module)


def run_connector(module: EchoModule, url: str) -> None:
    trio.run(_connector, module, url)


def run_client(module: EchoModule, url: str) -> None:
    trio.run(_client, module, url)
