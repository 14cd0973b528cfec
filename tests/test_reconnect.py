"""The reconnecting client: backoff, retry policy, giving up, and what leaving
the loop closes."""

from __future__ import annotations

import functools
import logging
import random
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from conftest import Recorder, all_tasks, echo, open_fds, start_server, url_of

import trio_ws
from trio_ws import Backoff

FIXED = Backoff(initial=1.0, factor=2.0, max_delay=8.0, jitter=False)


async def counter(ws: trio_ws.WebSocket) -> None:
    """Answers each number with the next one."""
    async for message in ws:
        await ws.send(str(int(message) + 1))


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A URL whose port is bound but not listening: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"ws://127.0.0.1:{sock.getsockname()[1]}/"


class Failures:
    """An ``on_failure`` that records its calls, and when they happened."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float, BaseException]] = []
        self.times: list[float] = []

    def __call__(self, attempt: int, delay: float, error: BaseException) -> None:
        self.calls.append((attempt, delay, error))
        self.times.append(trio.current_time())


async def connect_once(url: str, **kwargs: Any) -> None:
    """Run a reconnect loop that must fail before its first connection."""
    async with trio_ws.reconnect(url, **kwargs) as connections:
        async for _ in connections:
            pytest.fail("connected")  # pragma: no cover


async def settle() -> None:
    """Let tasks that are ending (server handlers) finish."""
    await trio.testing.wait_all_tasks_blocked()


# -- Backoff -------------------------------------------------------------------


def test_backoff_without_jitter_is_the_cap() -> None:
    backoff = Backoff(initial=0.5, factor=2.0, max_delay=4.0, jitter=False)
    assert [backoff.delay(n) for n in range(1, 8)] == [0.5, 1, 2, 4, 4, 4, 4]
    assert Backoff(initial=0.1, factor=3, max_delay=10, jitter=False).delay(3) == pytest.approx(
        0.9
    )
    # No overflow, however long the outage.
    assert backoff.delay(100_000) == 4.0
    assert Backoff().cap(1) == 0.5
    assert Backoff().cap(100) == 30.0


def test_the_documented_backoff_table() -> None:
    page = Path(__file__).resolve().parent.parent / "docs" / "reconnecting.md"
    row = next(line for line in page.read_text().splitlines() if line.startswith("| cap, seconds"))
    documented = [float(cell) for cell in row.strip("|").split("|")[1:]]
    assert documented == [Backoff().cap(n) for n in range(1, 9)]


def test_backoff_full_jitter_stays_within_the_cap() -> None:
    backoff = Backoff(initial=0.5, factor=2.0, max_delay=30.0)
    rng = random.Random(1234)
    for failures in range(1, 10):
        cap = min(30.0, 0.5 * 2 ** (failures - 1))
        samples = [backoff.delay(failures, rng) for _ in range(500)]
        assert all(0 <= s <= cap for s in samples)
        # Full jitter: spread over the whole range, not clustered at the cap.
        assert min(samples) < 0.05 * cap
        assert max(samples) > 0.95 * cap
        assert 0.4 * cap < sum(samples) / len(samples) < 0.6 * cap
    # A seeded generator repeats itself.
    first = [backoff.delay(n, random.Random(7)) for n in range(1, 6)]
    assert first == [backoff.delay(n, random.Random(7)) for n in range(1, 6)]
    # Without rng, the random module's generator is used.
    assert 0 <= backoff.delay(3) <= 2.0


def test_backoff_is_validated() -> None:
    with pytest.raises(ValueError, match="initial"):
        Backoff(initial=0)
    with pytest.raises(ValueError, match="factor"):
        Backoff(factor=0.5)
    with pytest.raises(ValueError, match="max_delay"):
        Backoff(max_delay=-1)
    with pytest.raises(ValueError, match="failures"):
        Backoff().delay(0)


def test_reconnect_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        trio_ws.reconnect("ws://h/", max_attempts=0)
    with pytest.raises(TypeError, match="Backoff"):
        trio_ws.reconnect("ws://h/", backoff=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_queue"):
        trio_ws.reconnect("ws://h/", max_queue=0)
    with pytest.raises(TypeError):
        trio_ws.reconnect("ws://h/", no_such_option=1)


# -- reconnecting ----------------------------------------------------------------


async def test_server_restarted_on_the_same_port(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: Any
) -> None:
    seen: list[list[str]] = [[], []]

    def recording(index: int) -> Any:
        async def handler(ws: trio_ws.WebSocket) -> None:
            async for message in ws:
                seen[index].append(str(message))
                await ws.send(str(int(message) + 1))

        return handler

    first = await start_server(nursery, recording(0))
    port = first.port
    stop = trio.Event()

    async def operator() -> None:
        await stop.wait()
        await first.aclose()
        await trio.sleep(2.5)  # down for 2.5 s, then back on the same port
        await nursery.start(
            functools.partial(trio_ws.serve, recording(1), "127.0.0.1", port, ping_interval=None)
        )

    nursery.start_soon(operator)
    failures = Failures()
    replies: list[int] = []
    opened: list[float] = []
    lost_at = 0.0
    n = 0
    caplog.set_level(logging.WARNING, logger="trio_ws")
    async with trio_ws.reconnect(
        url_of(first), backoff=FIXED, on_failure=failures, ping_interval=None
    ) as connections:
        async for ws in connections:
            opened.append(trio.current_time())
            assert connections.connection is ws
            while n < 6:
                await ws.send(str(n))
                n = int(await ws.receive())
                replies.append(n)
                if n == 3 and not stop.is_set():
                    stop.set()
                    info = await ws.wait_closed()
                    assert (info.code, info.reason) == (1001, "server shutting down")
                    lost_at = trio.current_time()
                    break
            if n == 6:
                break
    # The conversation went on where it stopped, on the restarted server.
    assert replies == [1, 2, 3, 4, 5, 6]
    assert seen == [["0", "1", "2"], ["3", "4", "5"]]
    # Lost: wait 1 s (a connection that did not last counts as a failure);
    # attempt 1 refused: wait 2 s; attempt 2 connects.
    assert len(opened) == 2
    assert opened[1] - lost_at == pytest.approx(3)
    [(attempt, delay, error)] = failures.calls
    assert (attempt, delay) == (1, 2.0)
    assert isinstance(error, trio_ws.ConnectFailed)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert messages[0].startswith(f"connection to ws://127.0.0.1:{port}/ lasted only ")
    assert messages[0].endswith("reconnecting in 1 s")
    assert messages[1].startswith(f"attempt 1 to ws://127.0.0.1:{port}/ failed: ConnectFailed: ")
    assert messages[1].endswith("; retrying in 2 s")
    assert len(messages) == 2


async def test_waits_follow_the_backoff_and_max_attempts_gives_up(
    autojump_clock: trio.testing.MockClock, refused_url: str, caplog: Any
) -> None:
    backoff = Backoff(initial=0.5, factor=3.0, max_delay=5.0, jitter=False)
    failures = Failures()
    caplog.set_level(logging.WARNING, logger="trio_ws")
    start = trio.current_time()
    with pytest.raises(trio_ws.ReconnectFailed) as info:
        await connect_once(refused_url, backoff=backoff, max_attempts=5, on_failure=failures)
    # One clear exception: not a group, the last error as its cause.
    assert type(info.value) is trio_ws.ReconnectFailed
    assert isinstance(info.value, trio_ws.HandshakeError)
    assert info.value.attempts == 5
    assert info.value.url == refused_url
    assert isinstance(info.value.__cause__, trio_ws.ConnectFailed)
    assert f"{refused_url}: gave up after 5 failed attempts" in str(info.value)
    # on_failure before each wait: not after the last attempt.
    assert [(a, d) for a, d, _ in failures.calls] == [(1, 0.5), (2, 1.5), (3, 4.5), (4, 5.0)]
    assert all(isinstance(e, trio_ws.ConnectFailed) for _, _, e in failures.calls)
    gaps = [b - a for a, b in zip(failures.times, failures.times[1:], strict=False)]
    assert gaps == pytest.approx([0.5, 1.5, 4.5])
    assert trio.current_time() - start == pytest.approx(0.5 + 1.5 + 4.5 + 5.0)
    logged = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.name for r in logged] == ["trio_ws"] * 4
    assert logged[2].getMessage() == (
        f"attempt 3 to {refused_url} failed: ConnectFailed: {failures.calls[2][2]}; "
        "retrying in 4.5 s"
    )


async def test_jittered_waits_stay_under_the_cap(
    autojump_clock: trio.testing.MockClock, refused_url: str
) -> None:
    failures = Failures()
    with pytest.raises(trio_ws.ReconnectFailed):
        await connect_once(
            refused_url, backoff=Backoff(initial=1.0), max_attempts=8, on_failure=failures
        )
    delays = [d for _, d, _ in failures.calls]
    assert len(delays) == 7
    assert all(0 <= d <= min(30.0, 2.0 ** (i)) for i, d in enumerate(delays))
    gaps = [b - a for a, b in zip(failures.times, failures.times[1:], strict=False)]
    assert gaps == pytest.approx(delays[:-1])


async def test_4xx_is_not_retried(nursery: trio.Nursery) -> None:
    requests: list[str] = []

    def forbid(request: trio_ws.Request) -> trio_ws.Response:
        requests.append(request.path)
        return trio_ws.Response.text(403, "no")

    server = await start_server(nursery, process_request=forbid)
    failures = Failures()
    with pytest.raises(trio_ws.ConnectionRejected) as info:
        await connect_once(url_of(server), on_failure=failures)
    assert type(info.value) is trio_ws.ConnectionRejected
    assert info.value.status_code == 403
    assert requests == ["/"]
    assert failures.calls == []


async def test_5xx_is_retried(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    requests: list[str] = []

    def busy_twice(request: trio_ws.Request) -> trio_ws.Response | None:
        requests.append(request.path)
        if len(requests) <= 2:
            return trio_ws.Response.text(503, "busy")
        return None

    server = await start_server(nursery, echo, process_request=busy_twice)
    failures = Failures()
    async with trio_ws.reconnect(url_of(server), backoff=FIXED, on_failure=failures) as conns:
        async for ws in conns:
            await ws.send("finally")
            assert await ws.receive() == "finally"
            break
    assert len(requests) == 3
    assert [(a, d) for a, d, _ in failures.calls] == [(1, 1.0), (2, 2.0)]
    for _, _, error in failures.calls:
        assert isinstance(error, trio_ws.ConnectionRejected)
        assert error.status_code == 503


async def test_tls_errors_are_not_retried(nursery: trio.Nursery, tls: Any) -> None:
    server = await start_server(nursery, ssl_context=tls.server_context)
    failures = Failures()
    with pytest.raises(trio_ws.TLSError):
        await connect_once(f"wss://localhost:{server.port}/", on_failure=failures)
    assert failures.calls == []


async def test_invalid_handshake_and_invalid_url_are_not_retried(nursery: trio.Nursery) -> None:
    async def not_websocket(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"this is not HTTP\r\n\r\n")
        await trio.sleep_forever()

    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, not_websocket, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    failures = Failures()
    with pytest.raises(trio_ws.InvalidHandshake):
        await connect_once(f"ws://127.0.0.1:{port}/", on_failure=failures, close_timeout=0.1)
    with pytest.raises(trio_ws.InvalidURL):
        await connect_once("http://127.0.0.1/", on_failure=failures)
    assert failures.calls == []


async def test_retry_overrides_the_policy(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, refused_url: str
) -> None:
    # Retry a 429 too...
    requests: list[str] = []

    def too_many_once(request: trio_ws.Request) -> trio_ws.Response | None:
        requests.append(request.path)
        return trio_ws.Response.text(429, "slow down") if len(requests) == 1 else None

    def also_429(error: BaseException) -> bool:
        if isinstance(error, trio_ws.ConnectionRejected) and error.status_code == 429:
            return True
        return trio_ws.Reconnecting.default_retry(error)

    server = await start_server(nursery, process_request=too_many_once)
    async with trio_ws.reconnect(url_of(server), backoff=FIXED, retry=also_429) as conns:
        async for ws in conns:
            assert not ws.closed
            break
    assert len(requests) == 2
    # ...or retry nothing.
    seen: list[BaseException] = []

    def never(error: BaseException) -> bool:
        seen.append(error)
        return False

    with pytest.raises(trio_ws.ConnectFailed):
        await connect_once(refused_url, retry=never)
    assert len(seen) == 1


async def test_on_failure_exceptions_propagate(
    autojump_clock: trio.testing.MockClock, refused_url: str
) -> None:
    def fail_on_second(attempt: int, delay: float, error: BaseException) -> None:
        if attempt == 2:
            raise KeyError("stop")

    tasks = all_tasks()
    with pytest.raises(KeyError, match="stop"):
        await connect_once(refused_url, backoff=FIXED, on_failure=fail_on_second)
    assert all_tasks() == tasks


async def test_server_that_drops_at_once_is_not_a_tight_loop(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: Any
) -> None:
    async def drop(ws: trio_ws.WebSocket) -> None:
        pass  # returning closes the connection with 1000

    server = await start_server(nursery, drop)
    opened: list[float] = []
    caplog.set_level(logging.WARNING, logger="trio_ws")
    start = trio.current_time()
    with trio.move_on_after(120):
        async with trio_ws.reconnect(
            url_of(server), backoff=Backoff(jitter=False), ping_interval=None
        ) as connections:
            async for ws in connections:
                opened.append(trio.current_time() - start)
                await ws.wait_closed()
    # Each short-lived connection grows the wait: 0.5, 1, 2, ... 30 s.
    assert opened == pytest.approx([0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5, 61.5, 91.5])
    lasted = [r for r in caplog.records if "lasted only" in r.getMessage()]
    assert len(lasted) == 9
    assert (
        lasted[0]
        .getMessage()
        .endswith("(peer closed the connection with 1000 (normal closure)); reconnecting in 0.5 s")
    )


async def test_a_connection_that_lasted_resets_the_backoff(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    lifetimes = iter([0.0, 0.0, 8.0, 0.0, 0.0])

    async def handler(ws: trio_ws.WebSocket) -> None:
        await trio.sleep(next(lifetimes))

    server = await start_server(nursery, handler)
    opened: list[float] = []
    start = trio.current_time()
    async with trio_ws.reconnect(url_of(server), backoff=FIXED, ping_interval=None) as conns:
        async for ws in conns:
            opened.append(trio.current_time() - start)
            await ws.wait_closed()
            if len(opened) == 5:
                break
    # 1 s and 2 s after the brief ones; at once after the one that lasted
    # max_delay (8 s); then the backoff starts over at 1 s.
    assert opened == pytest.approx([0, 1, 3, 11, 12])


# -- leaving the loop ------------------------------------------------------------


@pytest.mark.parametrize(
    ("ending", "code"),
    [("break", 1000), ("raise", 1011), ("cancel", 1001)],
)
async def test_leaving_the_block_closes_and_leaves_nothing(
    nursery: trio.Nursery, ending: str, code: int
) -> None:
    recorder = Recorder(echo)
    server = await start_server(nursery, recorder)
    tasks = all_tasks()
    fds = open_fds()
    with trio.move_on_after(10) as outer:
        try:
            async with trio_ws.reconnect(url_of(server)) as connections:
                async for ws in connections:
                    await ws.send("hi")
                    assert await ws.receive() == "hi"
                    if ending == "break":
                        break
                    if ending == "raise":
                        raise KeyError("from the body")
                    if ending == "cancel":
                        outer.cancel()
                        await trio.sleep_forever()
        except KeyError:
            assert ending == "raise"
    assert outer.cancelled_caught == (ending == "cancel")
    info = await recorder.closed()
    assert info.code == code
    assert ws.closed
    with pytest.raises(RuntimeError, match="ended"):
        await connections.__anext__()
    await settle()
    assert all_tasks() == tasks
    assert open_fds() == fds


async def test_next_iteration_closes_the_previous_connection(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    recorder = Recorder(echo)
    server = await start_server(nursery, recorder)
    seen: list[trio_ws.WebSocket] = []
    opened: list[float] = []
    async with trio_ws.reconnect(url_of(server), backoff=FIXED) as connections:
        async for ws in connections:
            seen.append(ws)
            opened.append(trio.current_time())
            if len(seen) == 2:
                break
    # The first one was up for no time at all: the backoff applies.
    assert opened[1] - opened[0] == pytest.approx(1)
    assert seen[0] is not seen[1]
    assert seen[0].close_code == 1000
    assert not seen[0].close_info.by_peer  # type: ignore[union-attr]
    assert (await recorder.closed()).code == 1000
    assert (await recorder.closed()).code == 1000


async def test_cancelled_while_waiting_to_retry(
    autojump_clock: trio.testing.MockClock, refused_url: str
) -> None:
    tasks = all_tasks()
    fds = open_fds()
    failures = Failures()
    with trio.move_on_after(5) as scope:
        async with trio_ws.reconnect(
            refused_url, backoff=Backoff(initial=60, jitter=False), on_failure=failures
        ) as connections:
            async for _ in connections:
                pass  # pragma: no cover
    assert scope.cancelled_caught
    assert len(failures.calls) == 1
    assert all_tasks() == tasks
    assert open_fds() == fds


async def test_async_for_needs_the_async_with(echo_server: trio_ws.Server) -> None:
    with pytest.raises(RuntimeError, match=r"async with trio_ws\.reconnect"):
        async for _ in trio_ws.reconnect(url_of(echo_server)):
            pass  # pragma: no cover
    connections = trio_ws.reconnect(url_of(echo_server))
    async with connections:
        with pytest.raises(RuntimeError, match="already entered"):
            await connections.__aenter__()
    assert connections.connection is None


async def test_one_task_at_a_time(nursery: trio.Nursery) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
    url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"
    async with trio_ws.reconnect(url) as connections, trio.open_nursery() as inner:
        inner.start_soon(connections.__anext__)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(RuntimeError, match="another task"):
            await connections.__anext__()
        inner.cancel_scope.cancel()
