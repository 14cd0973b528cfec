"""Accepting and dialing: the server and its accept loop, the client, the opening
handshakes, HTTP requests and responses, URLs, who owns a connection's nursery."""
