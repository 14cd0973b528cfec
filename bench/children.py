"""Worker subprocesses as seen from the harness: commands with timeouts,
stderr kept aside for error messages, always stopped in the end."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from control import MARK

WORKER = Path(__file__).with_name("worker.py")


class ChildError(RuntimeError):
    """A worker failed, exited or did not answer in time."""


class Child:
    """One benchmark subprocess, ``python SCRIPT ARGS...`` (by default the echo
    worker, ``bench/worker.py``), that takes JSON commands on stdin and
    answers each with a JSON line on stdout, marked with ``mark`` (other
    lines are passed on to our stderr). It quits on ``{"cmd": "quit"}`` or
    at the end of its input."""

    def __init__(self, name: str, *args: str, script: Path = WORKER, mark: str = MARK) -> None:
        self.name = name
        self._mark = mark
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as self
        self._proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            bufsize=0,
        )
        self._buffer = b""

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self._proc.pid

    def send(self, command: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(command).encode() + b"\n")
        except (BrokenPipeError, ValueError) as exc:
            raise self._error("is gone") from exc

    def receive(self, timeout: float) -> dict[str, Any]:
        """The worker's next answer; other lines on its stdout go to our stderr."""
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text.startswith(self._mark):
                    answer: dict[str, Any] = json.loads(text[len(self._mark) :])
                    return answer
                print(f"[{self.name}] {text}", file=sys.stderr)
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise self._error(f"did not answer within {timeout:g} s")
            data = os.read(fd, 65536)
            if not data:
                self._proc.wait()
                raise self._error("exited")
            self._buffer += data

    def request(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.send(command)
        return self.receive(timeout)

    def quit(self) -> None:
        """Ask the worker to quit (see ``wait``)."""
        assert self._proc.stdin is not None
        try:
            if self._proc.poll() is None:
                self.send({"cmd": "quit"})
            self._proc.stdin.close()
        except (ChildError, OSError):
            pass

    def wait(self, deadline: float) -> None:
        """Wait for the worker to exit, until ``deadline`` (``time.monotonic``);
        then kill it."""
        try:
            self._proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        assert self._proc.stdout is not None
        self._proc.stdout.close()

    def stderr_text(self, limit: int = 4000) -> str:
        """The end of what the worker wrote on stderr."""
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - limit))
        return self._stderr.read().decode(errors="replace").strip()

    def _error(self, what: str) -> ChildError:
        message = f"{self.name} {what}"
        if (code := self._proc.poll()) is not None:
            message += f" (exit code {code})"
        if stderr := self.stderr_text():
            message += f"; its stderr ends with:\n{stderr}"
        return ChildError(message)


def stop_all(children: Sequence[Child], timeout: float) -> None:
    """Stop ``children`` together: ask them all to quit, give them ``timeout``
    seconds in all, then kill those still running."""
    for child in children:
        child.quit()
    deadline = time.monotonic() + timeout
    for child in children:
        child.wait(deadline)
