"""HTTP data of the opening handshake: headers, requests, responses."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

import attrs

__all__ = ["Accept", "Headers", "HeadersLike", "Request", "Response"]


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _name(value: str | bytes) -> str:
    """A header field name, interned: every request repeats the same few.
    (Only an exact ``str`` can be interned; a subclass, such as a ``str``
    enum, is stored as the plain string it holds.)"""
    text = _text(value)
    return sys.intern(text if type(text) is str else str.__str__(text))


class Headers(Sequence[tuple[str, str]]):
    """An immutable, ordered list of HTTP header fields.

    Lookups by name ignore case; names keep the case they were given in.
    ``headers["Origin"]`` returns the first value (``KeyError`` if absent),
    ``headers.get_all("Cookie")`` every value.
    """

    # Kept flat, names and values alternating, with the names interned: each
    # connection keeps its request's headers, and this takes about half the
    # memory of a tuple of pairs.
    __slots__ = ("_flat",)

    def __init__(self, fields: HeadersLike = ()) -> None:
        if isinstance(fields, Headers):
            self._flat: tuple[str, ...] = fields._flat
            return
        pairs = fields.items() if isinstance(fields, Mapping) else fields
        flat: list[str] = []
        for name, value in pairs:
            flat += (_name(name), _text(value))
        self._flat = tuple(flat)

    @property
    def _fields(self) -> tuple[tuple[str, str], ...]:
        flat = self._flat
        return tuple(zip(flat[::2], flat[1::2], strict=True))

    @classmethod
    def from_raw(cls, raw: Iterable[tuple[bytes, bytes]]) -> Headers:
        """Build from the ``(name, value)`` byte pairs h11 and wsproto produce."""
        return cls((name.decode("latin-1"), value.decode("latin-1")) for name, value in raw)

    def raw(self) -> list[tuple[bytes, bytes]]:
        """The fields as ``(name, value)`` byte pairs."""
        return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in self._fields]

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...
    @overload
    def get(self, name: str, default: str | None) -> str | None: ...

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        wanted = name.lower()
        flat = self._flat
        for i in range(0, len(flat), 2):
            if flat[i].lower() == wanted:
                return flat[i + 1]
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order."""
        wanted = name.lower()
        flat = self._flat
        return [flat[i + 1] for i in range(0, len(flat), 2) if flat[i].lower() == wanted]

    def tokens(self, name: str) -> list[str]:
        """Comma-separated tokens across every ``name`` field, stripped (for example
        the subprotocols of ``Sec-WebSocket-Protocol``)."""
        return [
            token.strip()
            for value in self.get_all(name)
            for token in value.split(",")
            if token.strip()
        ]

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            value = self.get(key)
            if value is None:
                raise KeyError(key)
            return value
        return self._fields[key]

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            return self.get(name) is not None
        return name in self._fields

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._flat) // 2

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._flat == other._flat
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._flat)

    def __repr__(self) -> str:
        return f"Headers({list(self._fields)!r})"

    def __add__(self, other: HeadersLike) -> Headers:
        combined = Headers()
        combined._flat = self._flat + Headers(other)._flat
        return combined


#: What the API accepts wherever headers are given.
HeadersLike = Headers | Mapping[str, str] | Iterable[tuple[str, str]]


@attrs.frozen
class Request:
    """An HTTP request as the server received it (or as the client sent it)."""

    #: The request method, normally ``"GET"``.
    method: str
    #: The path without the query string, for example ``"/chat"``.
    path: str
    #: The query string without the ``?``, possibly empty.
    query: str
    #: All request header fields, including Host, Origin and Cookie.
    headers: Headers = attrs.field(factory=Headers, converter=Headers)

    @property
    def target(self) -> str:
        """The request target: path and query as sent on the request line."""
        return f"{self.path}?{self.query}" if self.query else self.path

    @property
    def host(self) -> str | None:
        """The Host header."""
        return self.headers.get("Host")

    @property
    def origin(self) -> str | None:
        """The Origin header (browsers always send it)."""
        return self.headers.get("Origin")

    @property
    def subprotocols(self) -> list[str]:
        """The subprotocols the client offered, in its order of preference."""
        return self.headers.tokens("Sec-WebSocket-Protocol")

    @property
    def is_upgrade(self) -> bool:
        """True when this is a WebSocket upgrade request (as opposed to plain HTTP)."""
        upgrade = {t.lower() for t in self.headers.tokens("Upgrade")}
        connection = {t.lower() for t in self.headers.tokens("Connection")}
        return "websocket" in upgrade and "upgrade" in connection

    @classmethod
    def from_target(cls, method: str, target: str, headers: HeadersLike = ()) -> Request:
        """Build from a raw request target such as ``"/chat?room=1"``."""
        path, _, query = target.partition("?")
        return cls(method, path or "/", query, Headers(headers))


def _body_bytes(body: str | bytes | bytearray | memoryview) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


@attrs.frozen
class Response:
    """An HTTP response: what ``process_request`` returns to answer a request
    itself, and what a client sees in :class:`ConnectionRejected`."""

    #: The status code.
    status_code: int
    #: Header fields. ``Content-Length`` is added when missing.
    headers: Headers = attrs.field(factory=Headers, converter=Headers)
    #: The body; ``str`` is sent as UTF-8.
    body: bytes = attrs.field(default=b"", converter=_body_bytes)

    @classmethod
    def text(
        cls, status_code: int, text: str, content_type: str = "text/plain; charset=utf-8"
    ) -> Response:
        """A response with a text body, for example ``Response.text(200, "ok")``."""
        return cls(status_code, [("Content-Type", content_type)], text.encode("utf-8"))


@attrs.frozen
class Accept:
    """What ``process_request`` returns to accept an upgrade with its own choices."""

    #: The subprotocol to use; it must be one the client offered. ``None``
    #: lets the server choose from its ``subprotocols`` as usual.
    subprotocol: str | None = None
    #: Extra header fields for the 101 response (for example Set-Cookie).
    headers: Headers = attrs.field(factory=Headers, converter=Headers)
