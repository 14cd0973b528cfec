"""Which forward proxy a client uses: proxy URLs, the environment's
``*_PROXY`` variables and ``NO_PROXY``. No I/O here: ``proxy`` opens the
tunnel that this chooses.

The rules (docs/proxies.md says the same, for users):

- ``connect(proxy=URL)`` always uses that proxy; ``NO_PROXY`` is not
  consulted. ``proxy=None`` (or False), and ``unix_path``, use none.
- ``proxy=True`` (the default) reads the environment at each connection
  attempt: ``https_proxy`` then ``HTTPS_PROXY`` for ``wss://``,
  ``http_proxy`` then ``HTTP_PROXY`` for ``ws://``, then ``all_proxy`` then
  ``ALL_PROXY``. The lower-case variable wins when both are set (as in
  urllib, requests and curl); an empty value counts as unset. As urllib
  does (CVE-2016-1000110, "httpoxy"), upper-case ``HTTP_PROXY`` is ignored
  when ``REQUEST_METHOD`` is set: in a CGI program it may come from a
  request's ``Proxy:`` header.
- ``no_proxy`` (else ``NO_PROXY``) lists hosts reached directly; see
  :func:`bypasses`. Loopback addresses get no special treatment: like
  requests, httpx and urllib, list them (``localhost,127.0.0.0/8,::1``).
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Mapping

import attrs

from .._errors import InvalidURL
from .url import WebSocketURL, basic_credentials

__all__ = ["ProxyURL", "bypasses", "parse_proxy_url", "proxy_from_environment"]

#: Proxy URL schemes, and the port each defaults to.
DEFAULT_PORTS = {
    "http": 80,
    "https": 443,
    "socks5": 1080,
    "socks5h": 1080,
    "socks4": 1080,
    "socks4a": 1080,
}


@attrs.frozen
class ProxyURL:
    """A forward proxy, parsed: its scheme, address and credentials
    (percent-decoded)."""

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)

    @property
    def is_socks(self) -> bool:
        return self.scheme.startswith("socks")

    @property
    def redacted(self) -> str:
        """The URL without the password, for messages: ``http://ann@proxy:3128``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = "" if self.username is None else urllib.parse.quote(self.username, safe="") + "@"
        return f"{self.scheme}://{user}{host}:{self.port}"

    @property
    def authorization(self) -> str | None:
        """The ``Proxy-Authorization`` value (Basic) for the credentials, if any."""
        return basic_credentials(self.username, self.password)


def parse_proxy_url(text: str, *, source: str = "proxy") -> ProxyURL:
    """Parse a proxy URL, ``scheme://[user[:password]@]host[:port][/]``.

    ``scheme`` is one of http, https, socks5, socks5h, socks4, socks4a; a
    value without ``://`` is taken as ``http://`` (as curl and requests
    do). Raises :class:`InvalidURL` (a ValueError) naming ``source`` (the
    argument or the variable that gave it) and the URL without its password.
    """
    if not isinstance(text, str):
        raise TypeError(f"{source} must be a URL string, True, False or None, not {text!r}")
    value = text.strip()
    if "://" not in value:
        value = "http://" + value
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise InvalidURL(f"{source}: {_redact(text)!r} is not a valid proxy URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise InvalidURL(
            f"{source}: {_redact(text)!r} is not a proxy URL: the scheme must be one of "
            + ", ".join(DEFAULT_PORTS)
        )
    if not host:
        raise InvalidURL(f"{source}: {_redact(text)!r} has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidURL(
            f"{source}: {_redact(text)!r}: a proxy URL has no path, query or fragment"
        )
    username = parts.username
    password = parts.password
    return ProxyURL(
        scheme=scheme,
        host=host,
        port=DEFAULT_PORTS[scheme] if port is None else port,
        username=None if username is None else urllib.parse.unquote(username),
        password=None if password is None else urllib.parse.unquote(password),
    )


def _redact(text: str) -> str:
    """``text`` with any password between ``://user:`` and ``@`` removed."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        return text
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}@{hostpart}"


def _variable(environ: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """The lower-case variable if set, else the upper-case one: (name, value);
    None when neither has a value."""
    for candidate in (name.lower(), name.upper()):
        # (One lookup per name: this runs at every connection attempt.)
        value = environ.get(candidate)
        if value is None:
            continue
        if candidate == "HTTP_PROXY" and "REQUEST_METHOD" in environ:
            continue  # httpoxy: a CGI request's Proxy: header
        value = value.strip()
        return (candidate, value) if value else None
    return None


def proxy_from_environment(url: WebSocketURL, environ: Mapping[str, str]) -> ProxyURL | None:
    """The proxy the environment gives for ``url``, or None (no variable
    set, or ``NO_PROXY`` lists its host). Raises :class:`InvalidURL` naming
    the variable for a value that is not a proxy URL."""
    first = "https_proxy" if url.secure else "http_proxy"
    found = _variable(environ, first) or _variable(environ, "all_proxy")
    if found is None:
        return None
    no_proxy = _variable(environ, "no_proxy")
    if no_proxy is not None and bypasses(no_proxy[1], url.host, url.port):
        return None
    name, value = found
    return parse_proxy_url(value, source=f"the {name} environment variable")


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _entry_matches(entry: str, host: str, port: int) -> bool:
    """One ``NO_PROXY`` entry against a host (lower case, no brackets or
    trailing dot) and port."""
    if entry == "*":
        return True
    if "/" in entry:  # a CIDR network: IP-address hosts only
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return False
        address = _ip(host)
        return address is not None and address in network
    if _ip(entry.strip("[]")) is None:
        # host:port, [v6]:port, or a name; an IPv6 address has several colons.
        name, colon, port_text = entry.rpartition(":")
        if colon and port_text.isdigit() and (name.startswith("[") or ":" not in name):
            if int(port_text) != port:
                return False
            entry = name
    address = _ip(entry.strip("[]"))
    if address is not None:
        return address == _ip(host)
    domain = entry.removeprefix("*").strip(".")
    return bool(domain) and (host == domain or host.endswith("." + domain))


def bypasses(no_proxy: str, host: str, port: int) -> bool:
    """True when the ``NO_PROXY`` value ``no_proxy`` lists ``host``:``port``.

    Entries are separated by commas (and blanks), compared without regard
    to case:

    - ``*`` alone: every host;
    - a domain, ``example.com``, ``.example.com`` or ``*.example.com``: that
      name and every name under it (``ws.example.com``), never
      ``badexample.com``;
    - an IP address (``10.1.2.3``, ``::1`` or ``[::1]``): a URL whose host
      is that address, written as an address (names are not resolved to
      check);
    - a network in CIDR notation (``10.0.0.0/8``, ``fd00::/8``): IP-address
      hosts in it;
    - any of these with ``:PORT`` (``example.com:8443``, ``[::1]:9000``):
      only on that port.
    """
    host = host.lower().rstrip(".")
    for raw in no_proxy.replace(" ", ",").replace("\t", ",").split(","):
        entry = raw.strip().lower()
        if entry and _entry_matches(entry, host, port):
            return True
    return False
