"""Developer tasks. ``python -m nox`` runs tests, lint, typecheck and autobahn."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "autobahn"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

PEERS = ["websockets==17.4", "trio-websocket==0.12.2"]


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, with a coverage report."""
    session.install("-e", ".[test]")
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "report")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the library."""
    session.install("-e", ".[redis]", "mypy>=1.10", "trustme", "exceptiongroup")
    session.run("mypy", "--strict", "trio_ws")


@nox.session
def autobahn(session: nox.Session) -> None:
    """The whole Autobahn|Testsuite against our server and our client (127.0.0.1 only).

    Needs Python 2.7 for wstest; skips with a message where there is none.
    """
    session.install("-e", ".", "virtualenv<20.22")
    # Every case, compression included; UNIMPLEMENTED counts as a failure.
    args = session.posargs or ["--cases", "*", "--strict-unimplemented"]
    session.run("python", "tests/autobahn/run.py", *args)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: trio_ws side by side with its peers, medians and ratios."""
    session.install("-e", ".[redis]", *PEERS, "python-socketio[asyncio_client]", "redis")
    session.run("python", "bench/run.py", *session.posargs)
    # With each library's defaults: permessage-deflate where it negotiates it.
    session.run(
        "python",
        "bench/run.py",
        "--compression",
        "default",
        "--sizes",
        "32:text,64K:text,64K:binary,1M:text",
        *session.posargs,
    )
    session.run("python", "bench/stalled_writer.py", "--rounds", "2")
    quick = [a for a in session.posargs if a == "--quick"]
    session.run("python", "bench/handshake.py", *quick)
    session.run("python", "bench/fanout.py", *quick)
    session.run("python", "bench/fanout.py", "--compression", *quick)
    session.run("python", "bench/memory.py", *(["--connections", "50"] if quick else []))
    session.run("python", "bench/hostile.py", *(["--connections", "5"] if quick else []))
    session.run("python", "bench/backplane.py", *quick)
