"""ws:// and wss:// URLs."""

from __future__ import annotations

import base64
import urllib.parse

import attrs

from .._errors import InvalidURL

__all__ = ["WebSocketURL", "basic_credentials", "parse_url"]


@attrs.frozen
class WebSocketURL:
    """The parts of a WebSocket URL that a client needs."""

    secure: bool
    #: Host name or IP address, without IPv6 brackets.
    host: str
    port: int
    #: Path and query: the request target, for example ``"/chat?room=1"``.
    resource: str
    username: str | None = None
    password: str | None = None

    @property
    def default_port(self) -> int:
        return 443 if self.secure else 80

    @property
    def host_header(self) -> str:
        """The Host header: brackets around IPv6 addresses, the port unless default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == self.default_port else f"{host}:{self.port}"

    @property
    def authorization(self) -> str | None:
        """A Basic Authorization header value built from ``user:pass@``, if given."""
        return basic_credentials(self.username, self.password)


def basic_credentials(username: str | None, password: str | None) -> str | None:
    """``Basic ...`` for a URL's ``user:password@`` (None without a user):
    the value of an Authorization or Proxy-Authorization header."""
    if username is None:
        return None
    token = f"{username}:{password or ''}".encode()
    return "Basic " + base64.b64encode(token).decode("ascii")


def parse_url(url: str) -> WebSocketURL:
    """Parse a ``ws://`` or ``wss://`` URL. Raise :class:`InvalidURL` otherwise."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"{url!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise InvalidURL(f"{url!r} is not a WebSocket URL: the scheme must be ws or wss")
    if parts.fragment or url.endswith("#"):
        raise InvalidURL(f"{url!r}: a WebSocket URL cannot have a fragment (#...)")
    host = parts.hostname
    if not host:
        raise InvalidURL(f"{url!r} has no host")
    secure = scheme == "wss"
    if port is None:
        port = 443 if secure else 80
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    username = parts.username
    password = parts.password
    return WebSocketURL(
        secure=secure,
        host=host,
        port=port,
        resource=resource,
        username=None if username is None else urllib.parse.unquote(username),
        password=None if password is None else urllib.parse.unquote(password),
    )
