"""The connection pool: reuse, limits and waiting, the clean-return rule,
idle reaping, and what leaving the block closes."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import trio
import trio.testing
from conftest import Recorder, all_tasks, echo, open_fds, start_server, url_of

import trio_ws


async def settle() -> None:
    """Let tasks react to what just happened (closes noticed, handlers ending)."""
    await trio.testing.wait_all_tasks_blocked()


def counts(pool: trio_ws.ConnectionPool) -> tuple[int, int, int]:
    return pool.size, pool.idle, pool.in_use


@pytest.fixture
async def recorder(nursery: trio.Nursery) -> Recorder:
    return Recorder(echo)


@pytest.fixture
async def server(nursery: trio.Nursery, recorder: Recorder) -> trio_ws.Server:
    return await start_server(nursery, recorder)


@pytest.fixture
def refused_url() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"ws://127.0.0.1:{sock.getsockname()[1]}/"


# -- reuse -----------------------------------------------------------------------


async def test_a_released_connection_is_reused(server: trio_ws.Server, recorder: Recorder) -> None:
    url = url_of(server)
    async with trio_ws.open_pool() as pool:
        assert counts(pool) == (0, 0, 0)
        async with pool.acquire(url) as first:
            assert counts(pool) == (1, 0, 1)
            await first.send("one")
            assert await first.receive() == "one"
        assert counts(pool) == (1, 1, 0)
        async with pool.acquire(url) as second:
            await second.send("two")
            assert await second.receive() == "two"
        assert second is first
        # One TCP connection on the server side.
        server_side = await recorder.connection()
        assert server.connections == {server_side}
        assert server_side.remote_address == first.local_address
    assert first.closed
    assert counts(pool) == (0, 0, 0)
    assert (await recorder.closed()).code == 1000


async def test_most_recently_used_first(server: trio_ws.Server) -> None:
    url = url_of(server)
    async with trio_ws.open_pool() as pool:
        async with pool.acquire(url) as older, pool.acquire(url) as newer:
            assert older is not newer
        # The inner block ended first: "older" was released last.
        async with pool.acquire(url) as ws:
            assert ws is older
            async with pool.acquire(url) as other:
                assert other is newer
        assert counts(pool) == (2, 2, 0)


async def test_different_urls_get_different_connections(
    server: trio_ws.Server, recorder: Recorder
) -> None:
    async with trio_ws.open_pool() as pool:
        async with pool.acquire(url_of(server, "/a")) as a:
            pass
        async with pool.acquire(url_of(server, "/b")) as b:
            assert b is not a
        async with pool.acquire(url_of(server, "/a")) as again:
            assert again is a
        assert counts(pool) == (2, 2, 0)
    assert {(await recorder.connection()).path for _ in range(2)} == {"/a", "/b"}


# -- limits and waiting ------------------------------------------------------------


async def test_concurrent_acquires_respect_the_limit(
    server: trio_ws.Server, recorder: Recorder
) -> None:
    url = url_of(server)
    most = 0
    async with trio_ws.open_pool(max_connections=2) as pool:

        async def user(n: int) -> None:
            nonlocal most
            async with pool.acquire(url) as ws:
                most = max(most, pool.in_use)
                assert pool.size <= 2
                await ws.send(str(n))
                assert await ws.receive() == str(n)

        async with trio.open_nursery() as users:
            for n in range(6):
                users.start_soon(user, n)
        assert counts(pool) == (2, 2, 0)
    assert most == 2
    assert len({(await recorder.closed()).code for _ in range(2)}) == 1


async def test_waiters_get_the_released_connection_in_order(server: trio_ws.Server) -> None:
    url = url_of(server)
    order: list[str] = []
    got: list[trio_ws.WebSocket] = []
    async with trio_ws.open_pool(max_connections=1) as pool, trio.open_nursery() as users:

        async def waiter(name: str) -> None:
            async with pool.acquire(url) as ws:
                order.append(name)
                got.append(ws)

        async with pool.acquire(url) as held:
            for name in ("w1", "w2", "w3"):
                users.start_soon(waiter, name)
                await settle()  # queued in this order
            assert counts(pool) == (1, 0, 1)
            assert order == []
        # Released: handed to w1, not to whoever asks next, even this task.
        async with pool.acquire(url) as again:
            order.append("holder again")
    assert order == ["w1", "w2", "w3", "holder again"]
    assert all(ws is held for ws in got)
    assert again is held


async def test_pool_timeout(
    server: trio_ws.Server, autojump_clock: trio.testing.MockClock
) -> None:
    url = url_of(server)
    async with trio_ws.open_pool(max_connections=1) as pool:
        async with pool.acquire(url) as held:
            start = trio.current_time()
            with pytest.raises(trio_ws.PoolTimeout) as info:
                async with pool.acquire(url, timeout=5.0):
                    pass  # pragma: no cover
            assert trio.current_time() - start == pytest.approx(5.0)
            assert isinstance(info.value, trio.TooSlowError)
            assert str(info.value) == (
                f"no connection to {url} available within 5 s: the pool is full "
                "(max_connections=1, all in use)"
            )
        # The waiter that gave up is gone: the connection goes back to the pool.
        assert counts(pool) == (1, 1, 0)
        async with pool.acquire(url, timeout=0) as ws:
            assert ws is held


async def test_full_pool_closes_the_lru_idle_connection_of_another_url(
    server: trio_ws.Server, recorder: Recorder
) -> None:
    async with trio_ws.open_pool(max_connections=2) as pool:
        async with pool.acquire(url_of(server, "/a")):
            pass
        server_a = await recorder.connection()
        async with pool.acquire(url_of(server, "/b")) as b:
            pass
        server_b = await recorder.connection()
        async with pool.acquire(url_of(server, "/c")) as c:
            assert c.request.path == "/c"
            assert counts(pool) == (2, 1, 1)
        info = await server_a.wait_closed()
        assert (info.code, info.by_peer) == (1000, True)
        assert not server_b.closed
        async with pool.acquire(url_of(server, "/b")) as again:
            assert again is b


async def test_waiter_for_another_url_takes_the_place_of_the_released_one(
    server: trio_ws.Server, recorder: Recorder
) -> None:
    async with trio_ws.open_pool(max_connections=1) as pool, trio.open_nursery() as users:
        got: list[trio_ws.WebSocket] = []

        async def waiter() -> None:
            async with pool.acquire(url_of(server, "/b")) as ws:
                got.append(ws)

        async with pool.acquire(url_of(server, "/a")):
            users.start_soon(waiter)
            await settle()
        server_a = await recorder.connection()
        assert (await server_a.wait_closed()).code == 1000
    assert got[0].request.path == "/b"


async def test_cancelled_waiter_leaves_nothing_behind(server: trio_ws.Server) -> None:
    url = url_of(server)
    async with trio_ws.open_pool(max_connections=1) as pool:
        async with pool.acquire(url) as held:
            with trio.move_on_after(0.01) as scope:
                async with pool.acquire(url):
                    pass  # pragma: no cover
            assert scope.cancelled_caught
        assert counts(pool) == (1, 1, 0)
        async with pool.acquire(url) as ws:
            assert ws is held


@pytest.mark.parametrize("wanted", ["/", "/other"])
async def test_waiter_cancelled_as_it_is_served_gives_the_connection_back(
    server: trio_ws.Server, recorder: Recorder, wanted: str
) -> None:
    # Served with the released connection itself ("/"), or with the right
    # to close it and open its own ("/other"): either way, it is put back.
    url = url_of(server)
    async with trio_ws.open_pool(max_connections=1) as pool, trio.open_nursery() as users:
        scope = trio.CancelScope()

        async def waiter() -> None:
            with scope:
                async with pool.acquire(url_of(server, wanted)):
                    pytest.fail("a cancelled waiter used the connection")  # pragma: no cover

        async with pool.acquire(url) as held:
            users.start_soon(waiter)
            await settle()
            # Cancelled, then served, before it gets to run.
            scope.cancel()
        await settle()
        assert scope.cancelled_caught
        assert counts(pool) == (1, 1, 0)
        assert not held.closed
        async with pool.acquire(url) as ws:
            assert ws is held
    # One connection all along, closed by the pool's exit.
    assert (await recorder.closed()).code == 1000
    assert held.close_code == 1000


async def test_handshake_errors_propagate_and_free_the_slot(
    server: trio_ws.Server, refused_url: str
) -> None:
    async with trio_ws.open_pool(max_connections=1) as pool:
        with pytest.raises(trio_ws.ConnectFailed) as info:
            async with pool.acquire(refused_url):
                pass  # pragma: no cover
        assert type(info.value) is trio_ws.ConnectFailed
        assert counts(pool) == (0, 0, 0)
        async with pool.acquire(url_of(server)) as ws:
            assert not ws.closed


# -- the clean-return rule -----------------------------------------------------------


async def test_connection_closed_by_the_peer_while_idle_is_dropped(
    server: trio_ws.Server, recorder: Recorder
) -> None:
    url = url_of(server)
    async with trio_ws.open_pool() as pool:
        async with pool.acquire(url) as first:
            pass
        await (await recorder.connection()).aclose()
        await first.wait_closed()
        await settle()
        assert counts(pool) == (0, 0, 0)
        async with pool.acquire(url) as second:
            await second.send("fresh")
            assert await second.receive() == "fresh"
        assert second is not first


async def test_connection_that_broke_during_use_is_dropped(
    server: trio_ws.Server, recorder: Recorder
) -> None:
    url = url_of(server)
    async with trio_ws.open_pool() as pool:
        async with pool.acquire(url) as first:
            await (await recorder.connection()).aclose(1011, "oops")
            with pytest.raises(trio_ws.ConnectionClosed):
                await first.receive()
        assert counts(pool) == (0, 0, 0)
        async with pool.acquire(url) as second:
            assert second is not first


async def test_connection_with_unread_messages_is_not_reused(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def chatty(ws: trio_ws.WebSocket) -> None:
        async for message in ws:
            await ws.send(message)
            await ws.send("an extra message")

    recorder = Recorder(chatty)
    server = await start_server(nursery, recorder)
    url = url_of(server)
    async with trio_ws.open_pool() as pool:
        async with pool.acquire(url) as first:
            await first.send("question")
            assert await first.receive() == "question"
            await trio.sleep(1)  # the connection reads what follows in the background
            assert first.pending == 1
        # Closed with 1000 and dropped.
        assert first.close_code == 1000
        assert (await recorder.closed()).code == 1000
        assert counts(pool) == (0, 0, 0)
        async with pool.acquire(url) as second:
            assert second is not first


async def test_connection_that_received_a_message_while_idle_is_not_reused(
    server: trio_ws.Server, recorder: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    url = url_of(server)
    async with trio_ws.open_pool() as pool:
        async with pool.acquire(url) as first:
            pass
        await (await recorder.connection()).send("unsolicited")
        await trio.sleep(1)
        assert first.pending == 1
        async with pool.acquire(url) as second:
            assert second is not first
        assert (await recorder.closed()).code == 1000
        await settle()
        assert first.close_code == 1000
        assert counts(pool) == (1, 1, 0)


@pytest.mark.parametrize(("ending", "code"), [("raise", 1011), ("cancel", 1001)])
async def test_a_block_that_fails_drops_its_connection(
    server: trio_ws.Server, recorder: Recorder, ending: str, code: int
) -> None:
    url = url_of(server)
    async with trio_ws.open_pool() as pool:
        with trio.move_on_after(10) as scope:
            try:
                async with pool.acquire(url) as first:
                    await first.send("request sent, reply not read")
                    if ending == "raise":
                        raise KeyError("body")
                    scope.cancel()
                    await trio.sleep_forever()
            except KeyError:
                assert ending == "raise"
        assert (await recorder.closed()).code == code
        assert first.close_code == code
        assert counts(pool) == (0, 0, 0)
        async with pool.acquire(url) as second:
            assert second is not first


# -- idle reaping ----------------------------------------------------------------------


async def test_idle_connections_are_closed_after_max_idle_time(
    server: trio_ws.Server, recorder: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio_ws.open_pool(max_idle_time=60, ping_interval=None) as pool:
        async with pool.acquire(url_of(server, "/a")) as a:
            pass
        await trio.sleep(20)
        async with pool.acquire(url_of(server, "/b")) as b:
            pass
        await trio.sleep(30)  # t=50: "a" is used again, and idle again from now
        async with pool.acquire(url_of(server, "/a")) as again:
            assert again is a
        await trio.sleep(29.5)  # t=79.5
        assert not a.closed
        assert not b.closed
        await trio.sleep(1)  # t=80.5: "b" has been idle for 60.5 s
        assert b.close_code == 1000
        assert not a.closed
        assert counts(pool) == (1, 1, 0)
        await trio.sleep(29)  # t=109.5: "a" has been idle for 59.5 s
        assert not a.closed
        await trio.sleep(1)
        assert a.close_code == 1000
        assert counts(pool) == (0, 0, 0)
    assert [(await recorder.closed()).code for _ in range(2)] == [1000, 1000]


async def test_no_reaping_without_max_idle_time(
    server: trio_ws.Server, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio_ws.open_pool(max_idle_time=None, ping_interval=None) as pool:
        async with pool.acquire(url_of(server)) as ws:
            pass
        await trio.sleep(3600)
        assert not ws.closed
        assert counts(pool) == (1, 1, 0)


# -- leaving the block -------------------------------------------------------------------


@pytest.mark.parametrize(("cancelled", "code"), [(False, 1000), (True, 1001)])
async def test_leaving_the_block_closes_everything(
    server: trio_ws.Server, recorder: Recorder, cancelled: bool, code: int
) -> None:
    tasks = all_tasks()
    fds = open_fds()
    with trio.move_on_after(10) as scope:
        async with trio_ws.open_pool() as pool:
            for path in ("/a", "/b", "/c"):
                async with pool.acquire(url_of(server, path)):
                    pass
            assert counts(pool) == (3, 3, 0)
            if cancelled:
                scope.cancel()
                await trio.sleep_forever()
    assert scope.cancelled_caught == cancelled
    assert [(await recorder.closed()).code for _ in range(3)] == [code] * 3
    assert counts(pool) == (0, 0, 0)
    await settle()
    assert all_tasks() == tasks
    assert open_fds() == fds


async def test_exceptions_from_the_block_are_not_wrapped(server: trio_ws.Server) -> None:
    async def use_then_fail() -> None:
        async with trio_ws.open_pool() as pool:
            async with pool.acquire(url_of(server)):
                pass
            raise KeyError("body")

    with pytest.raises(KeyError, match="body"):
        await use_then_fail()


async def test_users_outside_the_block_see_it_close(
    server: trio_ws.Server, recorder: Recorder
) -> None:
    url = url_of(server)
    errors: list[BaseException] = []
    async with trio.open_nursery() as outer, trio_ws.open_pool(max_connections=1) as pool:
        held = trio.Event()

        async def holder() -> None:
            async with pool.acquire(url) as ws:
                held.set()
                with pytest.raises(trio_ws.ConnectionClosed):
                    await ws.receive()

        async def waiter() -> None:
            try:
                async with pool.acquire(url):
                    pass  # pragma: no cover
            except trio.ClosedResourceError as exc:
                errors.append(exc)

        outer.start_soon(holder)
        await held.wait()
        outer.start_soon(waiter)
        await settle()
    assert len(errors) == 1
    assert (await recorder.closed()).code == 1000
    with pytest.raises(trio.ClosedResourceError):
        async with pool.acquire(url):
            pass  # pragma: no cover


async def test_misuse_is_refused(server: trio_ws.Server) -> None:
    pool = trio_ws.open_pool()
    with pytest.raises(RuntimeError, match="inside its block"):
        async with pool.acquire(url_of(server)):
            pass  # pragma: no cover
    async with pool:
        with pytest.raises(RuntimeError, match="already entered"):
            await pool.__aenter__()
        lease = pool.acquire(url_of(server))
        async with lease:
            pass
        with pytest.raises(RuntimeError, match="already entered"):
            async with lease:
                pass  # pragma: no cover
        assert repr(pool) == "<ConnectionPool size=1/10 idle=1 in_use=0 waiting=0>"


def test_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        trio_ws.open_pool(max_connections=0)
    with pytest.raises(ValueError, match="max_idle_time"):
        trio_ws.open_pool(max_idle_time=0)
    with pytest.raises(ValueError, match="max_queue"):
        trio_ws.open_pool(max_queue=0)
    with pytest.raises(TypeError):
        trio_ws.open_pool(no_such_option=1)
    with pytest.raises(ValueError, match="timeout"):
        trio_ws.open_pool().acquire("ws://h/", timeout=-1)
