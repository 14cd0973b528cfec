"""WebSocket clients for ``bench/backplane.py``.

``python bench/backplane_clients.py PROTO ROOM PORT:N [PORT:N ...]``

Started by ``bench/backplane.py``, not by hand. PROTO is ``ws`` (a plain
WebSocket to ``/ROOM``: a trio_ws node) or ``sio`` (Engine.IO 4 over a
WebSocket, connected to Socket.IO's namespace ``/``, with ``?room=ROOM``: a
python-socketio node). It opens N connections to each 127.0.0.1:PORT and
reads every frame they receive, with one ``epoll`` loop over raw sockets and
no WebSocket library, so that the clients cost the same whatever the server.
A message is a data frame (ws), or an event packet ``42[...]`` (sio).

It prints ``{"ready": total}`` once every connection is open, then obeys one
JSON command per line on stdin (answers marked, see control.py):

- ``{"cmd": "until", "count": C, "timeout": T}``: answer ``{"t": ...}``, the
  ``time.monotonic()`` at which the last connection had received C messages
  in all, or ``{"t": null, "behind": K}`` if K connections had not within T s.
- ``{"cmd": "record"}``: answer ``{"ok": true}``; from then on, note each
  message's delay: arrival time minus the ``time.monotonic()`` it carries
  (``@<time>|`` at its start).
- ``{"cmd": "delays"}``: answer ``{"delays": [[...], ...]}``, the delays
  noted per connection (in the order of the arguments), and stop noting.
- ``{"cmd": "quit"}`` or end of input: close every connection and quit.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import selectors
import socket
import sys
import time

from control import answer

BATCH = 100  # connections opened at once


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def client_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A masked client frame (short payloads only)."""
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


class Conn:
    __slots__ = ("buf", "count", "delays", "sio", "sock")

    def __init__(self, sock: socket.socket, sio: bool) -> None:
        self.sock = sock
        self.sio = sio
        self.buf = bytearray()
        self.count = 0
        self.delays: list[float] | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Take bytes from the socket; count messages; return control payloads
        (sio packets other than events) for the caller."""
        buf = self.buf
        buf += data
        n, pos = len(buf), 0
        other: list[bytes] = []
        while n - pos >= 2:
            first, length = buf[pos], buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            end = pos + head + length
            if end > n:
                break
            opcode, start = first & 0x0F, pos + head
            if opcode in (1, 2):
                if not self.sio or buf[start : start + 2] == b"42":
                    self.count += 1
                    if self.delays is not None:
                        now = time.monotonic()
                        at = buf.find(b"@", start, end)
                        bar = buf.find(b"|", at, end)
                        self.delays.append(now - float(buf[at + 1 : bar]))
                else:
                    other.append(bytes(buf[start:end]))
            elif opcode == 9:
                self.sock.sendall(client_frame(bytes(buf[start:end]), 10))
            elif opcode == 8:
                raise SystemExit("the server closed a connection")
            pos = end
        del buf[:pos]
        return other


def handshake(port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def wait_packet(conn: Conn, prefix: bytes) -> None:
    """(sio, blocking) Read until a packet starting with ``prefix`` arrives."""
    while True:
        data = conn.sock.recv(65536)
        if not data:
            raise SystemExit("the server closed a connection during the handshake")
        if any(packet.startswith(prefix) for packet in conn.feed(data)):
            return


def open_connections(port: int, count: int, room: str, sio: bool) -> list[Conn]:
    path = f"/socket.io/?EIO=4&transport=websocket&room={room}" if sio else f"/{room}"
    conns: list[Conn] = []
    while len(conns) < count:
        batch = []
        for _ in range(min(BATCH, count - len(conns))):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(handshake(port, path))
            batch.append(sock)
        for sock in batch:
            head = b""
            while b"\r\n\r\n" not in head:
                data = sock.recv(4096)
                if not data:
                    raise SystemExit("the server closed a connection during the handshake")
                head += data
            status, rest = head.split(b"\r\n", 1)[0], head.split(b"\r\n\r\n", 1)[1]
            if b" 101 " not in status:
                raise SystemExit(f"handshake refused: {status!r}")
            conn = Conn(sock, sio)
            if sio:
                if not any(p.startswith(b"0") for p in conn.feed(rest)):
                    wait_packet(conn, b"0")  # Engine.IO open
                sock.sendall(client_frame(b"40"))  # Socket.IO connect to "/"
                wait_packet(conn, b"40")
            else:
                conn.feed(rest)
            conn.count = 0
            conns.append(conn)
    for conn in conns:
        conn.sock.setblocking(False)
    return conns


def main() -> None:
    proto, room, *targets = sys.argv[1:]
    sio = proto == "sio"
    raise_open_files_limit()
    conns: list[Conn] = []
    for target in targets:
        port, count = target.split(":")
        conns.extend(open_connections(int(port), int(count), room, sio))
    by_fd = {conn.sock.fileno(): conn for conn in conns}
    selector = selectors.EpollSelector()
    for fd, conn in by_fd.items():
        selector.register(conn.sock, selectors.EVENT_READ, fd)
    stdin = sys.stdin.buffer.raw
    selector.register(stdin, selectors.EVENT_READ, -1)
    answer({"ready": len(conns)})

    pending = b""
    target: int | None = None  # messages each connection must reach
    behind = 0  # connections still below target
    deadline = 0.0
    while True:
        timeout = None if target is None else max(0.0, deadline - time.monotonic())
        for key, _ in selector.select(timeout):
            fd = key.data
            if fd == -1:
                data = os.read(stdin.fileno(), 65536)
                if not data:
                    return
                pending += data
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    command = json.loads(line)
                    cmd = command["cmd"]
                    if cmd == "quit":
                        return
                    if cmd == "until":
                        target = int(command["count"])
                        deadline = time.monotonic() + float(command["timeout"])
                        behind = sum(1 for conn in conns if conn.count < target)
                    elif cmd == "record":
                        for conn in conns:
                            conn.delays = []
                        answer({"ok": True})
                    elif cmd == "delays":
                        answer({"delays": [conn.delays or [] for conn in conns]})
                        for conn in conns:
                            conn.delays = None
                continue
            conn = by_fd[fd]
            try:
                data = conn.sock.recv(1 << 18)
            except BlockingIOError:
                continue
            if not data:
                raise SystemExit("the server closed a connection")
            before = conn.count
            conn.feed(data)
            if target is not None and before < target <= conn.count:
                behind -= 1
        if target is not None:
            if behind == 0:
                answer({"t": time.monotonic()})
                target = None
            elif time.monotonic() >= deadline:
                answer({"t": None, "behind": behind})
                target = None


if __name__ == "__main__":
    main()
