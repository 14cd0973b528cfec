"""The fixed raw client of ``handshake.py``: opens WebSocket connections to a
server and closes them again, as fast as one process can, so that the server's
cost per connection is what is measured.

Each connection: TCP connect, an upgrade request offering no extension, the
101 response, a close frame (1000), the server's close frame, then the
server's end of the TCP connection. ``concurrency`` connections are in flight
at any time. Plain non-blocking sockets and ``selectors``, no event loop and
no WebSocket library, so the client costs the same whichever server it meets.

Started by ``handshake.py``, not by hand: commands on stdin, one JSON object
per line (see ``control``)::

    {"cmd": "run", "port": P, "count": N, "concurrency": C, "path": "/" (optional)}
    -> {"ns": elapsed, "abrupt": connections ended without a close frame}
"""

from __future__ import annotations

import errno
import selectors
import socket
import sys
import time

import control

#: A masked close frame, status 1000, masking key zero (any key is valid).
CLOSE_1000 = b"\x88\x82\x00\x00\x00\x00\x03\xe8"


def _request(port: int, path: str = "/") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "\r\n"
    ).encode()


class Conn:
    """One connection's state: what it waits for next."""

    __slots__ = ("buffer", "sock", "state")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.state = "connect"
        self.buffer = b""


def run(
    port: int, count: int, concurrency: int, timeout: float = 60.0, path: str = "/"
) -> tuple[int, int]:
    """Open and close ``count`` connections, ``concurrency`` at a time; the
    elapsed nanoseconds, and how many connections the server ended without
    a close frame."""
    request = _request(port, path)
    address = ("127.0.0.1", port)
    selector = selectors.DefaultSelector()
    started = done = abrupt = 0

    def start() -> None:
        nonlocal started
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            raise OSError(code, f"connect: {errno.errorcode.get(code, code)}")
        selector.register(sock, selectors.EVENT_WRITE, Conn(sock))
        started += 1

    begin = time.perf_counter_ns()
    deadline = time.monotonic() + timeout
    for _ in range(min(concurrency, count)):
        start()
    while done < count:
        events = selector.select(timeout=1.0)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{done} of {count} connections done in {timeout} s")
        for key, _mask in events:
            conn: Conn = key.data
            sock = conn.sock
            if conn.state == "connect":
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    raise OSError(error, f"connect: {errno.errorcode.get(error, error)}")
                sock.send(request)
                conn.state = "response"
                selector.modify(sock, selectors.EVENT_READ, conn)
                continue
            data = sock.recv(65536)
            if conn.state == "response":
                if not data:
                    raise ConnectionError("the server closed during the handshake")
                conn.buffer += data
                end = conn.buffer.find(b"\r\n\r\n")
                if end < 0:
                    continue
                if not conn.buffer.startswith(b"HTTP/1.1 101"):
                    raise ConnectionError(f"refused: {conn.buffer[:60]!r}")
                conn.buffer = conn.buffer[end + 4 :]
                sock.send(CLOSE_1000)
                conn.state = "closing"
            elif data:
                conn.buffer += data
            else:  # the server's end of the connection, after its close frame
                if not conn.buffer.startswith(b"\x88"):
                    abrupt += 1
                selector.unregister(sock)
                sock.close()
                done += 1
                if started < count:
                    start()
    elapsed = time.perf_counter_ns() - begin
    selector.close()
    return elapsed, abrupt


def main() -> None:
    for line in sys.stdin.buffer:
        command = control.decode(line)
        if command["cmd"] == "quit":
            return
        if command["cmd"] != "run":
            raise ValueError(f"unknown command {command!r}")
        ns, abrupt = run(
            command["port"],
            command["count"],
            command["concurrency"],
            path=command.get("path", "/"),
        )
        control.answer({"ns": ns, "abrupt": abrupt})


if __name__ == "__main__":
    main()
