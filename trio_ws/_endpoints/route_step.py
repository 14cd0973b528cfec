"""The routing step of the server's handshake: with a router, what a
request is for, before anything else (see ``routes`` for the seam and
``_app/router.py`` for the router)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .._http import Request, Response
from .http_answers import error_response
from .policy import HandshakePolicy, Refusal, Refused
from .routes import HttpEndpoint, NoRoute, WebSocketEndpoint

__all__ = ["call_route_function", "route_request"]

logger = logging.getLogger("trio_ws")


async def call_route_function(
    what: str, request: Request, function: Callable[..., Any], params: Mapping[str, Any]
) -> Response | None:
    """Run a route's HTTP handler or guard (sync or async); its failure, or
    a result that is not a Response (or None), is a 500 logged at ERROR."""
    try:
        result = function(request, **params)
        if inspect.isawaitable(result):
            result = await result
    except Exception:
        logger.exception("%s failed for %s %s", what, request.method, request.target)
        return error_response(500, f"the server's {what} failed")
    if result is not None and not isinstance(result, Response):
        logger.error("%s returned %r; expected a Response or None", what, result)
        return error_response(500, f"the server's {what} failed")
    return result


async def route_request(
    request: Request, policy: HandshakePolicy
) -> tuple[HandshakePolicy, WebSocketEndpoint] | Refusal:
    """Step 1b, with a router: a 404 or 405, an HTTP route's answer, or the
    WebSocket route with the policy its own settings make."""
    assert policy.routes is not None
    found = policy.routes.resolve(request)
    if isinstance(found, NoRoute):
        if not found.allow:
            return Refusal(Refused.NOT_FOUND, error_response(404, f"no route for {request.path}"))
        allow = [("Allow", ", ".join(found.allow))]
        return Refusal(
            Refused.BAD_REQUEST, error_response(405, f"{request.method} is not allowed", allow)
        )
    if isinstance(found, HttpEndpoint):
        response = await call_route_function("HTTP route", request, found.handler, found.params)
        if response is None:
            response = error_response(500, "the server's HTTP route answered nothing")
        return Refusal(Refused.REJECTED if request.is_upgrade else Refused.HTTP, response)
    if found.subprotocols is not None or found.origins is not None or found.options:
        policy = attrs.evolve(
            policy,
            subprotocols=policy.subprotocols if found.subprotocols is None else found.subprotocols,
            origins=policy.origins if found.origins is None else found.origins,
            options=found.options_over(policy.options),
        )
    return policy, found
