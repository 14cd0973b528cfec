"""The line protocol between the harness and its worker subprocesses.

The harness writes one JSON command per line on a worker's stdin; the worker
answers with one JSON object per line on its stdout, marked with ``MARK`` so
that anything else a library might print there is not taken for an answer.
End of input on stdin means "quit": a worker never outlives its harness.
"""

from __future__ import annotations

import json
import os
import sys
from functools import cache
from typing import Any

MARK = "@bench "

Payload = str | bytes


#: Set by ``run.py --compression default`` for its workers: every library
#: keeps its default compression (trio_ws and websockets negotiate
#: permessage-deflate; trio-websocket and bare wsproto have none).
COMPRESSION_ENV = "BENCH_COMPRESSION"


def compression() -> dict[str, Any]:
    """Keyword arguments for a library's ``serve``/``connect`` that take
    ``compression=``: off (``compression=None``, the default of the benchmark),
    or nothing, leaving the library's default, under ``--compression default``."""
    return {} if os.environ.get(COMPRESSION_ENV) == "default" else {"compression": None}


def answer(obj: dict[str, Any]) -> None:
    """Send one answer to the harness (from a worker)."""
    sys.stdout.write(MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()


def decode(line: bytes) -> dict[str, Any]:
    """One command line, as sent by the harness."""
    command = json.loads(line)
    if not isinstance(command, dict) or "cmd" not in command:
        raise ValueError(f"not a command: {line!r}")
    return command


@cache
def payload(size: int, kind: str) -> Payload:
    """The message echoed: ASCII text (one byte per character) or random bytes."""
    if kind == "text":
        pattern = "The quick brown fox jumps over the lazy dog. "
        return (pattern * (size // len(pattern) + 1))[:size]
    if kind == "binary":
        return os.urandom(size)
    raise ValueError(f"unknown payload kind {kind!r}")
