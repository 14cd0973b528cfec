"""trio_ws handlers and routers inside an ASGI server (Hypercorn's Trio
worker, Quart-Trio, Starlette on Trio): see docs/asgi.md.

``trio_ws.asgi.App(handler_or_router)`` is an ASGI application whose
connections are real :class:`trio_ws.WebSocket` objects, decided by the
native server's handshake; ``trio_ws.asgi.dispatch(http_app, ws_app)``
puts it beside an HTTP application. Importing this module imports no ASGI
server or framework.
"""

from ._app import App, AppOptions, ASGIApp, dispatch
from ._stream import Receive, Scope, Send

__all__ = ["ASGIApp", "App", "AppOptions", "Receive", "Scope", "Send", "dispatch"]
