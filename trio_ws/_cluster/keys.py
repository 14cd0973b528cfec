"""Redis channel and key names of one backplane prefix (no I/O).

Channels (pub/sub):
    ``{prefix}:all``          broadcasts to every connection (``room=None``)
    ``{prefix}:r:{room}``     broadcasts to one room
    ``{prefix}:n:{node}``     direct sends to one node's connections, and its probes
Keys (presence):
    ``{prefix}:alive:{node}``        a node is alive while this exists (TTL)
    ``{prefix}:where:{room}``        set of nodes with members in the room
    ``{prefix}:pres:{node}:{room}``  hash: member id -> metadata JSON
"""

from __future__ import annotations

import attrs

__all__ = ["Keys"]


@attrs.frozen
class Keys:
    prefix: str
    all: bytes = attrs.field(init=False)
    _room_head: bytes = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "all", f"{self.prefix}:all".encode())
        object.__setattr__(self, "_room_head", f"{self.prefix}:r:".encode())

    def room(self, room: str) -> bytes:
        return self._room_head + room.encode("utf-8", "surrogatepass")

    def room_of(self, channel: bytes) -> str | None:
        """The room a channel carries (None for the all-connections channel)."""
        if channel.startswith(self._room_head):
            return channel[len(self._room_head) :].decode("utf-8", "surrogatepass")
        return None

    def node(self, node: int) -> bytes:
        return f"{self.prefix}:n:{node}".encode()

    def alive(self, node: int) -> bytes:
        return f"{self.prefix}:alive:{node}".encode()

    def where(self, room: str) -> bytes:
        return f"{self.prefix}:where:".encode() + room.encode("utf-8", "surrogatepass")

    def presence(self, node: int, room: str) -> bytes:
        return f"{self.prefix}:pres:{node}:".encode() + room.encode("utf-8", "surrogatepass")
