"""A cluster node in a process of its own, for the backplane tests:
``python tests/cluster_node.py REDIS_URL [PRESENCE_TTL]``.

It opens a hub on the backplane (prefix "t") and a server on a free port,
prints ``node <number> port <port>``, then serves: each connection registers
(named by its path), joins "room", gets ``{"id": ...}``, and what it sends is
broadcast to the room."""

from __future__ import annotations

import sys

import trio

import trio_ws


async def main(url: str, ttl: float) -> None:
    backplane = trio_ws.RedisBackplane(
        url, prefix="t", presence_ttl=ttl, probe_interval=0.2, probe_timeout=1.0
    )
    async with trio_ws.open_hub(backplane=backplane) as hub:

        async def handler(ws: trio_ws.WebSocket) -> None:
            async with hub.register(ws, name=ws.request.target.lstrip("/")) as member:
                hub.join(ws, "room")
                await ws.send_json({"id": member.id})
                async for message in ws:
                    hub.broadcast(message, room="room", exclude=ws)

        async with trio.open_nursery() as nursery:
            server = await nursery.start(trio_ws.serve, handler, "127.0.0.1", 0)
            print(f"node {hub.node} port {server.port}", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 10.0)
