"""The close state machine (trio_ws/_conn/close_state.py) as a table: from each
state, each event, to the next state and the action the connection takes; and
the flags the reader, the writer and the connection read in each phase."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

from trio_ws import CloseInfo
from trio_ws._conn.close_state import Action, CloseState, Phase

Event = Callable[[CloseState], object]

# -- events ---------------------------------------------------------------------


def local_close(s: CloseState) -> object:
    return s.close(1000, "bye", "local", None)


def local_failure(s: CloseState) -> object:
    return s.close(1011, "keepalive timeout", "local", "no pong", failure=True)


def peer_close(s: CloseState) -> object:
    return s.peer_closed(1001, "going")


def failure_usable(s: CloseState) -> object:
    return s.failed(1009, "too big", "too big!", parser_usable=True)


def failure_dead(s: CloseState) -> object:
    return s.failed(1002, "bad", "protocol error: bad", parser_usable=False)


def eof(s: CloseState) -> object:
    return s.stream_ended(None)


def abort(s: CloseState) -> object:
    return s.aborted("timed out")


def finish(s: CloseState) -> object:
    return s.finished()


# The states, each reached by a sequence of events from a new connection.
STATES: dict[str, list[Event]] = {
    "open": [],
    "closing, awaiting the reply": [local_close],
    "closing, failing (usable)": [failure_usable],
    "settled after our close": [local_close, peer_close],
    "settled by the peer": [peer_close],
    "closed": [local_close, peer_close, finish],
}

LOCAL = CloseInfo(1000, "bye", "local", None)
FAILED = CloseInfo(1011, "keepalive timeout", "local", "no pong")
PEER = CloseInfo(1001, "going", "peer", None)
REPLIED = CloseInfo(1001, "going", "local", None)
TOO_BIG = CloseInfo(1009, "too big", "local", "too big!")
DEAD = CloseInfo(1002, "bad", "local", "protocol error: bad")
LOST = CloseInfo(1006, "", "peer", "connection lost without a close frame")

# The flags read in place of the phase, (closing, settled, closed): the writer
# takes no broadcast once closing, the reader queues no message and reads at
# once; the connection waits for settled, then closed.
FLAGS = {
    Phase.OPEN: (False, False, False),
    Phase.CLOSING: (True, False, False),
    Phase.SETTLED: (True, True, False),
    Phase.CLOSED: (True, True, True),
}

S, N, ST, SS = Action.START, Action.NONE, Action.SETTLE, Action.START_SETTLED
C, SE, CL = Phase.CLOSING, Phase.SETTLED, Phase.CLOSED

# (state, event) -> (result, phase after, close info after, frame to send)
TABLE: list[tuple[str, Event, object, Phase, CloseInfo | None, tuple[int, str] | None]] = [
    ("open", local_close, S, C, LOCAL, (1000, "bye")),
    ("open", local_failure, S, C, FAILED, (1011, "keepalive timeout")),
    ("open", peer_close, SS, SE, PEER, (1001, "going")),
    ("open", failure_usable, S, C, TOO_BIG, (1009, "too big")),
    ("open", failure_dead, SS, SE, DEAD, (1002, "bad")),
    ("open", eof, SS, SE, LOST, None),
    ("open", abort, True, CL, CloseInfo(1006, "", "local", "timed out"), None),
    ("open", finish, True, CL, None, None),
    # Our graceful close: the peer's reply decides the code.
    ("closing, awaiting the reply", local_close, N, C, LOCAL, (1000, "bye")),
    ("closing, awaiting the reply", peer_close, ST, SE, REPLIED, (1000, "bye")),
    ("closing, awaiting the reply", failure_usable, N, C, LOCAL, (1000, "bye")),
    ("closing, awaiting the reply", failure_dead, ST, SE, LOCAL, (1000, "bye")),
    ("closing, awaiting the reply", eof, ST, SE, LOCAL, (1000, "bye")),
    (
        "closing, awaiting the reply",
        abort,
        True,
        CL,
        CloseInfo(1006, "", "local", "timed out"),
        (1000, "bye"),
    ),
    ("closing, awaiting the reply", finish, True, CL, LOCAL, (1000, "bye")),
    # Failing: our code stays, whatever the peer replies.
    ("closing, failing (usable)", peer_close, ST, SE, TOO_BIG, (1009, "too big")),
    ("closing, failing (usable)", eof, ST, SE, TOO_BIG, (1009, "too big")),
    ("closing, failing (usable)", abort, True, CL, TOO_BIG, (1009, "too big")),
    ("closing, failing (usable)", local_close, N, C, TOO_BIG, (1009, "too big")),
    # Settled: only the end remains.
    ("settled after our close", peer_close, N, SE, REPLIED, (1000, "bye")),
    ("settled after our close", eof, N, SE, REPLIED, (1000, "bye")),
    ("settled after our close", local_close, N, SE, REPLIED, (1000, "bye")),
    ("settled after our close", finish, True, CL, REPLIED, (1000, "bye")),
    ("settled after our close", abort, True, CL, REPLIED, (1000, "bye")),
    ("settled by the peer", local_close, N, SE, PEER, (1001, "going")),
    ("settled by the peer", failure_dead, N, SE, PEER, (1001, "going")),
    # Closed: nothing changes any more.
    ("closed", local_close, N, CL, REPLIED, (1000, "bye")),
    ("closed", peer_close, N, CL, REPLIED, (1000, "bye")),
    ("closed", eof, N, CL, REPLIED, (1000, "bye")),
    ("closed", abort, False, CL, REPLIED, (1000, "bye")),
    ("closed", finish, False, CL, REPLIED, (1000, "bye")),
]


@pytest.mark.parametrize(
    ("state", "event", "result", "phase", "info", "frame"),
    TABLE,
    ids=[f"{state}: {event.__name__}" for state, event, *_ in TABLE],
)
def test_transition(
    state: str,
    event: Event,
    result: object,
    phase: Phase,
    info: CloseInfo | None,
    frame: tuple[int, str] | None,
) -> None:
    s = CloseState()
    for earlier in STATES[state]:
        earlier(s)
    assert event(s) == result
    assert s.phase is phase
    assert s.info == info
    assert s.frame == frame
    assert (s.closing, s.settled, s.closed) == FLAGS[phase]


def test_a_new_state_is_open_with_every_flag_down() -> None:
    s = CloseState()
    assert s.phase is Phase.OPEN
    assert (s.closing, s.settled, s.closed) == FLAGS[Phase.OPEN]
    assert (s.info, s.frame, s.awaiting_reply) == (None, None, False)


@pytest.mark.parametrize("flag", ["closing", "settled", "closed"])
def test_flags_are_plain_attributes(flag: str) -> None:
    """Kept up to date by each transition, not computed when read: the writer
    reads ``closing`` once per broadcast offer (one attribute load)."""
    assert not isinstance(inspect.getattr_static(CloseState, flag), property)


def test_table_has_every_state_and_every_event_from_open() -> None:
    events = {local_close, local_failure, peer_close, failure_usable, failure_dead, eof}
    events |= {abort, finish}
    covered = {(state, event) for state, event, *_ in TABLE}
    assert {state for state, _ in covered} == set(STATES)
    assert {("open", e) for e in events} <= covered


def test_timeout_cause_says_which_part_timed_out() -> None:
    s = CloseState()
    s.close(1000, "", "local", None)
    assert s.timeout_cause() == "closing handshake timed out"
    s.peer_closed(1000, "")
    assert s.timeout_cause() == "TCP shutdown timed out"


def test_lost_stream_keeps_the_error_in_its_cause() -> None:
    s = CloseState()
    assert s.stream_ended(ConnectionResetError("reset by peer")) is Action.START_SETTLED
    assert s.info is not None
    assert s.info.cause == (
        "connection lost without a close frame (ConnectionResetError: reset by peer)"
    )
    assert s.frame is None  # nothing to send to a stream that ended
