"""Many raw WebSocket clients in one process: ``python bench/fanout/clients.py PORT N [deflate]``.

Started by ``bench/fanout.py``, not by hand. It opens N connections to
127.0.0.1:PORT, completes each opening handshake, and from then on reads every
byte every connection receives, with one ``epoll`` loop and no WebSocket
library, so that the clients cost as little as possible and the same for
every server. Messages are counted in bytes: each connection's running total
is compared with what the harness expects. With ``deflate`` the clients offer
permessage-deflate and count messages instead (compressed sizes depend on the
server), reading each frame's header and skipping its payload unread.

It prints ``{"ready": N}`` once every handshake is done, then obeys one JSON
command per line on stdin (read in the same loop):

- ``{"cmd": "until", "bytes": B, "timeout": T}``: answer ``{"t": ...}``, the
  ``time.monotonic()`` at which the last connection had received a total of
  B bytes (B messages with ``deflate``), or ``{"t": null, "behind": K}`` if K
  connections had not within T s.
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

BATCH = 100  # connections opened at once


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def handshake_request(port: int, deflate: bool) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else ""
    return (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{offer}\r\n"
    ).encode()


def open_connections(port: int, count: int, deflate: bool) -> dict[int, socket.socket]:
    """``count`` connections with their handshake done: fd -> socket. Bytes
    that arrived after the 101 response are counted in ``EXTRA``."""
    sockets: dict[int, socket.socket] = {}
    while len(sockets) < count:
        batch = []
        for _ in range(min(BATCH, count - len(sockets))):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(handshake_request(port, deflate))
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
            if deflate and b"permessage-deflate" not in head.split(b"\r\n\r\n", 1)[0]:
                raise SystemExit("the server did not accept permessage-deflate")
            sock.setblocking(False)
            EXTRA[sock.fileno()] = len(rest)
            sockets[sock.fileno()] = sock
    return sockets


EXTRA: dict[int, int] = {}


class FrameCounter:
    """Counts the messages in one connection's stream of server frames,
    reading only frame headers."""

    __slots__ = ("head", "skip")

    def __init__(self) -> None:
        self.skip = 0  # payload bytes of the current frame still to come
        self.head = b""  # the start of a frame header split across reads

    def feed(self, view: memoryview, n: int) -> int:
        """Take the next ``n`` bytes of ``view``; return how many messages ended."""
        pos = self.skip
        if pos >= n:
            self.skip = pos - n
            return 0
        data: bytes | memoryview = view
        if self.head:
            data, n, pos = self.head + bytes(view[pos:n]), len(self.head) + n - pos, 0
            self.head = b""
        ended = 0
        while n - pos >= 2:
            first, length = data[pos], data[pos + 1] & 0x7F
            size = 2
            if length >= 126:
                size = 4 if length == 126 else 10
                if n - pos < size:
                    break
                length = int.from_bytes(data[pos + 2 : pos + size], "big")
            if first & 0x80 and first & 0x0F < 8:  # FIN on a data frame
                ended += 1
            pos += size + length
        if pos >= n:
            self.skip = pos - n
        else:
            self.head = bytes(data[pos:n])
        return ended


def main() -> None:
    port, count = int(sys.argv[1]), int(sys.argv[2])
    deflate = sys.argv[3:] == ["deflate"]
    raise_open_files_limit()
    sockets = open_connections(port, count, deflate)
    received = dict.fromkeys(sockets, 0)
    counters = {fd: FrameCounter() for fd in sockets} if deflate else {}
    if deflate and any(EXTRA.values()):
        raise SystemExit("a frame arrived with the handshake response")
    for fd, extra in EXTRA.items():
        received[fd] += extra
    selector = selectors.EpollSelector()
    for fd, sock in sockets.items():
        selector.register(sock, selectors.EVENT_READ, fd)
    stdin = sys.stdin.buffer.raw
    selector.register(stdin, selectors.EVENT_READ, -1)
    print(json.dumps({"ready": count}), flush=True)

    buffer = bytearray(1 << 18)
    view = memoryview(buffer)
    pending = b""
    target: int | None = None  # bytes each connection must reach
    behind = 0  # connections still below target
    deadline = 0.0
    while True:
        timeout = None if target is None else max(0.0, deadline - time.monotonic())
        events = selector.select(timeout)
        for key, _ in events:
            fd = key.data
            if fd == -1:
                data = os.read(stdin.fileno(), 65536)
                if not data:
                    for sock in sockets.values():
                        sock.close()
                    return
                pending += data
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    command = json.loads(line)
                    if command["cmd"] == "quit":
                        for sock in sockets.values():
                            sock.close()
                        return
                    target = int(command["bytes"])
                    deadline = time.monotonic() + float(command["timeout"])
                    behind = sum(1 for total in received.values() if total < target)
                continue
            try:
                n = sockets[fd].recv_into(buffer)
            except BlockingIOError:
                continue
            if n == 0:
                selector.unregister(sockets[fd])
                continue
            before = received[fd]
            received[fd] = before + (counters[fd].feed(view, n) if deflate else n)
            if target is not None and before < target <= received[fd]:
                behind -= 1
        if target is not None and behind == 0:
            print(json.dumps({"t": time.monotonic()}), flush=True)
            target = None
        elif target is not None and time.monotonic() >= deadline:
            print(json.dumps({"t": None, "behind": behind}), flush=True)
            target = None


if __name__ == "__main__":
    main()
