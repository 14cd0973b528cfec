"""The floor of ``handshake.py``'s server table: what Trio itself costs per
connection, with none of a WebSocket library's work.

One task per connection (``trio.serve_tcp``), the request read by trio_ws's
fast parser (``_wire.upgrade``), the 101 written, the client's close frame
read and answered, end-of-file sent, the client's end-of-file awaited,
closed. No connection object, no background task, no keepalive, no limits,
no checks beyond the parser's: a real server cannot be cheaper than this on
Trio, so it tells how much of a library's cost is Trio's.

Started by ``handshake.py``, not by hand: it answers ``{"port": P}`` once
listening, then serves until its stdin ends.
"""

from __future__ import annotations

import functools
import os

import control
import trio

from trio_ws._wire.upgrade import accept_response, parse_upgrade


async def _connection(stream: trio.SocketStream) -> None:
    data = await stream.receive_some(65536)
    end = data.find(b"\r\n\r\n") + 4
    head = parse_upgrade(data[:end])
    if head is None:
        await stream.aclose()
        return
    await stream.send_all(accept_response(head.key, None, None))
    rest = data[end:]
    while len(rest) < 8:  # the client's masked close frame, status only
        more = await stream.receive_some(65536)
        if not more:
            break
        rest += more
    await stream.send_all(b"\x88\x02\x03\xe8")
    await stream.send_eof()
    while await stream.receive_some(65536):
        pass
    await stream.aclose()


async def main() -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, _connection, 0, host="127.0.0.1")
        )
        control.answer({"port": listeners[0].socket.getsockname()[1]})
        await trio.lowlevel.FdStream(os.dup(0)).receive_some()  # until stdin ends
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
