"""One connection: the WebSocket channel, its background tasks and closing, the
incoming and outgoing sides, keepalive, and the seam that hands it messages."""
