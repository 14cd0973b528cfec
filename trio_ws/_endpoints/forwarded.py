"""Who the client is behind a reverse proxy: the ``trusted_proxies`` setting,
and reading ``X-Forwarded-For`` or ``Forwarded`` (RFC 7239) with it.

Pure parsing, no I/O. The server asks :meth:`TrustedProxies.client` once per
connection, after the opening handshake, with the socket's peer address and
the request's headers; the answer is what ``ws.remote_address`` reports.

The rule. The header is a list of addresses, each appended by one hop: the
client's own entries (anything it likes) on the left, then one entry per
proxy, each the address that proxy saw its connection come from. Only the
entries appended by proxies we trust are believable, so the list is read
from the right: starting from the socket's peer (which must be trusted, or
the header is not looked at), every trusted address is a proxy of ours and
is skipped; the first address that is not trusted is the client. When every
address is trusted, the leftmost is the client. The leftmost entry is never
taken on its own: the client writes it.

An entry that cannot be read where the walk reaches it (a malformed address,
or a ``Forwarded`` field that is not valid RFC 7239) ends the walk: the
client is then the last address a trusted hop vouched for, which is the
socket's peer when the header's last entry is the bad one. Such requests
are logged at DEBUG; they never fail.

Only one header is read, the one the proxy is configured to set
(``forwarded_header``): a proxy that sets ``X-Forwarded-For`` passes a
client's own ``Forwarded`` header through untouched, so trusting "whichever
is present" would let any client choose its address.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Sequence
from typing import Any

import attrs

from .._http import Headers

__all__ = [
    "FORWARDED",
    "UNIX",
    "X_FORWARDED_FOR",
    "TrustedProxies",
    "forwarded_elements",
    "parse_node",
    "trusted_proxies_from",
]

logger = logging.getLogger("trio_ws")

#: The ``trusted_proxies`` entry that trusts peers on a Unix socket.
UNIX = "unix"
#: The two headers ``forwarded_header`` may name (compared without case).
X_FORWARDED_FOR = "X-Forwarded-For"
FORWARDED = "Forwarded"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: An address as ``remote_address`` reports one from a header: ``(host,
#: port)``, port 0 when the header gives none (or an obfuscated one).
Node = tuple[str, int]

# RFC 7230 token characters, and RFC 7239's obfuscated identifiers.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_OBFUSCATED = re.compile(r"_[A-Za-z0-9._-]+")
_PORT = re.compile(r"[0-9]{1,5}")
# One forwarded-pair: a token, "=", then a token or a quoted-string.
_PAIR = re.compile(
    r"[ \t]*(?P<name>[!#$%&'*+\-.^_`|~0-9A-Za-z]+)="
    r'(?:(?P<token>[!#$%&\'*+\-.^_`|~0-9A-Za-z]+)|"(?P<quoted>(?:[^"\\]|\\.)*)")[ \t]*'
)
_QUOTED_PAIR = re.compile(r"\\(.)")


class _Malformed:
    """An entry that could not be read (see the module docstring)."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


def forwarded_elements(value: str) -> list[dict[str, str]]:
    """One ``Forwarded`` header field (RFC 7239 section 4) as its elements,
    each a dict of its pairs with names lowercased and quoted values
    unquoted. Empty list elements are skipped. Raises ValueError when the
    field does not follow the grammar, or an element repeats a name."""
    elements: list[dict[str, str]] = []
    current: dict[str, str] = {}
    position = 0
    end = len(value)
    while True:
        while position < end and value[position] in " \t":
            position += 1
        if position < end and value[position] not in ",;":
            match = _PAIR.match(value, position)
            if match is None:
                raise ValueError(f"not a forwarded-pair at offset {position}: {value!r}")
            name = match["name"].lower()
            if name in current:
                raise ValueError(f"{name}= twice in one element: {value!r}")
            quoted = match["quoted"]
            text = match["token"] if quoted is None else _QUOTED_PAIR.sub(r"\1", quoted)
            current[name] = text
            position = match.end()
        if position >= end:
            break
        separator = value[position]
        if separator == ",":
            if current:
                elements.append(current)
            current = {}
        elif separator != ";":
            raise ValueError(f"expected ',' or ';' at offset {position}: {value!r}")
        position += 1
    if current:
        elements.append(current)
    return elements


def _port(text: str) -> int:
    if _OBFUSCATED.fullmatch(text):
        return 0
    if not _PORT.fullmatch(text) or not 0 < int(text) <= 65535:
        raise ValueError(f"not a port: {text!r}")
    return int(text)


def parse_node(text: str, *, bare_ipv6: bool = False) -> Node:
    """An address as a proxy header gives it, as ``(host, port)``: an IPv4
    address, ``[IPv6]`` (or a bare IPv6 address with ``bare_ipv6``, as
    X-Forwarded-For has them), either with an optional ``:port``;
    ``unknown``; or an obfuscated identifier (``_hidden``). Addresses are
    normalised (``2001:DB8::0001`` gives ``2001:db8::1``); the port is 0
    when absent or obfuscated. Raises ValueError for anything else."""
    if text.lower() == "unknown":
        return "unknown", 0
    if _OBFUSCATED.fullmatch(text):
        return text, 0
    port = 0
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise ValueError(f"unclosed '[': {text!r}")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"junk after ']': {text!r}")
            port = _port(rest[1:])
        if _OBFUSCATED.fullmatch(host) or host.lower() == "unknown":
            raise ValueError(f"not an IPv6 address in brackets: {text!r}")
        return str(ipaddress.IPv6Address(host)), port
    if bare_ipv6 and text.count(":") > 1:
        return str(ipaddress.IPv6Address(text)), 0
    host, colon, rest = text.partition(":")
    if colon:
        port = _port(rest)
    if host.lower() == "unknown" or _OBFUSCATED.fullmatch(host):
        return host, port
    return str(ipaddress.IPv4Address(host)), port


def _forwarded_nodes(lines: list[str]) -> list[Node | _Malformed]:
    nodes: list[Node | _Malformed] = []
    for line in lines:
        try:
            elements = forwarded_elements(line)
        except ValueError as exc:
            nodes.append(_Malformed(str(exc)))
            continue
        for element in elements:
            # An element without for= is a hop that did not say who it
            # talked to: as RFC 7239 says of "unknown".
            try:
                nodes.append(parse_node(element.get("for", "unknown")))
            except ValueError as exc:
                nodes.append(_Malformed(str(exc)))
    return nodes


def _x_forwarded_for_nodes(lines: list[str]) -> list[Node | _Malformed]:
    nodes: list[Node | _Malformed] = []
    for line in lines:
        for entry in line.split(","):
            entry = entry.strip(" \t")
            if not entry:
                continue
            try:
                nodes.append(parse_node(entry, bare_ipv6=True))
            except ValueError as exc:
                nodes.append(_Malformed(str(exc)))
    return nodes


def _ip(host: Any) -> IPAddress | None:
    """``host`` as an IP address (IPv4-mapped IPv6 as IPv4), or None."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@attrs.frozen
class TrustedProxies:
    """A server's ``trusted_proxies`` and ``forwarded_header``, checked."""

    networks: tuple[IPNetwork, ...]
    #: Peers on a Unix socket are trusted (the ``"unix"`` entry).
    unix: bool
    #: The header read: ``"x-forwarded-for"`` or ``"forwarded"``.
    header: str

    @classmethod
    def parse(cls, entries: Sequence[str], header: str = X_FORWARDED_FOR) -> TrustedProxies:
        """Check ``entries`` (addresses, networks such as ``"10.0.0.0/8"``,
        and ``"unix"``) and ``header``. Raises TypeError for a single string
        instead of a sequence, ValueError naming a bad entry or header."""
        if isinstance(entries, (str, bytes)):
            raise TypeError(
                f"trusted_proxies must be a list of addresses, not one string: [{entries!r}]?"
            )
        _check_header(header)
        networks: list[IPNetwork] = []
        unix = False
        for entry in entries:
            if entry == UNIX:
                unix = True
                continue
            try:
                networks.append(ipaddress.ip_network(str(entry)))
            except ValueError as exc:
                raise ValueError(
                    f"trusted_proxies: {entry!r} is not an IP address, a network "
                    f"(such as '10.0.0.0/8') or 'unix' ({exc})"
                ) from None
        return cls(tuple(networks), unix, header.lower())

    def trusts(self, peer: Any) -> bool:
        """Whether a socket peer address is a trusted proxy: ``(host, port,
        ...)`` for TCP, a ``str`` or ``bytes`` path for a Unix socket (often
        empty: clients' sockets are rarely bound)."""
        if isinstance(peer, tuple):
            return self._trusts_host(peer[0])
        if isinstance(peer, (str, bytes)):
            return self.unix
        return False

    def _trusts_host(self, host: Any) -> bool:
        address = _ip(host)
        return address is not None and any(address in network for network in self.networks)

    def client(self, peer: Any, headers: Headers) -> Any:
        """The client's address for a connection from ``peer`` (its socket's
        peer address) with the request ``headers``: ``peer`` itself unless it
        is trusted and sent the header; else the address the header's chain
        names (see the module docstring), as ``(host, port)``."""
        if not self.trusts(peer):
            return peer
        lines = headers.get_all(self.header)
        if not lines:
            return peer
        if self.header == "forwarded":
            nodes = _forwarded_nodes(lines)
        else:
            nodes = _x_forwarded_for_nodes(lines)
        vouched: Any = peer
        for node in reversed(nodes):
            if isinstance(node, _Malformed):
                logger.debug("unreadable %s header from %r: %s", self.header, peer, node.why)
                return vouched
            if not self._trusts_host(node[0]):
                return node
            vouched = node
        return vouched


def trusted_proxies_from(
    trusted_proxies: Sequence[str] | None, forwarded_header: str
) -> TrustedProxies | None:
    """The server setting: None (the default) trusts nobody and reads no
    header. Raises as :meth:`TrustedProxies.parse`."""
    if trusted_proxies is None:
        _check_header(forwarded_header)
        return None
    return TrustedProxies.parse(trusted_proxies, forwarded_header)


def _check_header(header: str) -> None:
    if not isinstance(header, str) or header.lower() not in (
        X_FORWARDED_FOR.lower(),
        FORWARDED.lower(),
    ):
        raise ValueError(
            f"forwarded_header must be {X_FORWARDED_FOR!r} or {FORWARDED!r}, not {header!r}"
        )
