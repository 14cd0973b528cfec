"""trio_ws: a Trio-native, structured-concurrency WebSocket client and server."""

from ._app.hub import Hub, HubStats, Member, open_hub
from ._app.metrics import PrometheusMetrics
from ._app.pool import ConnectionPool, open_pool
from ._app.reconnect import Backoff, Reconnecting, reconnect
from ._conn.connection import WebSocket
from ._conn.message_stream import MessageStream
from ._endpoints.client import connect, start_connection
from ._endpoints.server import Handler, Server, serve
from ._errors import (
    ConnectFailed,
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    HandshakeTimeout,
    InvalidHandshake,
    InvalidURL,
    PoolTimeout,
    ReconnectFailed,
    TLSError,
    WebSocketError,
)
from ._http import Accept, Headers, Request, Response
from ._options import Options
from ._stats import ConnectionStats, ServerStats, Traffic
from ._wire.close import CloseCode, CloseInfo
from ._wire.deflate import Deflate

__version__ = "0.1.0"

__all__ = [
    "Accept",
    "Backoff",
    "CloseCode",
    "CloseInfo",
    "ConnectFailed",
    "ConnectionClosed",
    "ConnectionPool",
    "ConnectionRejected",
    "ConnectionStats",
    "Deflate",
    "Handler",
    "HandshakeError",
    "HandshakeTimeout",
    "Headers",
    "Hub",
    "HubStats",
    "InvalidHandshake",
    "InvalidURL",
    "Member",
    "MessageStream",
    "Options",
    "PoolTimeout",
    "PrometheusMetrics",
    "ReconnectFailed",
    "Reconnecting",
    "Request",
    "Response",
    "Server",
    "ServerStats",
    "TLSError",
    "Traffic",
    "WebSocket",
    "WebSocketError",
    "__version__",
    "connect",
    "open_hub",
    "open_pool",
    "reconnect",
    "serve",
    "start_connection",
]
