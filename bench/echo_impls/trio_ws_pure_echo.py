"""trio_ws without its compiled accelerator: wsproto's pure-Python masking,
as on a machine where the C extension could not be built."""

from __future__ import annotations

import os

os.environ["TRIO_WS_NO_SPEEDUPS"] = "1"

import trio_ws._wire.masking

assert not trio_ws._wire.masking.ACTIVE, "TRIO_WS_NO_SPEEDUPS must be set before trio_ws loads"

from .trio_ws_echo import connect, echo, serve  # noqa: E402

__all__ = ["connect", "echo", "serve"]
