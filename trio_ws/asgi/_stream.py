"""The byte stream a trio_ws server connection runs on under ASGI: reads
are the ASGI server's messages, writes become messages to it.

The server's handshake and connection code run on it unchanged, as on a
socket (see ``_bridge``). What it does with the bytes:

- Reading: first the HTTP request the scope describes (written by
  ``_bridge.request_head``); once upgraded, each ``websocket.receive`` as a
  masked client frame, and ``websocket.disconnect`` as the client's close
  frame (or end-of-file when it left without one). Once the connection's
  own close went out as ``websocket.close``, the closing handshake is the
  ASGI server's: the connection reads the client's reply at once (the
  echo of its close, as RFC 6455 has the client answer), then the end.
  Nothing is read from the ASGI server before the upgrade.
- Writing: the server's HTTP answer, read with h11: a 101 becomes
  ``websocket.accept``; any other answer the denial response (without the
  ASGI server's denial extension, a plain ``websocket.close``), or, for an
  ``http`` scope, the response itself. Then frames (the connection's own:
  unmasked, uncompressed, well-formed, so a few lines read them): each
  message becomes ``websocket.send`` (fragments joined: ASGI has none), the
  close frame ``websocket.close`` with its code and reason.

Backpressure: ``send_all`` returns only once the ASGI server's ``send``
has (Hypercorn's waits for the client's socket). So the connection's writer
blocks while the client is not reading, and what is queued behind it (a
hub's broadcasts) stays counted in the connection's own queue, where the
hub's slow-client limits see it.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import h11
import trio

from .._conn.connection import BridgedStream
from .._http import Headers, Response
from .._wire import masking
from .._wire.close import CloseCode, check_close_code, check_close_reason
from .._wire.framing import frame_data, header

__all__ = ["DENIAL_EXTENSION", "AsgiStream", "Receive", "Scope", "Send"]

#: ASGI's three arguments, as this package uses them.
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: The ASGI extension for answering a WebSocket request with an HTTP response.
DENIAL_EXTENSION = "websocket.http.response"

#: Fields of the 101 that are the ASGI server's to write (it adds them itself).
_HANDSHAKE_FIELDS = frozenset(
    {
        b"upgrade",
        b"connection",
        b"sec-websocket-accept",
        b"sec-websocket-protocol",
        b"sec-websocket-extensions",
    }
)


def _address(value: Any) -> Any:
    """An ASGI ``client``/``server`` entry as a socket address tuple."""
    return None if value is None else tuple(value)


#: Opcodes of the frames the connection writes.
_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING = 0x0, 0x1, 0x2, 0x8, 0x9


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """A whole masked frame, as a client sends it."""
    key = os.urandom(4)
    return header(0x80 | opcode, len(payload), 0x80) + key + masking.mask(payload, key)


def _close_frame(code: int, reason: str) -> bytes:
    """The client's close frame: empty for 1005, else the code and reason
    (ValueError for what no frame carries, such as 1006)."""
    if code == CloseCode.NO_STATUS_RCVD:
        return _client_frame(_CLOSE, b"")
    check_close_code(code)
    check_close_reason(reason)
    return _client_frame(_CLOSE, code.to_bytes(2, "big") + reason.encode())


def _split_frames(data: bytes) -> tuple[list[tuple[int, bool, bytes]], bytes]:
    """The complete frames at the start of ``data`` (opcode, final, payload)
    and what is left. Only the connection's own frames come here: unmasked,
    without extensions (compression is off), well-formed."""
    frames = []
    start, size = 0, len(data)
    while size - start >= 2:
        first, length = data[start], data[start + 1] & 0x7F
        offset = start + 2
        if length == 126:
            offset += 2
            length = int.from_bytes(data[start + 2 : offset], "big")
        elif length == 127:
            offset += 8
            length = int.from_bytes(data[start + 2 : offset], "big")
        end = offset + length
        if end > size:
            break
        frames.append((first & 0x0F, bool(first & 0x80), data[offset:end]))
        start = end
    return frames, data[start:]


class AsgiStream(BridgedStream):
    """One ASGI connection as a byte stream (see the module's docstring)."""

    owner = "the ASGI server"

    def __init__(
        self, scope: Scope, receive: Receive, send: Send, head: bytes, answer: h11.Connection
    ) -> None:
        self.sockname = _address(scope.get("server"))
        self.peername = _address(scope.get("client"))
        self._receive = receive
        self._send = send
        self._websocket = scope["type"] == "websocket"
        self._denial = DENIAL_EXTENSION in (scope.get("extensions") or {})
        self._incoming = bytearray(head)  # for the connection to read
        self._answer: h11.Connection | None = answer  # None once upgraded
        self._status = 0
        self._fields: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._partial = b""  # the start of a frame, until the rest comes
        self._opcode = _TEXT  # of the fragmented message in progress
        self._pieces: list[bytes] = []  # its payload so far
        self._close_reply = b""  # the client's answer to the connection's close
        self._eof = False  # nothing more to read
        self._reading: trio.CancelScope | None = None  # around a receive() in progress
        self._closed = False
        #: An answer went out: a 101 (``accepted``) or an HTTP response.
        self.answered = False
        #: The connection was upgraded: websocket.accept went out.
        self.accepted = False
        #: websocket.close went out (or the denial response, or http.response).
        self.close_sent = False
        #: The client left (websocket.disconnect): nothing more goes to it.
        self.disconnected = False

    # -- reading -------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The next bytes for the connection; b"" at the end. Waits for the
        ASGI server's next message once the buffered bytes are taken.
        Cancellation: as safe as the ASGI server's ``receive`` (Hypercorn's
        is a memory channel's: nothing is lost)."""
        if self._closed:
            raise trio.ClosedResourceError("the stream is closed")
        incoming = self._incoming
        if not incoming:
            if self._eof or not self.accepted:
                # (Before the upgrade there is nothing after the request.)
                await trio.lowlevel.checkpoint()
                return b""
            while not incoming and not self._eof:
                with trio.CancelScope() as self._reading:
                    message = await self._receive()
                if not self._reading.cancelled_caught:
                    self._take(message)
            self._reading = None
        else:
            await trio.lowlevel.checkpoint()
        if max_bytes is None or max_bytes >= len(incoming):
            data = bytes(incoming)
            incoming.clear()
        else:
            data = bytes(incoming[:max_bytes])
            del incoming[:max_bytes]
        return data

    def _take(self, message: MutableMapping[str, Any]) -> None:
        """One message from the ASGI server, as bytes to read."""
        kind = message.get("type")
        if kind == "websocket.receive":
            text = message.get("text")
            payload = text if text is not None else (message.get("bytes") or b"")
            frame = frame_data(payload, True, None)
            self._incoming += frame if isinstance(frame, bytes) else b"".join(frame)
        elif kind == "websocket.disconnect":
            self.disconnected = True
            self._eof = True
            code = message.get("code", CloseCode.NO_STATUS_RCVD)
            try:
                self._incoming += _close_frame(code, message.get("reason") or "")
            except ValueError:
                pass  # a code no frame carries (1006: it just left): end-of-file

    # -- writing -------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Hand what the connection wrote to the ASGI server; returns once
        its ``send`` has. Cancellation: the message being sent may or may
        not have gone (Trio's contract for ``send_all``)."""
        if self._closed:
            raise trio.ClosedResourceError("the stream is closed")
        sent = False
        if self._answer is not None:
            data = await self._read_answer(bytes(data))
            sent = True
        if data and self.accepted:
            sent = await self._frames(bytes(data)) or sent
        if not sent:
            await trio.lowlevel.checkpoint()

    async def _read_answer(self, data: bytes) -> bytes:
        """The server's HTTP answer, sent on as ASGI: return the bytes after
        a 101 (frames already)."""
        conn = self._answer
        assert conn is not None
        conn.receive_data(data)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return b""
            if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                self._answer = None
                await self._accept(list(event.headers))
                return bytes(conn.trailing_data[0])
            if isinstance(event, h11.Response):
                self._status, self._fields = event.status_code, list(event.headers)
            elif isinstance(event, h11.Data):
                self._body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self._answer = None
                response = Response(
                    self._status, Headers.from_raw(self._fields), b"".join(self._body)
                )
                await self.answer(response)
                return b""

    async def _accept(self, fields: list[tuple[bytes, bytes]]) -> None:
        subprotocol = next(
            (v.decode("latin-1") for n, v in fields if n == b"sec-websocket-protocol"), None
        )
        extra = [(n, v) for n, v in fields if n not in _HANDSHAKE_FIELDS]
        self.answered = self.accepted = True
        await self._send(
            {"type": "websocket.accept", "subprotocol": subprotocol, "headers": extra}
        )

    async def answer(self, response: Response) -> None:
        """Send an HTTP answer: the response itself for an ``http`` scope;
        for a WebSocket, the denial response where the ASGI server offers
        the extension, else ``websocket.close`` (which it answers with 403)."""
        self.answered = self.close_sent = True
        if self._websocket and not self._denial:
            await self._send({"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION})
            return
        prefix = "websocket.http" if self._websocket else "http"
        headers = [(n, v) for n, v in response.headers.raw() if n.lower() != b"connection"]
        await self._send(
            {
                "type": f"{prefix}.response.start",
                "status": response.status_code,
                "headers": headers,
            }
        )
        await self._send({"type": f"{prefix}.response.body", "body": response.body})

    async def _frames(self, data: bytes) -> bool:
        """The connection's frames, as ASGI messages; True if any was sent.
        A message's fragments are joined (ASGI has none); a ping (none is
        expected: keepalive is off) is answered as a client would."""
        if self._partial:
            data = self._partial + data
        frames, self._partial = _split_frames(data)
        sent = False
        for opcode, final, payload in frames:
            if opcode == _CLOSE:
                code = int.from_bytes(payload[:2], "big") if payload else 1005
                reason = payload[2:].decode("utf-8", "replace")
                self._close_reply = _close_frame(code, reason)  # the echo RFC 6455 asks for
                sent = await self.send_close(code, reason) or sent
                continue
            if opcode == _PING:
                self._incoming += _client_frame(0xA, payload)
                continue
            if opcode > _BINARY:
                continue  # a pong
            if opcode != _CONTINUATION:
                self._opcode = opcode
            if not final:
                self._pieces.append(payload)
                continue
            if self._pieces:
                self._pieces.append(payload)
                payload = b"".join(self._pieces)
                self._pieces.clear()
            if not self.disconnected and not self.close_sent:
                if self._opcode == _TEXT:
                    await self._send({"type": "websocket.send", "text": payload.decode()})
                else:
                    await self._send({"type": "websocket.send", "bytes": payload})
                sent = True
        return sent

    async def send_close(self, code: int, reason: str) -> bool:
        """``websocket.close``, once, unless the client already left."""
        if self.disconnected or self.close_sent:
            return False
        self.close_sent = True
        await self._send({"type": "websocket.close", "code": code, "reason": reason})
        # The closing handshake with the client is the ASGI server's now
        # (which may be stopping, no longer reading it): the connection
        # reads the client's answer, as a compliant client gives it, and
        # the end. A receive() in progress is interrupted for them: what
        # the client sends after our close is discarded all the same.
        self._incoming += self._close_reply
        self._eof = True
        if self._reading is not None:
            self._reading.cancel()
        return True

    async def wait_send_all_might_not_block(self) -> None:
        """Returns at once: whether ``send`` will wait, only the ASGI server knows."""
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """Close the stream (the connection is done with it); the ASGI
        server's side is left to :func:`._bridge.serve_scope`."""
        self._closed = True
        await trio.lowlevel.checkpoint()
