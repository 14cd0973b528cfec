"""Drivers: run an implementation's server or client in a worker subprocess,
on the implementation's event loop, answering the harness's commands.

A driver module provides ``run_server(module)``, ``run_client(module, url)``
and ``run_connector(module, url)``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

DRIVERS = {"trio": "runtimes.trio_driver", "asyncio": "runtimes.asyncio_driver"}


def load(runtime: str) -> ModuleType:
    return importlib.import_module(DRIVERS[runtime])
