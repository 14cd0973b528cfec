"""What hostile clients can make a trio_ws server hold, per connection.

A trio_ws server runs in this process, traced by tracemalloc (which sees
zlib's buffers too); N raw clients, also in this process but holding only
one shared copy of what they send, each play one attack against a handler
that never reads. After each attack has been read by the server (or the
server stopped reading, as it should), the table gives the server's heap
growth per connection, now and at its peak, and how the connections ended.
docs/security.md gives the bound these numbers are checked against.

Run: python bench/hostile.py [--connections N]
"""

from __future__ import annotations

import argparse
import gc
import socket
import struct
import tracemalloc
import zlib
from collections.abc import Callable

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request
from wsproto.extensions import PerMessageDeflate

import trio_ws

MiB = 2**20


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False) -> bytes:
    """One masked client frame (a zero masking key: the payload as is)."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([first, 0x80 | n])
    elif n < 65536:
        head = bytes([first, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([first, 0x80 | 127]) + struct.pack("!Q", n)
    return head + b"\0\0\0\0" + payload


def deflated(data: bytes) -> bytes:
    """A permessage-deflate payload (RFC 7692 7.2.1)."""
    compressor = zlib.compressobj(wbits=-15)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def ping_flood() -> bytes:
    return frame(0x9, b"p" * 125) * 20_000


def compressed_uploads() -> bytes:
    return b"".join(frame(0x2, deflated(bytes([i]) * MiB), rsv1=True) for i in range(20))


def tiny_fragments() -> bytes:
    parts = [frame(0x2, b"ab", fin=False)]
    parts += [frame(0x0, b"ab", fin=False)] * 16_000
    return b"".join(parts)


def empty_continuations() -> bytes:
    return frame(0x2, b"x", fin=False) + frame(0x0, b"", fin=False) * 40_000


def oversized_header() -> bytes:
    return bytes([0x82, 0xFF]) + struct.pack("!Q", 2**40) + b"\0" * 4 + b"\0" * 65536


ATTACKS: dict[str, Callable[[], bytes]] = {
    "ping flood, never reading (20,000 pings)": ping_flood,
    "20 x 1 MiB compressed uploads, never read": compressed_uploads,
    "16,000 two-byte fragments": tiny_fragments,
    "40,000 empty continuation frames": empty_continuations,
    "frame header announcing 2**40 bytes": oversized_header,
}


async def handshake(port: int) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(
        ws.send(Request(host="127.0.0.1", target="/", extensions=[PerMessageDeflate()]))
    )
    while not any(isinstance(e, AcceptConnection) for e in ws.events()):
        data = await stream.receive_some(65536)
        assert data, "the server closed during the handshake"
        ws.receive_data(data)
    return stream


async def attack(port: int, wire: bytes) -> None:
    """Send ``wire``, never read; stop when the server closes (or sends)."""
    stream = await handshake(port)
    try:
        await stream.send_all(wire)
        await trio.sleep_forever()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def run_attack(name: str, wire: bytes, count: int) -> str:
    connections: list[trio_ws.WebSocket] = []

    async def handler(ws: trio_ws.WebSocket) -> None:
        connections.append(ws)
        await ws.wait_closed()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_ws.serve, handler, "127.0.0.1", 0)
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(count):
            nursery.start_soon(attack, server.port, wire)
        # Settled: nothing has moved for a while (all read, or reading paused).
        last = -1
        while True:
            await trio.sleep(0.5)
            now = sum(ws.stats().traffic.bytes_in for ws in connections)
            if now == last and len(connections) == count:
                break
            last = now
        held, peak = (m - base for m in tracemalloc.get_traced_memory())
        tracemalloc.stop()
        states = sorted({state(ws) for ws in connections})
        nursery.cancel_scope.cancel()
    return (
        f"| {name} | {held / count / 1024:,.0f} | {peak / count / 1024:,.0f} | "
        f"{', '.join(states)} |"
    )


def state(ws: trio_ws.WebSocket) -> str:
    if ws.close_code is not None:
        return f"closed {int(ws.close_code)}"
    return "closing" if ws.closing else "open"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=20)
    args = parser.parse_args()
    print(f"{args.connections} connections per attack\n")
    print("| attack | held KiB/conn | peak KiB/conn | connections end |")
    print("|---|--:|--:|---|")
    for name, make in ATTACKS.items():
        print(trio.run(run_attack, name, make(), args.connections), flush=True)


if __name__ == "__main__":
    main()
