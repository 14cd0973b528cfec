"""The fixed raw server of ``handshake.py``: accepts WebSocket connections and
closes them as soon as the client does, so that a client library's cost per
``connect()`` + close is what is measured.

Each connection: the upgrade request, a 101 response accepting no extension
(a client's compression offer is declined, as any server may), then the
client's close frame is answered with a close frame (1000) and the server
closes the TCP connection. Plain non-blocking sockets and ``selectors``.

Started by ``handshake.py``, not by hand: it answers ``{"port": P}`` once
listening, then serves until its stdin ends.
"""

from __future__ import annotations

import base64
import hashlib
import os
import selectors
import socket
import sys

import control

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLOSE_1000 = b"\x88\x02\x03\xe8"


def _response(request: bytes) -> bytes:
    for line in request.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            accept = base64.b64encode(hashlib.sha1(value.strip() + GUID).digest())
            return (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
    return b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def _close_frame_length(buffer: bytes) -> int:
    """Bytes of the complete (masked) frame at the start of ``buffer``, or 0."""
    if len(buffer) < 2:
        return 0
    length = buffer[1] & 0x7F
    header = 2 + 4 + {126: 2, 127: 8}.get(length, 0)
    if length >= 126:
        if len(buffer) < header:
            return 0
        length = int.from_bytes(buffer[2 : header - 4], "big")
    return header + length if len(buffer) >= header + length else 0


def serve(listener: socket.socket) -> None:
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    commands = sys.stdin.fileno()
    selector.register(commands, selectors.EVENT_READ, "stdin")
    buffers: dict[socket.socket, bytes] = {}
    upgraded: set[socket.socket] = set()

    def drop(sock: socket.socket) -> None:
        selector.unregister(sock)
        buffers.pop(sock, None)
        upgraded.discard(sock)
        sock.close()

    while True:
        for key, _mask in selector.select():
            if key.data == "stdin":
                if not os.read(commands, 4096):
                    return
                continue
            if key.data is None:
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    continue
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                selector.register(sock, selectors.EVENT_READ, "conn")
                buffers[sock] = b""
                continue
            sock = key.fileobj  # type: ignore[assignment]
            try:
                data = sock.recv(65536)
            except ConnectionError:
                data = b""
            if not data:
                drop(sock)
                continue
            buffer = buffers[sock] + data
            if sock not in upgraded:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    buffers[sock] = buffer
                    continue
                sock.send(_response(buffer[:end]))
                upgraded.add(sock)
                buffer = buffer[end + 4 :]
            while (length := _close_frame_length(buffer)) and buffer[0] & 0x0F != 0x8:
                buffer = buffer[length:]  # not a close frame (a ping, a message): skip it
            if length and buffer[0] & 0x0F == 0x8:
                try:
                    sock.send(CLOSE_1000)
                except ConnectionError:
                    pass
                drop(sock)
                continue
            buffers[sock] = buffer


def main() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    listener.setblocking(False)
    control.answer({"port": listener.getsockname()[1]})
    serve(listener)


if __name__ == "__main__":
    main()
