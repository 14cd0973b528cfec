"""A terminal client for the chat server in server.py.

    python examples/chat/client.py ws://127.0.0.1:8765/ --name ann [--room lobby]
    python -m trio_ws chat-client ws://127.0.0.1:8765/ --name ann     # the same

It joins the room, prints what happens there, and sends each line you type
to the room you joined last. Commands: ``/join ROOM``, ``/leave ROOM``,
``/quit``; Ctrl-D (end of input) also quits, closing the connection with
1000, and Ctrl-C leaves with 1001 (going away).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable
from typing import Any, TextIO

import trio

import trio_ws


def describe(message: dict[str, Any]) -> str:
    """One server message as a line of text."""
    kind, room = message.get("type"), message.get("room")
    if kind == "welcome":
        members = ", ".join(message["members"])
        return f"* you joined #{room} as {message['you']}; here: {members}"
    if kind == "joined":
        return f"* {message['name']} joined #{room}"
    if kind == "left":
        return f"* {message['name']} left #{room}"
    if kind == "message":
        return f"[#{room}] {message['name']}: {message['text']}"
    if kind == "error":
        return f"! {message['error']}"
    return f"? {message}"


async def talk(ws: trio_ws.WebSocket, name: str, room: str, read_line: Callable[[], str]) -> None:
    """Join ``room``, then turn each line of input into a message."""
    current = room
    await ws.send_json({"type": "join", "room": current, "name": name})
    while True:
        line = await trio.to_thread.run_sync(read_line, abandon_on_cancel=True)
        text = line.rstrip("\n")
        if not line or text == "/quit":
            return
        command, _, argument = text.partition(" ")
        if command == "/join" and argument.strip():
            current = argument.strip()
            await ws.send_json({"type": "join", "room": current, "name": name})
        elif command == "/leave" and argument.strip():
            await ws.send_json({"type": "leave", "room": argument.strip()})
        elif text.strip():
            await ws.send_json({"type": "chat", "room": current, "text": text})


async def chat(url: str, name: str, room: str, read_line: Callable[[], str], out: TextIO) -> int:
    """Join ``room`` as ``name`` at ``url``; send what ``read_line`` gives
    (a blocking function, run in a thread) until it returns "" or "/quit";
    print what arrives. Returns the exit status."""

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    try:
        async with trio_ws.connect(url) as ws, trio.open_nursery() as nursery:

            async def printer() -> None:
                try:
                    async for raw in ws:
                        try:
                            say(describe(json.loads(raw)))
                        except (ValueError, TypeError, KeyError, AttributeError):
                            say(f"? {raw!r}")
                except trio_ws.ConnectionClosed:
                    pass
                nursery.cancel_scope.cancel()  # closed: stop waiting for input

            nursery.start_soon(printer)
            try:
                await talk(ws, name, room, read_line)
                await ws.aclose()  # end of input: close with 1000
            except trio_ws.ConnectionClosed:
                pass  # the server closed first
    except trio_ws.HandshakeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    say(f"closed: {ws.close_info}")
    return 0


async def main(url: str, name: str, room: str) -> int:
    """chat() on the terminal; Ctrl-C leaves (closing with 1001, going away)."""
    status = 130
    async with trio.open_nursery() as nursery:

        async def leave_on_ctrl_c() -> None:
            with trio.open_signal_receiver(signal.SIGINT) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()

        nursery.start_soon(leave_on_ctrl_c)
        status = await chat(url, name, room, sys.stdin.readline, sys.stdout)
        nursery.cancel_scope.cancel()
    return status


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the chat server's ws:// URL")
    parser.add_argument("--name", required=True, help="your name in the chat")
    parser.add_argument("--room", default="lobby", help="the room to join first (lobby)")
    args = parser.parse_args(argv)
    return trio.run(main, args.url, args.name, args.room)


if __name__ == "__main__":
    raise SystemExit(run())
