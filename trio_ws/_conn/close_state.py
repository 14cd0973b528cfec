"""Where a connection is in its closing, as one small sans-I/O state machine.

A connection is OPEN, then CLOSING once either side starts the close (or the
stream ends, or the library fails the connection), then SETTLED once the
closing handshake needs nothing more from the peer (its close frame came, or
its stream ended, or it broke a rule that leaves nothing more to read), and
CLOSED once the stream is closed, cleanly or by an abort. Each event says
what the connection must do (:class:`Action`); the connection does the I/O.
The state also keeps how the connection ended (:class:`CloseInfo`): the
first close decides, except that the peer's reply to our own graceful close
frame carries the code that counts.

The reader and the writer hold the connection's one CloseState and read its
flags (``closing``: no more data frames written or queued, no more messages
queued, read at once until end-of-file) instead of keeping their own. What
they observe on the stream stays theirs: the writer's ``broken`` (a write
failed, end-of-file was sent, or the stream was closed), the reader's
``eof`` and the protocol's ``dead`` (wsproto can parse no further) are I/O
and parser facts, which reach this state as events (:meth:`stream_ended`,
:meth:`failed` with ``parser_usable=False``).

No I/O, no clock, no tasks: the table of (state, event) -> (state, action)
is tested as such in tests/test_close_state.py.
"""

from __future__ import annotations

import enum
from typing import Literal

from .._wire.close import CloseCode, CloseInfo

__all__ = ["Action", "CloseState", "Phase"]


class Phase(enum.Enum):
    OPEN = "open"
    #: Closing: our close frame (if any) is to be sent; the peer's part is
    #: not settled yet.
    CLOSING = "closing"
    #: The closing handshake needs nothing more from the peer: shut the
    #: stream down.
    SETTLED = "settled"
    #: The stream is closed; the connection's tasks are ending.
    CLOSED = "closed"


class Action(enum.Enum):
    NONE = "none"
    #: Closing has started: stop taking messages to send or queue, read to
    #: the end, and run the closing sequence (send :attr:`CloseState.frame`).
    START = "start"
    #: Wake the closing sequence: nothing more is needed from the peer.
    SETTLE = "settle"
    #: Both at once (the close started with nothing to wait for).
    START_SETTLED = "start_settled"


class CloseState:
    """One connection's closing state (see the module docstring)."""

    # closing, settled and closed are plain attributes, kept by _to(), not
    # properties: the writer reads ``closing`` once per broadcast offer.
    __slots__ = ("awaiting_reply", "closed", "closing", "frame", "info", "phase", "settled")

    def __init__(self) -> None:
        self.phase = Phase.OPEN
        #: Closing has started (any phase but OPEN): no more data frames may
        #: be written or queued (the writer), and no more messages are queued
        #: for receivers (the reader, which now reads at once, full queue or
        #: not, until end-of-file).
        self.closing = False
        #: Nothing more is needed from the peer (SETTLED or CLOSED).
        self.settled = False
        #: The stream is closed (CLOSED).
        self.closed = False
        #: How the connection ended, once closing started.
        self.info: CloseInfo | None = None
        #: The close frame to send, (code, reason), or None.
        self.frame: tuple[int, str] | None = None
        #: We sent the first close frame, gracefully: the peer's reply decides
        #: the code.
        self.awaiting_reply = False

    def _to(self, phase: Phase) -> None:
        """Move to ``phase``, and keep the flags read in its place up to date."""
        self.phase = phase
        self.closing = phase is not Phase.OPEN
        self.settled = phase is Phase.SETTLED or phase is Phase.CLOSED
        self.closed = phase is Phase.CLOSED

    # -- events ------------------------------------------------------------------

    def close(
        self,
        code: int,
        reason: str,
        initiator: Literal["local", "peer"],
        cause: str | None,
        *,
        failure: bool = False,
        send_frame: bool = True,
    ) -> Action:
        """Start closing (once; later calls change nothing). ``failure``: the
        library fails the connection, and its code stays whatever the peer
        replies. ``send_frame`` False: there is no close frame to send (the
        stream ended)."""
        if self.phase is not Phase.OPEN:
            return Action.NONE
        self._to(Phase.CLOSING)
        self.info = CloseInfo(code, reason, initiator, cause)
        self.awaiting_reply = initiator == "local" and send_frame and not failure
        if send_frame:
            self.frame = (code, reason)
        return Action.START

    def peer_closed(self, code: int, reason: str) -> Action:
        """The peer's close frame arrived."""
        if self.awaiting_reply:
            # The peer's reply to our close: its code is the one that counts.
            self.awaiting_reply = False
            assert self.info is not None
            self.info = CloseInfo(code, reason, "local", self.info.cause)
            return self._settle(Action.NONE)
        started = self.close(code, reason, "peer", None)
        return self._settle(started)

    def failed(self, code: int, reason: str, cause: str, *, parser_usable: bool) -> Action:
        """The peer broke a rule: fail the connection with ``code``. When the
        parser cannot go on, nothing more can be read from the peer."""
        started = self.close(code, reason, "local", cause, failure=True)
        return self._settle(started) if not parser_usable else started

    def stream_ended(self, error: BaseException | None) -> Action:
        """The stream reported end-of-file, or broke (``error``)."""
        cause = "connection lost without a close frame"
        if error is not None:
            cause += f" ({error.__class__.__name__}: {error})"
        started = self.close(CloseCode.ABNORMAL_CLOSURE, "", "peer", cause, send_frame=False)
        return self._settle(started)

    def aborted(self, cause: str) -> bool:
        """The stream is being closed without (the rest of) the closing
        handshake. Returns False if it was closed already. A close we were
        still waiting on becomes 1006 with ``cause``."""
        if self.phase is Phase.CLOSED:
            return False
        info = self.info
        if info is None or self.awaiting_reply:
            initiator = info.initiator if info else "local"
            self.info = CloseInfo(CloseCode.ABNORMAL_CLOSURE, "", initiator, cause)
        self.awaiting_reply = False
        self._to(Phase.CLOSED)
        return True

    def finished(self) -> bool:
        """The stream was closed cleanly. Returns False if already closed."""
        if self.phase is Phase.CLOSED:
            return False
        self._to(Phase.CLOSED)
        return True

    def timeout_cause(self) -> str:
        """Why an abort at the close deadline happened."""
        if self.awaiting_reply:
            return "closing handshake timed out"
        return "TCP shutdown timed out"

    def _settle(self, started: Action) -> Action:
        if self.phase is not Phase.CLOSING:
            return started
        self._to(Phase.SETTLED)
        return Action.START_SETTLED if started is Action.START else Action.SETTLE
