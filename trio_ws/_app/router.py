"""Routing: several endpoints on one server, by path, with typed parameters.

A :class:`Router` holds WebSocket routes and plain HTTP routes, each a path
template such as ``/chat/{room}`` or ``/items/{id:int}``. The server asks
it, before the upgrade, what a request is for (``resolve``): an unknown
path gets a real 404, a known path with another method a 405 with
``Allow``, an HTTP route its own answer, and a WebSocket route is upgraded
with the route's own settings and guard; its handler is then called with
the path parameters as keyword arguments (also on ``ws.path_params``).

Matching rules (docs/routing.md says them for users):

- Paths match whole, as sent, with no trailing-slash redirect (WebSocket
  clients do not follow redirects): ``/chat`` and ``/chat/`` are two paths.
- The request path is matched in its percent-encoded form; each parameter
  is then percent-decoded before its converter sees it, so ``{room}`` gets
  ``"a b"`` from ``a%20b``. A parameter other than ``path`` never spans
  segments, even when a segment holds an encoded slash (``%2F``).
- Static paths are looked up in a dict; templates are tried in the order
  they were added, and the first whose converters all accept wins. A
  converter that rejects a value (raises ValueError) means "no match".
"""

from __future__ import annotations

import re
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from .._conn.connection import WebSocket
from .._conn.lifecycle import endpoint_of
from .._endpoints.routes import Guard, HttpEndpoint, NoRoute, WebSocketEndpoint
from .._http import Request, Response
from .._options import Options

__all__ = ["Converter", "Router"]

F = TypeVar("F", bound=Callable[..., Any])

#: Methods a WebSocket route allows (an upgrade is a GET).
_WS_METHODS = ("GET",)


@attrs.frozen
class Converter:
    """A parameter type: ``regex`` says what one value looks like (in the
    percent-encoded path), ``to_python`` turns the decoded text into the
    value (ValueError: not a match), ``to_url`` the value back into text."""

    regex: str
    to_python: Callable[[str], Any] = str
    to_url: Callable[[Any], str] = str


def _number(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(text)
    return value


CONVERTERS: Mapping[str, Converter] = {
    "str": Converter(r"[^/]+"),
    "int": Converter(r"[0-9]+", int),
    "float": Converter(r"[0-9]+(?:\.[0-9]+)?", _number),
    "uuid": Converter(
        r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", uuid.UUID
    ),
    "path": Converter(r".+"),
}

_PARAMETER = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_][A-Za-z0-9_]*))?}")


@attrs.frozen
class _Template:
    """A parsed path template."""

    text: str
    #: None for a static path.
    regex: re.Pattern[str] | None
    #: (name, converter) in order.
    parameters: tuple[tuple[str, Converter], ...]
    #: The template split around its parameters, for url_for.
    pieces: tuple[str, ...]


def _parse(template: str, converters: Mapping[str, Converter]) -> _Template:
    if not template.startswith("/"):
        raise ValueError(f"a route's path starts with '/': {template!r}")
    pattern = ""
    pieces: list[str] = []
    parameters: list[tuple[str, Converter]] = []
    position = 0
    for found in _PARAMETER.finditer(template):
        static = template[position : found.start()]
        if "{" in static or "}" in static:
            raise ValueError(f"bad parameter in {template!r}")
        name, kind = found.group(1), found.group(2) or "str"
        if kind not in converters:
            raise ValueError(f"unknown converter {kind!r} in {template!r}: register it first")
        if name in (n for n, _ in parameters):
            raise ValueError(f"parameter {name!r} twice in {template!r}")
        converter = converters[kind]
        pattern += re.escape(_quote(static)) + f"(?P<{name}>{converter.regex})"
        pieces.append(static)
        parameters.append((name, converter))
        position = found.end()
    rest = template[position:]
    if "{" in rest or "}" in rest:
        raise ValueError(f"bad parameter in {template!r}")
    pieces.append(rest)
    if not parameters:
        return _Template(template, None, (), (template,))
    regex = re.compile(pattern + re.escape(_quote(rest)))
    return _Template(template, regex, tuple(parameters), tuple(pieces))


def _quote(text: str) -> str:
    """A template's static text as clients send it (percent-encoded)."""
    return urllib.parse.quote(text, safe="/:@!$&'()*+,;=-._~")


@attrs.frozen
class _Route:
    template: _Template
    name: str | None
    #: "websocket" or "http".
    kind: str
    handler: Callable[..., Any]
    methods: tuple[str, ...]
    guard: Guard | None = None
    subprotocols: tuple[str, ...] | None = None
    origins: tuple[Any, ...] | None = None
    options: Mapping[str, Any] = attrs.field(factory=dict)


class Router:
    """WebSocket and plain HTTP routes by path, for :func:`serve` in place
    of a handler::

        router = trio_ws.Router()

        @router.websocket("/chat/{room}")
        async def chat(ws: trio_ws.WebSocket, room: str) -> None: ...

        @router.http("/health")
        def health(request: trio_ws.Request) -> trio_ws.Response:
            return trio_ws.Response(200, [], "ok")

        await trio_ws.serve(router, "127.0.0.1", 8000)

    Parameters: ``{name}`` (one path segment, str), ``{name:int}``,
    ``{name:float}``, ``{name:uuid}``, ``{name:path}`` (the rest of the
    path, slashes included), and converters registered with
    :meth:`converter`."""

    def __init__(self) -> None:
        self._converters: dict[str, Converter] = dict(CONVERTERS)
        self._static: dict[str, list[_Route]] = {}
        # Templates by their first path segment when it is static (only
        # those are tried for a path starting with it), and the others;
        # each with its rank, so that matches keep the order of adding.
        self._by_segment: dict[str, list[tuple[int, _Route]]] = {}
        self._templated: list[tuple[int, _Route]] = []
        self._count = 0
        self._named: dict[str, _Route] = {}

    def converter(self, name: str, converter: Converter) -> None:
        """Register a parameter type for the templates added after this."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"a converter's name is an identifier, not {name!r}")
        re.compile(converter.regex)
        self._converters[name] = converter

    # -- adding routes -----------------------------------------------------------

    def add_websocket(
        self,
        path: str,
        handler: Callable[..., Awaitable[None]],
        *,
        name: str | None = None,
        guard: Guard | None = None,
        subprotocols: Sequence[str] | None = None,
        origins: Sequence[Any] | None = None,
        **options: Any,
    ) -> None:
        """A WebSocket endpoint at ``path``: ``handler(ws, **params)`` runs
        each connection. ``guard(request, **params)`` runs after matching and
        before the upgrade (None: go on; a Response: refuse with it; may be
        async). ``subprotocols``, ``origins`` and options (any
        :class:`Options` field: ``max_message_size``, ``compression``,
        ``ping_interval``...) replace the server's for this route."""
        if isinstance(subprotocols, str):
            raise TypeError("subprotocols is a sequence of names, not one string")
        unknown = set(options) - set(attrs.fields_dict(Options))
        if unknown:
            raise TypeError(f"unknown option {sorted(unknown)[0]!r} for route {path!r}")
        attrs.evolve(Options(), **options)  # the values' own checks, now
        self._add(
            _Route(
                _parse(path, self._converters),
                name,
                "websocket",
                handler,
                _WS_METHODS,
                guard,
                None if subprotocols is None else tuple(subprotocols),
                None if origins is None else tuple(origins),
                dict(options),
            )
        )

    def add_http(
        self,
        path: str,
        handler: Callable[..., Response | Awaitable[Response]],
        *,
        methods: Iterable[str] = ("GET", "HEAD"),
        name: str | None = None,
    ) -> None:
        """A plain HTTP endpoint at ``path``: ``handler(request, **params)``
        returns the Response (may be async); the connection then closes.
        A HEAD is answered as its GET would be, without the body."""
        allowed = tuple(method.upper() for method in methods)
        if "GET" in allowed and "HEAD" not in allowed:
            allowed += ("HEAD",)
        self._add(_Route(_parse(path, self._converters), name, "http", handler, allowed))

    def websocket(self, path: str, **settings: Any) -> Callable[[F], F]:
        """Decorator form of :meth:`add_websocket`."""

        def add(handler: F) -> F:
            self.add_websocket(path, handler, **settings)
            return handler

        return add

    def http(self, path: str, **settings: Any) -> Callable[[F], F]:
        """Decorator form of :meth:`add_http`."""

        def add(handler: F) -> F:
            self.add_http(path, handler, **settings)
            return handler

        return add

    def mount(self, prefix: str, router: Router) -> None:
        """Add every route of ``router`` under ``prefix`` (``"/api"``), with
        its converters; named routes keep their names."""
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError(f"a prefix starts with '/' and does not end with one: {prefix!r}")
        for name, converter in router._converters.items():
            self._converters.setdefault(name, converter)
        for route in router._routes():
            template = _parse(prefix + route.template.text, self._converters)
            self._add(attrs.evolve(route, template=template))

    def _routes(self) -> list[_Route]:
        routes = [route for group in self._static.values() for route in group]
        ranked = self._templated + [r for group in self._by_segment.values() for r in group]
        return routes + [route for _, route in sorted(ranked, key=lambda pair: pair[0])]

    def _add(self, route: _Route) -> None:
        if route.name is not None:
            if route.name in self._named:
                raise ValueError(f"two routes are named {route.name!r}")
            self._named[route.name] = route
        self._count += 1
        if route.template.regex is None:
            self._static.setdefault(_quote(route.template.text), []).append(route)
            return
        first = route.template.text.split("/", 2)[1]
        if "{" in first or "/" not in route.template.text[1:]:
            self._templated.append((self._count, route))
        else:
            self._by_segment.setdefault(_quote(first), []).append((self._count, route))

    # -- using them ----------------------------------------------------------------

    def url_for(self, name: str, /, **params: Any) -> str:
        """The path of the route named ``name`` with these parameters
        (percent-encoded). Raises KeyError for an unknown name, TypeError for
        missing or extra parameters."""
        route = self._named[name]
        template = route.template
        names = [n for n, _ in template.parameters]
        if set(params) != set(names):
            raise TypeError(f"route {name!r} takes parameters {names}, not {sorted(params)}")
        path = _quote(template.pieces[0])
        for (param, converter), piece in zip(
            template.parameters, template.pieces[1:], strict=True
        ):
            safe = "/" if converter.regex == CONVERTERS["path"].regex else ""
            path += urllib.parse.quote(converter.to_url(params[param]), safe=safe) + _quote(piece)
        return path

    def resolve(self, request: Request) -> NoRoute | HttpEndpoint | WebSocketEndpoint:
        """What ``request`` is for (see the module's matching rules)."""
        path, method = request.path, request.method
        allow: list[str] = []
        candidates: list[tuple[_Route, Mapping[str, Any]]] = []
        for route in self._static.get(path, ()):
            candidates.append((route, {}))
        templated = self._templated
        bucket = self._by_segment.get(path.split("/", 2)[1]) if self._by_segment else None
        if bucket:
            templated = sorted(templated + bucket, key=lambda pair: pair[0])
        for _, route in templated:
            matched = _match(route.template, path)
            if matched is not None:
                candidates.append((route, matched))
        # An upgrade goes to a WebSocket route, anything else to an HTTP
        # route, when the path has both; otherwise to the first that allows
        # the method (an HTTP route answers upgrades too; a plain GET of a
        # WebSocket route gets 426).
        upgrade = request.is_upgrade
        fallback: tuple[_Route, Mapping[str, Any]] | None = None
        for route, params in candidates:
            if method not in route.methods:
                allow.extend(m for m in route.methods if m not in allow)
            elif (route.kind == "websocket") == upgrade:
                return _endpoint(route, params)
            elif fallback is None:
                fallback = route, params
        if fallback is not None:
            return _endpoint(*fallback)
        return NoRoute(tuple(allow))

    async def __call__(self, ws: WebSocket) -> None:
        """Run the handler of the route the connection was accepted for."""
        handler = endpoint_of(ws)
        if handler is None:
            raise RuntimeError(f"{ws!r} was not accepted through this router")
        await handler(ws, **ws.path_params)


def _endpoint(route: _Route, params: Mapping[str, Any]) -> HttpEndpoint | WebSocketEndpoint:
    if route.kind == "http":
        return HttpEndpoint(route.handler, params)
    return WebSocketEndpoint(
        route.handler, params, route.guard, route.subprotocols, route.origins, route.options
    )


def _match(template: _Template, path: str) -> dict[str, Any] | None:
    assert template.regex is not None
    found = template.regex.fullmatch(path)
    if found is None:
        return None
    params = {}
    for name, converter in template.parameters:
        raw = found.group(name)
        try:
            params[name] = converter.to_python(urllib.parse.unquote(raw, errors="strict"))
        except (ValueError, UnicodeDecodeError):
            return None
    return params
