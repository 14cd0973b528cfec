"""The trio_ws client side of the Autobahn|Testsuite ``fuzzingserver`` mode.

Usage: ``python tests/autobahn/client_driver.py ws://127.0.0.1:PORT``

Asks the fuzzing server how many cases it has (``/getCaseCount``), runs each
one (``/runCase?case=N&agent=AGENT``) by echoing every message until the
connection closes, then asks it to write its reports
(``/updateReports?agent=AGENT``). Every connection goes through
``trio_ws.connect``. A case that fails or hangs is logged and the run goes
on: wstest's reports, not this script, say whether trio_ws behaved.

Prints one line per case. Exits 0 when the cases ran and the report update
was answered, 1 otherwise. With ``--expected-cases N``, a failed
``/getCaseCount`` is a warning and N cases are run.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import urllib.parse
from typing import Any

import trio

import trio_ws

DEFAULT_AGENT = "trio_ws"
#: Autobahn's largest messages (cases 9.1.6 and 9.2.6) are 16 MiB.
DEFAULT_MAX_MESSAGE_SIZE = 32 * 2**20
#: wstest gives a case at most 1000 s (9.5.1, 9.6.1) and then ends it itself,
#: so it, not this script, judges slow cases; this is only a last resort.
DEFAULT_CASE_TIMEOUT = 1100.0
#: Seconds allowed for /getCaseCount.
CONTROL_TIMEOUT = 60.0


class DriverError(Exception):
    """The fuzzing server did not answer a control request as expected."""


def case_url(base: str, path: str, **params: str | int) -> str:
    query = urllib.parse.urlencode(params)
    return f"{base.rstrip('/')}{path}" + (f"?{query}" if query else "")


async def get_case_count(base: str, options: dict[str, Any]) -> int:
    try:
        with trio.fail_after(CONTROL_TIMEOUT):
            async with trio_ws.connect(case_url(base, "/getCaseCount"), **options) as ws:
                message = await ws.receive()
    except (trio_ws.WebSocketError, trio.TooSlowError) as exc:
        raise DriverError(f"/getCaseCount failed: {exc!r}") from exc
    try:
        return int(message)
    except ValueError:
        raise DriverError(f"/getCaseCount answered {message!r}") from None


async def echo_until_closed(url: str, options: dict[str, Any]) -> str:
    """Run one case; return how the connection ended, in words."""
    try:
        async with trio_ws.connect(url, **options) as ws:
            async for message in ws:
                await ws.send(message)
    except trio_ws.ConnectionClosed as exc:
        return f"ConnectionClosed: {exc}"
    except trio_ws.HandshakeError as exc:
        return f"handshake failed: {exc!r}"
    return f"closed: {ws.close_info}"


async def run_case(
    base: str, index: int, agent: str, options: dict[str, Any], seconds: float
) -> str:
    url = case_url(base, "/runCase", case=index, agent=agent)
    with trio.move_on_after(seconds):
        try:
            return await echo_until_closed(url, options)
        except Exception as exc:  # one broken case must not stop the run
            logging.getLogger(__name__).exception("case %d raised", index)
            return f"unexpected error: {exc!r}"
    return f"timed out after {seconds}s"


async def update_reports(base: str, agent: str, options: dict[str, Any], seconds: float) -> None:
    """Ask for the reports. wstest writes them as soon as the connection is
    open, so how the connection then ends does not matter."""
    url = case_url(base, "/updateReports", agent=agent)
    with trio.move_on_after(seconds) as scope:
        try:
            async with trio_ws.connect(url, **options) as ws:
                async for _ in ws:
                    pass
        except trio_ws.HandshakeError as exc:
            raise DriverError(f"/updateReports failed: {exc!r}") from exc
        except trio_ws.ConnectionClosed as exc:
            print(f"WARNING: /updateReports connection: {exc}", flush=True)
    if scope.cancelled_caught:
        raise DriverError(f"/updateReports not answered within {seconds}s")
    print("reports updated", flush=True)


async def case_count(args: argparse.Namespace, options: dict[str, Any]) -> int:
    """The fuzzing server's case count, or the runner's when it cannot tell."""
    try:
        return await get_case_count(args.url, options)
    except DriverError as exc:
        if args.expected_cases is None:
            raise
        print(f"WARNING: {exc}; using --expected-cases={args.expected_cases}", flush=True)
        return int(args.expected_cases)


async def drive(args: argparse.Namespace) -> None:
    options: dict[str, Any] = {"max_message_size": args.max_message_size}
    if args.reports_only:
        await update_reports(args.url, args.agent, options, args.report_timeout)
        return
    count = await case_count(args, options)
    print(f"running {count} cases", flush=True)
    for index in range(1, count + 1):
        started = time.monotonic()
        outcome = await run_case(args.url, index, args.agent, options, args.case_timeout)
        elapsed = time.monotonic() - started
        print(f"case {index}/{count} ({elapsed:.2f}s): {outcome}", flush=True)
    await update_reports(args.url, args.agent, options, args.report_timeout)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the fuzzing server, ws://127.0.0.1:PORT")
    parser.add_argument("--agent", default=DEFAULT_AGENT)
    parser.add_argument(
        "--max-message-size",
        type=lambda text: None if text.lower() == "none" else int(text),
        default=DEFAULT_MAX_MESSAGE_SIZE,
        help="largest message accepted, in bytes, or 'none' (default: %(default)s)",
    )
    parser.add_argument(
        "--expected-cases",
        type=int,
        help="case count to use if /getCaseCount gives none (the runner knows it)",
    )
    parser.add_argument(
        "--case-timeout",
        type=float,
        default=DEFAULT_CASE_TIMEOUT,
        help="seconds per case (default: %(default)s, above wstest's own case time limits)",
    )
    parser.add_argument(
        "--reports-only", action="store_true", help="run no case, only /updateReports"
    )
    parser.add_argument("--report-timeout", type=float, default=300.0)
    parser.add_argument("--log-level", default="INFO", help="for the trio_ws logger")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if urllib.parse.urlsplit(args.url).hostname != "127.0.0.1":
        print("the fuzzing server must be on 127.0.0.1", file=sys.stderr)
        return 2
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        trio.run(drive, args)
    except DriverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
