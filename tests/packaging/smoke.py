"""Smoke test of an installed trio_ws (``nox -s packaging`` runs it).

    VENV/bin/python tests/packaging/smoke.py --accelerator {yes,no,any}

Run it with the Python of a fresh virtual environment that has the wheel
installed, from a directory outside the checkout (the session runs it in a
temporary one). It checks, printing one line for each:

- trio_ws is imported from that environment, not from a source checkout;
  its C accelerator (``trio_ws._speedups``) is there or not, as
  ``--accelerator`` says;
- an echo round trip over loopback (text, binary, 1 MiB masked);
- ``python -m trio_ws --help`` and ``--version`` from this directory;
- the chat demo as installed: ``python -m trio_ws chat --port 0`` serves its
  page, and the join command it prints, run as printed, joins a room, sends a
  line and gets it back; ``/quit`` and Ctrl-C (SIGINT) end both cleanly.

Waits are for lines of output, each with a deadline; nothing sleeps.
Exits 0 when everything passed, 1 (after saying what) otherwise.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
DEADLINE = 60.0  # seconds for any one expected line

# Everything here talks to 127.0.0.1: a forward proxy the environment names
# for the Internet (connect() uses HTTP_PROXY and the like, as urllib and
# requests do) must not apply to it.
for _name in ("no_proxy", "NO_PROXY"):
    os.environ[_name] = ",".join(
        filter(None, ["localhost,127.0.0.0/8,::1", os.environ.get(_name)])
    )


class SmokeError(Exception):
    pass


def ok(what: str) -> None:
    print(f"ok: {what}", flush=True)


# -- the package ---------------------------------------------------------------


def check_import(accelerator: str) -> None:
    import trio_ws
    from trio_ws._wire import masking

    where = Path(trio_ws.__file__).resolve()
    if where.is_relative_to(CHECKOUT) or "site-packages" not in where.parts:
        raise SmokeError(f"trio_ws imported from {where}, not from an installed wheel")
    ok(f"trio_ws {trio_ws.__version__} imported from {where.parent}")
    present = masking.speedups_available()
    print(f"C accelerator (trio_ws._speedups): {'present' if present else 'absent'}")
    if accelerator != "any" and present != (accelerator == "yes"):
        raise SmokeError(f"expected the C accelerator to be {accelerator!r}, it is not")


def check_echo() -> None:
    import trio

    import trio_ws

    big = bytes(range(256)) * 4096  # 1 MiB: masked by the client, in C if it is there

    async def handler(ws: trio_ws.WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                server = await nursery.start(trio_ws.serve, handler, "127.0.0.1", 0)
                async with trio_ws.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                    for message in ("hello", b"\x00\xffbinary", big):
                        await ws.send(message)
                        echoed = await ws.receive()
                        if echoed != message:
                            raise SmokeError(f"echo of {len(message)} bytes came back different")
                nursery.cancel_scope.cancel()

    trio.run(main)
    ok("echo round trip over 127.0.0.1 (text, binary, 1 MiB)")


# -- the command line ------------------------------------------------------------


def trio_ws_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "trio_ws", *arguments]


def check_help_and_version() -> None:
    import trio_ws

    result = subprocess.run(
        trio_ws_command("--help"), capture_output=True, text=True, timeout=DEADLINE
    )
    if result.returncode != 0 or "usage:" not in result.stdout:
        raise SmokeError(f"--help: exit {result.returncode}\n{result.stdout}{result.stderr}")
    ok("python -m trio_ws --help")
    result = subprocess.run(
        trio_ws_command("--version"), capture_output=True, text=True, timeout=DEADLINE
    )
    if result.returncode != 0 or trio_ws.__version__ not in result.stdout:
        raise SmokeError(f"--version: exit {result.returncode}\n{result.stdout}{result.stderr}")
    ok(f"python -m trio_ws --version: {result.stdout.strip()}")


class Program:
    """A child process whose output is read line by line, with deadlines."""

    def __init__(self, name: str, command: list[str]) -> None:
        self.name = name
        self.seen: list[str] = []
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def expect(self, pattern: str) -> re.Match[str]:
        """The first line (from here on) that matches ``pattern``."""
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise SmokeError(self.failure(f"no line matching {pattern!r} in time")) from None
            if line is None:
                raise SmokeError(self.failure(f"ended before a line matching {pattern!r}"))
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait(self) -> int:
        try:
            return self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            raise SmokeError(self.failure("did not exit in time")) from None

    def failure(self, what: str) -> str:
        shown = "\n".join(f"    {line}" for line in self.seen[-20:])
        return f"{self.name}: {what}; its output:\n{shown}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def check_chat() -> None:
    server = Program("chat server", trio_ws_command("chat", "--port", "0"))
    client = None
    try:
        port = int(server.expect(r"chat server on http://127\.0\.0\.1:(\d+)/").group(1))
        join = server.expect(r"^\s+(\S.*chat-client.*)$").group(1).strip()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=DEADLINE) as page:
            if page.status != 200 or b"<html" not in page.read().lower():
                raise SmokeError("the chat page is not served")
        ok(f"python -m trio_ws chat serves its page on 127.0.0.1:{port}")
        command = [part.replace("YOUR_NAME", "smoke") for part in shlex.split(join)]
        client = Program("chat client", command)
        client.expect(r"you joined #\S+ as smoke")
        client.send("hello from the wheel")
        client.expect(r"smoke: hello from the wheel$")
        client.send("/quit")
        client.expect(r"^closed: ")
        if (status := client.wait()) != 0:
            raise SmokeError(client.failure(f"exit status {status} after /quit"))
        ok(f"the printed join command ({shlex.join(command[:3])} ...) chats and quits")
        server.proc.send_signal(signal.SIGINT)
        server.expect(r"^stopped$")
        if (status := server.wait()) != 0:
            raise SmokeError(server.failure(f"exit status {status} after Ctrl-C"))
        ok("the chat server stops on Ctrl-C with exit status 0")
    finally:
        for program in (client, server):
            if program is not None:
                program.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accelerator", choices=["yes", "no", "any"], default="any")
    args = parser.parse_args()
    if Path.cwd().resolve().is_relative_to(CHECKOUT):
        print("run this from a directory outside the checkout", file=sys.stderr)
        return 2
    try:
        check_import(args.accelerator)
        check_echo()
        check_help_and_version()
        check_chat()
    except SmokeError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print("smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
