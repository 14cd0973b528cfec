"""pytest fixtures for testing trio_ws apps with :class:`~trio_ws.testing.TestClient`.

Opt in from a ``conftest.py``, and say which app to serve with a fixture
named ``trio_ws_app``::

    pytest_plugins = ["trio_ws.pytest_plugin"]

    @pytest.fixture
    def trio_ws_app() -> trio_ws.Router:
        return my_app.router

    async def test_chat(trio_ws_client: TestClient) -> None:
        async with trio_ws_client.connect("/chat/lobby") as ws:
            ...

The fixtures are async: run the tests with pytest-trio (``trio_mode =
true``, or ``@pytest.mark.trio``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from ._endpoints.server import Handler
from .testing import TestClient

__all__ = ["trio_ws_client", "trio_ws_options"]


@pytest.fixture
def trio_ws_options() -> dict[str, Any]:
    """The keyword arguments of the TestClient (``serve``'s: options,
    ``subprotocols``, ``process_request``...). Override it to change them."""
    return {}


@pytest.fixture
async def trio_ws_client(
    trio_ws_app: Handler, trio_ws_options: dict[str, Any]
) -> AsyncIterator[TestClient]:
    """A running :class:`TestClient` serving the ``trio_ws_app`` fixture."""
    async with TestClient(trio_ws_app, **trio_ws_options) as client:
        yield client
