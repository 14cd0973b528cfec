"""What the demo programs share with ``python -m trio_ws``: the checks of
their arguments, and the commands they print for the user to type."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path

__all__ = ["port_number", "trio_ws_command"]


def port_number(text: str) -> int:
    """An argparse ``type``: a TCP port, 0 to 65535 (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535 (0: a free one), not {port}")
    return port


def trio_ws_command(*arguments: str) -> str:
    """``python -m trio_ws ARGUMENTS`` as a command that runs as printed,
    with this Python and its trio_ws, from any directory: ``trio-ws ...``
    where the shell finds the ``trio-ws`` script installed beside this
    interpreter (a virtual environment that is active), else the
    interpreter's full path (``/path/to/venv/bin/python -m trio_ws ...``)."""
    program = [sys.executable or "python", "-m", "trio_ws"]
    script = shutil.which("trio-ws")
    if script is not None and sys.executable:
        try:
            beside = os.path.samefile(Path(script).parent, Path(sys.executable).parent)
        except OSError:
            beside = False
        if beside:
            program = ["trio-ws"]
    return shlex.join([*program, *arguments])
