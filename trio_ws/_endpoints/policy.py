"""What a server accepts and how it refuses: the handshake's policy (its
settings for the opening handshake), the outcomes of a refused request, and
the Origin rules."""

from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable, Sequence

import attrs

from .._http import Accept, Request, Response
from .._options import Options
from .routes import Routes

__all__ = [
    "RETRY_AFTER",
    "HandshakePolicy",
    "OriginRule",
    "ProcessRequest",
    "Refusal",
    "Refused",
    "origin_allowed",
]

#: ``process_request``: look at a request, then return None (default
#: handling), a :class:`Response` (answer it and close), or an
#: :class:`Accept` (accept the upgrade with these choices). May be async.
ProcessRequest = Callable[
    [Request], Response | Accept | Awaitable[Response | Accept | None] | None
]


class Refused(str, enum.Enum):
    """Why a request was not upgraded: its key in ``ServerStats.rejected``.
    A str enum, so that each member equals (and hashes as) its plain string."""

    #: An HTTP or upgrade request the server cannot take: a 4xx answer.
    BAD_REQUEST = "bad_request"
    #: An Origin that ``origins`` does not allow: 403.
    ORIGIN = "origin"
    #: No connection slot left (``max_connections``): 503 with Retry-After.
    CAPACITY = "capacity"
    #: An upgrade answered by process_request's Response, or whose Accept
    #: the server could not send (500).
    REJECTED = "rejected"
    #: A plain HTTP request, answered (by process_request, or with 426).
    HTTP = "http"
    #: The client left before sending a request: nothing is answered.
    HANDSHAKE_FAILED = "handshake_failed"
    #: No route for the path (a router's 404).
    NOT_FOUND = "not_found"


@attrs.frozen
class Refusal:
    """A step's refusal: the outcome, and the answer to send (None: none)."""

    outcome: Refused
    response: Response | None


#: Seconds a client is told to wait (Retry-After) when the server is full.
RETRY_AFTER = 5

#: An entry of ``origins``: an exact Origin, a pattern it must fully match,
#: or None to allow requests without an Origin header (non-browser clients).
OriginRule = str | re.Pattern[str] | None


def origin_allowed(origin: str | None, origins: Sequence[OriginRule]) -> bool:
    """Whether a request with this Origin header may upgrade."""
    for rule in origins:
        if rule is None:
            if origin is None:
                return True
        elif origin is not None and (
            rule == origin if isinstance(rule, str) else rule.fullmatch(origin)
        ):
            return True
    return False


@attrs.frozen
class HandshakePolicy:
    """What a server accepts: its settings for the opening handshake."""

    process_request: ProcessRequest | None
    subprotocols: Sequence[str]
    #: None: any Origin. Else the Origins allowed to upgrade (see OriginRule).
    origins: Sequence[OriginRule] | None
    #: Called for each upgrade, before process_request, in the task running
    #: accept_handshake: reserves a connection slot for this handshake and
    #: returns True, or returns False when the server may take no more.
    reserve_slot: Callable[[], bool]
    options: Options
    #: A router (see ``routes.Routes``): it says first what a request is for.
    routes: Routes | None = None
