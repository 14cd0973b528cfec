"""Payload masking: the compiled routine equals wsproto's, and the
pure-Python fallback still carries every message intact."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from trio_ws._wire import masking as _masking


@pytest.mark.skipif(not _masking.speedups_available(), reason="the C accelerator is not built")
@pytest.mark.parametrize("size", [0, 1, 3, 4, 7, 8, 9, 125, 4096, 65536, 100_003])
@pytest.mark.parametrize("chunk", [1, 5, 8, 1000, 1 << 20])
def test_compiled_masker_equals_wsproto(size: int, chunk: int) -> None:
    key = os.urandom(4)
    data = os.urandom(size)
    ours, theirs = _masking.Masker(key), _masking.WSPROTO_MASKER(bytearray(key))
    pieces = [data[i : i + chunk] for i in range(0, size, chunk)]
    expected = b"".join(bytes(theirs.process(bytearray(piece))) for piece in pieces)
    assert b"".join(ours.process(piece) for piece in pieces) == expected
    assert expected == bytes(b ^ key[i % 4] for i, b in enumerate(data))


@pytest.mark.skipif(not _masking.speedups_available(), reason="the C accelerator is not built")
def test_installed_and_rejects_bad_keys() -> None:
    from wsproto import frame_protocol

    assert _masking.ACTIVE
    assert frame_protocol.XorMaskerSimple is _masking.Masker
    from trio_ws._speedups import mask

    with pytest.raises(ValueError, match="4 bytes"):
        mask(b"data", b"abc", 0)
    with pytest.raises(ValueError, match="offset"):
        mask(b"data", b"abcd", 4)


FALLBACK_PROGRAM = textwrap.dedent(
    """
    import trio, trio_ws
    from trio_ws._wire import masking as _masking
    import wsproto.frame_protocol as f
    assert not _masking.ACTIVE and f.XorMaskerSimple is not _masking.Masker

    async def echo(ws):
        async for m in ws:
            await ws.send(m)

    async def main():
        async with trio.open_nursery() as n:
            server = await n.start(trio_ws.serve, echo, "127.0.0.1", 0)
            async with trio_ws.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                for size in (0, 5, 126, 70000, 300001):
                    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
                    await ws.send(data)
                    assert await ws.receive() == data
            n.cancel_scope.cancel()
        print("fallback ok")

    trio.run(main)
    """
)


def test_pure_python_fallback_works() -> None:
    env = {**os.environ, "TRIO_WS_NO_SPEEDUPS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", FALLBACK_PROGRAM],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "fallback ok"
