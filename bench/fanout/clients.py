"""Many raw WebSocket clients in one process: ``python bench/fanout/clients.py PORT N``.

Started by ``bench/fanout.py``, not by hand. It opens N connections to
127.0.0.1:PORT, completes each opening handshake, and from then on reads every
byte every connection receives, with one ``epoll`` loop and no WebSocket
library, so that the clients cost as little as possible and the same for
every server. Messages are counted in bytes: each connection's running total
is compared with what the harness expects.

It prints ``{"ready": N}`` once every handshake is done, then obeys one JSON
command per line on stdin (read in the same loop):

- ``{"cmd": "until", "bytes": B, "timeout": T}``: answer ``{"t": ...}``, the
  ``time.monotonic()`` at which the last connection had received a total of
  B bytes, or ``{"t": null, "behind": K}`` if K connections had not within T s.
- end of input: close every connection and quit.
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


def handshake_request(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def open_connections(port: int, count: int) -> dict[int, socket.socket]:
    """``count`` connections with their handshake done: fd -> socket. Bytes
    that arrived after the 101 response are counted in ``EXTRA``."""
    sockets: dict[int, socket.socket] = {}
    while len(sockets) < count:
        batch = []
        for _ in range(min(BATCH, count - len(sockets))):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(handshake_request(port))
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
            sock.setblocking(False)
            EXTRA[sock.fileno()] = len(rest)
            sockets[sock.fileno()] = sock
    return sockets


EXTRA: dict[int, int] = {}


def main() -> None:
    port, count = int(sys.argv[1]), int(sys.argv[2])
    raise_open_files_limit()
    sockets = open_connections(port, count)
    received = dict.fromkeys(sockets, 0)
    for fd, extra in EXTRA.items():
        received[fd] += extra
    selector = selectors.EpollSelector()
    for fd, sock in sockets.items():
        selector.register(sock, selectors.EVENT_READ, fd)
    stdin = sys.stdin.buffer.raw
    selector.register(stdin, selectors.EVENT_READ, -1)
    print(json.dumps({"ready": count}), flush=True)

    buffer = bytearray(1 << 18)
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
            received[fd] = before + n
            if target is not None and before < target <= before + n:
                behind -= 1
        if target is not None and behind == 0:
            print(json.dumps({"t": time.monotonic()}), flush=True)
            target = None
        elif target is not None and time.monotonic() >= deadline:
            print(json.dumps({"t": None, "behind": behind}), flush=True)
            target = None


if __name__ == "__main__":
    main()
