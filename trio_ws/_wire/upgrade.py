"""The opening handshake's HTTP heads, read and written without h11 and
wsproto's handshake machinery: the fast paths of both sides.

Nearly every upgrade is the same plain shape: ``GET``, HTTP/1.1, a handful
of well-formed header fields, one valid key; nearly every answer a plain
101. This module reads exactly those shapes and nothing else:

- server side, :func:`parse_upgrade` takes a plain, valid upgrade request
  and :func:`accept_response` writes the 101 (as wsproto would, byte for
  byte); for any other request the server takes its general path (h11
  parses, wsproto validates and answers), which decides what is wrong and
  how to say so. What this side accepts, the general path accepts too.
- client side, :func:`upgrade_request` writes the request (None when a
  header given by the user is not plain: then h11 writes it, and refuses
  what it must), :func:`split_head` reads a plain response head (None: h11
  reads it), and :func:`check_accept` validates a 101's fields, whichever
  parser read them, with the checks and messages of wsproto's client.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Sequence
from typing import NamedTuple

from wsproto.extensions import Extension

__all__ = [
    "Accepted",
    "BadAccept",
    "UpgradeHead",
    "accept_response",
    "accept_token",
    "agree_extensions",
    "check_accept",
    "h11_request_fields",
    "new_key",
    "parse_upgrade",
    "split_head",
    "upgrade_request",
    "valid_host",
    "valid_key",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: ``GET target HTTP/1.1``, the target visible ASCII (as h11 requires).
_REQUEST_LINE = re.compile(rb"GET ([!-~]+) HTTP/1\.1")
#: A header field: a token name, then a value of visible ASCII with inner
#: spaces or tabs, surrounding whitespace left out. No obs-fold, no obs-text
#: (bytes above 0x7F): requests with those take the general path.
_FIELD = re.compile(rb"([-!#$%&'*+.^_`|~0-9A-Za-z]+):[ \t]*((?:[!-~]+[ \t]+)*[!-~]+)?[ \t]*")

#: Fields that must appear exactly once on the fast path.
_ONCE = (b"host", b"connection", b"upgrade", b"sec-websocket-key", b"sec-websocket-version")
#: Fields that send the request down the general path: a request body is
#: h11's business.
_GENERAL = (b"content-length", b"transfer-encoding")


class UpgradeHead(NamedTuple):
    """A plain, valid upgrade request's head, as :func:`parse_upgrade` read it."""

    #: The request target, for example ``b"/chat?room=1"``.
    target: bytes
    #: Every header field as sent: ``(name, value)``, names in their case.
    headers: list[tuple[bytes, bytes]]
    #: The Sec-WebSocket-Key.
    key: bytes
    #: The extension offers, split at commas as wsproto splits them.
    extensions: list[str]


def valid_key(key: bytes) -> bool:
    """Whether a Sec-WebSocket-Key is base64 of 16 bytes (RFC 6455 4.1)."""
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        return False


def valid_host(host: bytes) -> bool:
    """Whether a Host header is ASCII that wsproto can decode as IDNA."""
    if not host.isascii():
        return False
    try:
        host.decode("idna")
    except UnicodeError:
        return False
    return True


def split_head(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
    """A message head (start line and header fields, ending with an empty
    line, ``\\r\\n`` line ends) taken apart: its start line and its fields as
    sent, surrounding whitespace left out. None when a line is not plain
    (see ``_FIELD``)."""
    lines = head.split(b"\r\n")
    if len(lines) < 3 or lines[-1] or lines[-2]:
        return None
    fields = []
    for line in lines[1:-2]:
        field = _FIELD.fullmatch(line)
        if field is None:
            return None
        fields.append((field.group(1), field.group(2) or b""))
    return lines[0], fields


def parse_upgrade(head: bytes) -> UpgradeHead | None:
    """Read a request head that is a plain, valid WebSocket upgrade over
    HTTP/1.1. None for anything else: another method or version, a field
    this parser does not take apart, a missing, repeated or invalid upgrade
    field, or a request with a body."""
    split = split_head(head)
    if split is None:
        return None
    request = _REQUEST_LINE.fullmatch(split[0])
    if request is None:
        return None
    headers = split[1]
    seen: dict[bytes, bytes] = {}
    extensions: list[str] = []
    for name, value in headers:
        lower = name.lower()
        if lower in _ONCE:
            if lower in seen:
                return None
            seen[lower] = value
        elif lower == b"sec-websocket-extensions":
            extensions.extend(piece.decode("ascii").strip() for piece in value.split(b","))
        elif lower in _GENERAL:
            return None
    if len(seen) != len(_ONCE):
        return None
    key = seen[b"sec-websocket-key"]
    tokens = seen[b"connection"].split(b",")
    if (
        seen[b"upgrade"].lower() != b"websocket"
        or seen[b"sec-websocket-version"] != b"13"
        or not any(token.strip().lower() == b"upgrade" for token in tokens)
        or not valid_key(key)
        or not valid_host(seen[b"host"])
    ):
        return None
    return UpgradeHead(request.group(1), headers, key, extensions)


def agree_extensions(offers: Sequence[str], supported: Sequence[Extension]) -> bytes | None:
    """The Sec-WebSocket-Extensions value of the answer to ``offers`` (None:
    no extension agreed): each supported extension is asked, in the client's
    order, about every offer of its name, as wsproto's server does."""
    accepted: dict[str, bytes | None] = {}
    for offer in offers:
        name = offer.split(";", 1)[0].strip()
        for extension in supported:
            if extension.name != name:
                continue
            answer = extension.accept(offer)
            if answer is True:
                accepted[name] = None
            elif isinstance(answer, str):
                accepted[name] = answer.encode("ascii")
    if not accepted:
        return None
    return b", ".join(
        name.encode("ascii") + (b"; " + params if params else b"")
        for name, params in accepted.items()
    )


def accept_token(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept answering this Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def accept_response(key: bytes, subprotocol: str | None, extensions: bytes | None) -> bytes:
    """The 101 response accepting an upgrade with this key, with the chosen
    subprotocol and agreed extensions (None: none)."""
    token = accept_token(key)
    head = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + token + b"\r\n"
    )
    if subprotocol is not None:
        head += b"Sec-WebSocket-Protocol: " + subprotocol.encode("ascii") + b"\r\n"
    if extensions is not None:
        head += b"Sec-WebSocket-Extensions: " + extensions + b"\r\n"
    return head + b"\r\n"


# -- the client's side -------------------------------------------------------------


def new_key() -> bytes:
    """A fresh Sec-WebSocket-Key: 16 random bytes in base64."""
    return base64.b64encode(os.urandom(16))


def _offers(extensions: Sequence[Extension]) -> bytes | None:
    """The Sec-WebSocket-Extensions value offering ``extensions`` (None:
    nothing to offer), as wsproto's client writes it."""
    offers: dict[str, str | bool] = {}
    for extension in extensions:
        offers[extension.name] = extension.offer()
    parts = []
    for name, params in offers.items():
        if params is True:
            parts.append(name.encode("ascii"))
        elif isinstance(params, str):
            parts.append(name.encode("ascii") + b"; " + params.encode("ascii"))
    return b", ".join(parts) if parts else None


def h11_request_fields(
    host: str, key: bytes, subprotocols: Sequence[str], extensions: Sequence[Extension]
) -> list[tuple[bytes, bytes]]:
    """The handshake's fields of the upgrade request, for h11 to write."""
    fields = [
        (b"Host", host.encode("idna")),
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Key", key),
        (b"Sec-WebSocket-Version", b"13"),
    ]
    if subprotocols:
        fields.append((b"Sec-WebSocket-Protocol", ", ".join(subprotocols).encode("ascii")))
    offers = _offers(extensions)
    if offers is not None:
        fields.append((b"Sec-WebSocket-Extensions", offers))
    return fields


def upgrade_request(
    target: str,
    host: str,
    key: bytes,
    subprotocols: Sequence[str],
    extensions: Sequence[Extension],
    extra: Sequence[tuple[bytes, bytes]],
) -> bytes | None:
    """The upgrade request, as wsproto's client writes it: the handshake's
    fields, then ``extra``. None when one of ``extra`` is not a plain field
    (a token name, a value of visible ASCII with inner spaces): h11 then
    writes the request, and refuses what it must."""
    lines = [b"GET " + target.encode("ascii") + b" HTTP/1.1"]
    lines += [
        name + b": " + value
        for name, value in h11_request_fields(host, key, subprotocols, extensions)
    ]
    for name, value in extra:
        line = name + b": " + value
        if _FIELD.fullmatch(line) is None or value != value.strip(b" \t"):
            return None
        lines.append(line)
    return b"\r\n".join(lines) + b"\r\n\r\n"


class BadAccept(ValueError):
    """A 101 that does not accept the upgrade that was sent (the message
    says why, as wsproto's client says it)."""


class Accepted(NamedTuple):
    """What a valid 101 agreed."""

    subprotocol: str | None
    #: The offered extensions the server accepted, finalized.
    extensions: list[Extension]
    #: The response's other fields.
    headers: list[tuple[bytes, bytes]]


def check_accept(
    fields: Sequence[tuple[bytes, bytes]],
    key: bytes,
    subprotocols: Sequence[str],
    extensions: Sequence[Extension],
) -> Accepted:
    """Validate the fields of a 101 answering an upgrade with this key,
    subprotocols and extension offers, and finalize the extensions it
    accepts. Raises BadAccept (or another ValueError, for a value that is not
    ASCII) when it does not accept that upgrade."""
    accept = None
    connection: list[bytes] | None = None
    answers: list[str] = []
    subprotocol = None
    upgrade = b""
    headers = []
    for name, value in fields:
        lower = name.lower()
        if lower == b"connection":
            connection = value.split(b",")
        elif lower == b"sec-websocket-extensions":
            answers = [piece.decode("ascii").strip() for piece in value.split(b",")]
        elif lower == b"sec-websocket-accept":
            accept = value
        elif lower == b"sec-websocket-protocol":
            subprotocol = value.decode("ascii")
        elif lower == b"upgrade":
            upgrade = value
        else:
            headers.append((lower, value))
    if connection is None or not any(t.strip().lower() == b"upgrade" for t in connection):
        raise BadAccept("Missing header, 'Connection: Upgrade'")
    if upgrade.lower() != b"websocket":
        raise BadAccept("Missing header, 'Upgrade: websocket'")
    if accept != accept_token(key):
        raise BadAccept("Bad accept token")
    if subprotocol is not None and subprotocol not in subprotocols:
        raise BadAccept(f"unrecognized subprotocol {subprotocol}")
    agreed = []
    for answer in answers:
        answered = answer.split(";", 1)[0].strip()
        for extension in extensions:
            if extension.name == answered:
                extension.finalize(answer)
                agreed.append(extension)
                break
        else:
            raise BadAccept(f"unrecognized extension {answered}")
    return Accepted(subprotocol, agreed, headers)
