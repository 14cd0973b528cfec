"""Programs run in the background by the tests: output read line by line
(with a deadline), lines written to their input, always killed in the end."""

from __future__ import annotations

import os
import select
import subprocess
from collections.abc import Sequence
from pathlib import Path

#: Seconds a test waits for a line of output or for the program to exit.
TIMEOUT = 10.0

#: The environment of the programs: unbuffered output, so lines arrive as printed.
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


class Background:
    """``argv`` started in the background, its stdout and stderr piped."""

    def __init__(
        self, argv: Sequence[str], *, stdin: bool = False, cwd: Path | None = None
    ) -> None:
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
            cwd=cwd,
        )
        self._pending = b""  # read from stdout, not yet returned

    def readline(self) -> str:
        """The next line of output ('' at its end); fails after TIMEOUT."""
        # os.read, not the pipe's readline: lines it buffered would be
        # invisible to select().
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._pending:
            ready, _, _ = select.select([fd], [], [], TIMEOUT)
            assert ready, "no output in time"
            data = os.read(fd, 65536)
            if not data:
                break
            self._pending += data
        line, newline, self._pending = self._pending.partition(b"\n")
        return (line + newline).decode()

    def write(self, text: str) -> None:
        """Write ``text`` to the program's input (started with ``stdin=True``)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def wait(self) -> tuple[int, str, str]:
        """End the input, if any; wait for the program to exit: (exit status,
        the rest of its output, its errors)."""
        out, err = self.proc.communicate(timeout=TIMEOUT)
        return self.proc.returncode, self._pending.decode() + out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
