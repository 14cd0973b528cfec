"""trio_ws: a Trio-native, structured-concurrency WebSocket client and server."""

from ._app.hub import Hub, HubStats, Member, open_hub
from ._app.metrics import PrometheusMetrics
from ._app.pool import ConnectionPool, open_pool
from ._app.reconnect import Backoff, Reconnecting, reconnect
from ._app.router import Converter, Router
from ._app.typed import InvalidMessage, MessageCodec, TypedWebSocket, typed
from ._cluster.backplane import BackplaneError, BackplaneStats, ClusterMember, RedisBackplane
from ._cluster.worker import Worker, current_worker
from ._cluster.workers import WorkerCrashLoop, Workers, open_workers, run_workers
from ._conn.connection import WebSocket
from ._conn.message_stream import MessageStream
from ._endpoints.client import connect, start_connection
from ._endpoints.server import Handler, Server, serve, serve_listeners
from ._endpoints.unix import serve_unix
from ._errors import (
    ConnectFailed,
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    HandshakeTimeout,
    InvalidHandshake,
    InvalidURL,
    PoolTimeout,
    ProxyError,
    ReconnectFailed,
    TLSError,
    WebSocketError,
)
from ._http import Accept, Headers, Request, Response
from ._options import ConnectionOptions, Options
from ._stats import ConnectionStats, ServerStats, Traffic
from ._wire.close import CloseCode, CloseInfo
from ._wire.deflate import Deflate

__version__ = "0.1.0"

__all__ = [
    "Accept",
    "Backoff",
    "BackplaneError",
    "BackplaneStats",
    "CloseCode",
    "CloseInfo",
    "ClusterMember",
    "ConnectFailed",
    "ConnectionClosed",
    "ConnectionOptions",
    "ConnectionPool",
    "ConnectionRejected",
    "ConnectionStats",
    "Converter",
    "Deflate",
    "Handler",
    "HandshakeError",
    "HandshakeTimeout",
    "Headers",
    "Hub",
    "HubStats",
    "InvalidHandshake",
    "InvalidMessage",
    "InvalidURL",
    "Member",
    "MessageCodec",
    "MessageStream",
    "Options",
    "PoolTimeout",
    "PrometheusMetrics",
    "ProxyError",
    "ReconnectFailed",
    "Reconnecting",
    "RedisBackplane",
    "Request",
    "Response",
    "Router",
    "Server",
    "ServerStats",
    "TLSError",
    "Traffic",
    "TypedWebSocket",
    "WebSocket",
    "WebSocketError",
    "Worker",
    "WorkerCrashLoop",
    "Workers",
    "__version__",
    "connect",
    "current_worker",
    "open_hub",
    "open_pool",
    "open_workers",
    "reconnect",
    "run_workers",
    "serve",
    "serve_listeners",
    "serve_unix",
    "start_connection",
    "typed",
]
