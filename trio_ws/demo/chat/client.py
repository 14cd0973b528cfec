"""A terminal client for the chat server in server.py.

    python -m trio_ws chat-client ws://127.0.0.1:8765/ --name ann [--room lobby]
    python examples/chat/client.py ws://127.0.0.1:8765/ --name ann    # the same

It joins the room, prints what happens there, and sends each line you type
to the room you joined last. Commands: ``/join ROOM``, ``/leave ROOM``,
``/quit``; a line that starts with ``//`` is sent with one ``/`` less.
Ctrl-D (end of input) also quits, closing the connection with 1000, and
Ctrl-C leaves with 1001 (going away).
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from typing import Any, TextIO

import trio

import trio_ws

COMMANDS = "/join ROOM, /leave ROOM, /quit (// sends a line that starts with /)"


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


async def talk(
    ws: trio_ws.WebSocket,
    name: str,
    room: str,
    read_line: Callable[[], str],
    say: Callable[[str], None],
) -> None:
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
        elif command in ("/join", "/leave"):
            say(f"! {command} needs a room: {command} ROOM")  # said here, not sent
        elif text.startswith("/") and not text.startswith("//"):
            say(f"! unknown command {command}; commands: {COMMANDS}")
        elif text.strip():
            text = text.removeprefix("/")  # "//..." is a message that starts with "/"
            await ws.send_json({"type": "chat", "room": current, "text": text})


async def chat(url: str, name: str, room: str, read_line: Callable[[], str], out: TextIO) -> None:
    """Join ``room`` as ``name`` at ``url``; send what ``read_line`` gives
    (a blocking function, run in a thread) until it returns "" or "/quit";
    print what arrives, and how the connection closed. Raises
    ``trio_ws.HandshakeError`` (or ``InvalidURL``) if it cannot connect."""

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    ws: trio_ws.WebSocket | None = None
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
                await talk(ws, name, room, read_line, say)
                await ws.aclose()  # end of input: close with 1000
            except trio_ws.ConnectionClosed:
                pass  # the server closed first
    finally:
        if ws is not None:  # connected: say how it ended (cancelled too)
            say(f"closed: {ws.close_info}")


async def main(url: str, name: str, room: str) -> None:
    """chat() on the terminal. Ctrl-C (or SIGTERM) leaves, closing with
    1001 (going away), and says "stopped"."""
    interrupted = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def leave_on_ctrl_c() -> None:
                nonlocal interrupted
                async for _ in signals:
                    interrupted = True
                    nursery.cancel_scope.cancel()

            nursery.start_soon(leave_on_ctrl_c)
            await chat(url, name, room, sys.stdin.readline, sys.stdout)
            nursery.cancel_scope.cancel()
    if interrupted:
        print("stopped", flush=True)
