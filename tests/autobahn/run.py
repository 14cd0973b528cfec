"""Run the Autobahn|Testsuite against trio_ws: its server and its client.

    python tests/autobahn/run.py [--cases '1.*' '2.*' ...] [--server-only | --client-only]
                                 [--sequential] [--stock-wstest]

(``python -m nox -s autobahn -- [options]`` does the same in nox's venv;
``--cases '*'`` runs every case, compression 12.* and 13.* included.)

Server side: ``echo_server.py`` serves on 127.0.0.1 and ``wstest -m
fuzzingclient`` runs the cases against it. Client side: ``wstest -m
fuzzingserver`` listens on 127.0.0.1 and ``client_driver.py`` runs every case
through ``trio_ws.connect``. The two sides run at the same time (each is one
wstest process, single-threaded and busy most of the time, so two cores do
both in little more than the time of one); ``--sequential`` runs one after
the other. wstest needs Python 2.7: without one, this prints ``SKIPPED:
...`` and exits 0. Its virtualenv is built once and cached in
``.nox/wstest-py27/``. wstest starts through ``wstest_launcher.py``, which
binds it to 127.0.0.1 and speeds up its own bookkeeping in the compression
cases without changing what it sends or how it judges (``--stock-wstest``:
without those speedups).

Reports go to ``reports/autobahn/``: ``server/`` and ``client/`` (wstest's
HTML and JSON reports, its spec and log, our process's log) and
``summary.json`` (verdict counts and failing cases of the sides just run).
The printed summary counts each section's verdicts and details every case
that did not pass.

Verdicts: OK, NON-STRICT and INFORMATIONAL pass. UNIMPLEMENTED is listed
but tolerated by default (wstest says it of the compression cases 12.* and
13.* when no extension is negotiated, which is a feature question, not a
conformance failure); ``--strict-unimplemented`` makes it fail. Everything
else fails, and so does a case asked for that wstest never reported
(MISSING).

Exit status: 0 when every case passed (or when skipped), 1 when some case
failed, 2 when the harness itself could not run.
"""

from __future__ import annotations

import argparse
import json
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from summary import ACCEPTED, SideSummary, format_summary, load_results
from wstest_env import SetupError, WstestEnv, find_python27

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
HOST = "127.0.0.1"
AGENT = "trio_ws"
DEFAULT_CASES = [f"{n}.*" for n in range(1, 11)]
PROGRESS_EVERY = 30.0
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0

# Python 2 code, run by the wstest virtualenv, that starts wstest bound to
# 127.0.0.1 (wstest itself binds the fuzzing server to every interface).
WSTEST_LAUNCHER = HERE / "wstest_launcher.py"

# Python 2 code that expands case patterns ("1.*") into case ids, exactly
# as wstest does, so that cases wstest never reports can be noticed.
CASE_RESOLVER = """
import json, sys
from autobahntestsuite import fuzzing as f
cases = f.CaseSet(f.CaseSetname, f.CaseBasename, f.Cases, f.CaseCategories, f.CaseSubCategories)
sys.stdout.write(json.dumps(cases.parseSpecCases({"cases": json.loads(sys.argv[1])})))
"""


class HarnessError(Exception):
    """The harness could not run a side to completion."""


#: Set on Ctrl-C or SIGTERM: every side stops waiting, and its processes are stopped.
STOPPING = threading.Event()


def check_stopping() -> None:
    if STOPPING.is_set():
        raise HarnessError("interrupted")


# -- child processes -------------------------------------------------------------


class Children:
    """Child processes that must not outlive the harness."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []

    def start(self, command: list[str], *, log: IO[str], **kwargs: Any) -> subprocess.Popen[Any]:
        shown = ("<python -c code>" if "\n" in arg else arg for arg in command)
        log.write(f"$ {' '.join(shown)}\n")
        log.flush()
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stderr=log, cwd=kwargs.pop("cwd", REPO), **kwargs
        )
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any]) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT seconds."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(self._procs[:]):
            self.stop(proc)


@contextmanager
def children() -> Iterator[Children]:
    group = Children()
    try:
        yield group
    finally:
        group.stop_all()


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def read_ready_port(proc: subprocess.Popen[Any], timeout: float) -> int:
    """Wait for the echo server's ``ready PORT`` line."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_stopping()
        readable, _, _ = select.select([proc.stdout], [], [], 0.5)
        if readable:
            line = proc.stdout.readline()
            if line.startswith("ready "):
                return int(line.split()[1])
            if not line:
                break
        elif proc.poll() is not None:
            break
    raise HarnessError(f"the echo server did not start within {timeout:.0f} s")


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_for_port(proc: subprocess.Popen[Any], port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_stopping()
        if proc.poll() is not None:
            raise HarnessError(f"wstest exited ({proc.returncode}) before listening on {port}")
        if port_accepts(port):
            return
        time.sleep(0.2)
    raise HarnessError(f"wstest did not listen on {HOST}:{port} within {timeout:.0f} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def count_lines(path: Path, needle: str) -> int:
    try:
        with path.open(errors="replace") as lines:
            return sum(needle in line for line in lines)
    except OSError:
        return 0


def _name(proc: subprocess.Popen[Any]) -> str:
    """``wstest``, ``echo_server.py`` or ``client_driver.py``."""
    args = [str(a) for a in proc.args] if isinstance(proc.args, list) else [str(proc.args)]
    if str(WSTEST_LAUNCHER) in args:
        return "wstest"
    return Path(args[1]).name if len(args) > 1 else args[0]


def wait_exit(
    proc: subprocess.Popen[Any],
    timeout: float,
    progress: Callable[[float], str],
    also_alive: subprocess.Popen[Any] | None = None,
) -> int:
    """Wait for ``proc`` to exit, printing progress; fail after ``timeout``
    seconds or if ``also_alive`` dies first."""
    started = time.monotonic()
    next_report = started + PROGRESS_EVERY
    while True:
        try:
            return proc.wait(1.0)
        except subprocess.TimeoutExpired:
            pass
        check_stopping()
        now = time.monotonic()
        if also_alive is not None and also_alive.poll() is not None:
            raise HarnessError(f"{_name(also_alive)} exited ({also_alive.returncode}) mid-run")
        if now - started > timeout:
            raise HarnessError(f"{_name(proc)} not finished within {timeout:.0f} s (--timeout)")
        if now >= next_report:
            print(f"  ... {progress(now - started)}", flush=True)
            next_report = now + PROGRESS_EVERY


# -- wstest --------------------------------------------------------------------


def wstest_command(
    env: WstestEnv, args: argparse.Namespace, mode: str, spec: Path, *extra: str
) -> list[str]:
    stock = ["--stock"] if args.stock_wstest else []
    launcher = [str(env.python), "-u", str(WSTEST_LAUNCHER), *stock]
    return [*launcher, "-m", mode, "-s", str(spec), *extra]


def resolve_cases(env: WstestEnv, patterns: list[str]) -> list[str]:
    result = subprocess.run(
        [str(env.python), "-c", CASE_RESOLVER, json.dumps(patterns)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise HarnessError(f"cannot resolve cases {patterns}:\n{result.stderr[-2000:]}")
    cases: list[str] = json.loads(result.stdout)
    if not cases:
        raise HarnessError(f"no Autobahn case matches {patterns}")
    return cases


def write_spec(outdir: Path, spec: dict[str, Any]) -> Path:
    path = outdir / "spec.json"
    path.write_text(json.dumps(spec, indent=2) + "\n")
    return path


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


def progress_of(side: str, log: Path, total: int) -> Callable[[float], str]:
    def describe(elapsed: float) -> str:
        done = count_lines(log, "Running test case ID")
        return f"{side}: {done}/{total} cases, {elapsed:.0f} s"

    return describe


# -- the two sides ---------------------------------------------------------------


def run_server_side(
    env: WstestEnv,
    args: argparse.Namespace,
    cases: list[str],
    outdir: Path,
    ready: threading.Event,
) -> None:
    """wstest's fuzzing client against trio_ws's echo server."""
    ready.set()
    wstest_log = outdir / "wstest.log"
    with children() as procs, (outdir / "echo_server.log").open("w") as server_log:
        echo = procs.start(
            [sys.executable, str(HERE / "echo_server.py"), "0"],
            log=server_log,
            stdout=subprocess.PIPE,
            text=True,
        )
        port = read_ready_port(echo, STARTUP_TIMEOUT)
        print(f"  server: trio_ws echo server on {HOST}:{port}", flush=True)
        spec = write_spec(
            outdir,
            {
                "outdir": str(outdir),
                "servers": [{"agent": AGENT, "url": f"ws://{HOST}:{port}"}],
                "cases": args.cases,
                "exclude-cases": [],
                "exclude-agent-cases": {},
            },
        )
        with wstest_log.open("w") as log:
            wstest = procs.start(
                wstest_command(env, args, "fuzzingclient", spec), log=log, stdout=log, cwd=outdir
            )
            status = wait_exit(
                wstest,
                args.timeout,
                progress_of("server", wstest_log, len(cases)),
                also_alive=echo,
            )
        if status != 0:
            raise HarnessError(f"wstest exited with {status}:\n{tail(wstest_log)}")
        procs.stop(echo)


def run_client_side(
    env: WstestEnv,
    args: argparse.Namespace,
    cases: list[str],
    outdir: Path,
    ready: threading.Event,
) -> None:
    """trio_ws's client (client_driver.py) against wstest's fuzzing server.

    ``ready`` is set once wstest listens (or could not): until then the port
    is only known to be free, and the other side's connections, which take
    ports from the same range, must not take it first."""
    port = free_port()
    url = f"ws://{HOST}:{port}"
    spec = write_spec(
        outdir,
        {
            "url": url,
            "outdir": str(outdir),
            "cases": args.cases,
            "exclude-cases": [],
            "exclude-agent-cases": {},
        },
    )
    wstest_log = outdir / "wstest.log"
    driver_log = outdir / "client_driver.log"
    with children() as procs, wstest_log.open("w") as log, driver_log.open("w") as dlog:
        # --webport=0: no extra HTTP server for wstest's web UI.
        command = wstest_command(env, args, "fuzzingserver", spec, "--webport=0")
        wstest = procs.start(command, log=log, stdout=log, cwd=outdir)
        try:
            wait_for_port(wstest, port, STARTUP_TIMEOUT)
        finally:
            ready.set()
        print(f"  client: wstest fuzzing server on {HOST}:{port}", flush=True)
        driver = procs.start(
            driver_command(url, f"--expected-cases={len(cases)}", args=args),
            log=dlog,
            stdout=dlog,
        )
        try:
            status = wait_exit(
                driver,
                args.timeout,
                progress_of("client", wstest_log, len(cases)),
                also_alive=wstest,
            )
            if status != 0:
                raise HarnessError(f"client_driver.py exited with {status}:\n{tail(driver_log)}")
        except HarnessError:
            if wstest.poll() is None and not STOPPING.is_set():
                procs.stop(driver)
                salvage_reports(procs, url, args, dlog)
            raise
        procs.stop(wstest)


def driver_command(url: str, *extra: str, args: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        str(HERE / "client_driver.py"),
        url,
        f"--agent={AGENT}",
        f"--case-timeout={args.case_timeout}",
        *extra,
    ]


def salvage_reports(procs: Children, url: str, args: argparse.Namespace, log: IO[str]) -> None:
    """After a timeout or a crash: have wstest report the cases that did run."""
    print("  asking wstest for the reports of the cases that ran", flush=True)
    command = driver_command(url, "--reports-only", "--report-timeout=60", args=args)
    proc = procs.start(command, log=log, stdout=log)
    try:
        proc.wait(90)
    except subprocess.TimeoutExpired:
        procs.stop(proc)


SIDES = {
    "server": ("trio_ws server (echo_server.py) vs wstest fuzzingclient", run_server_side),
    "client": ("trio_ws client (client_driver.py) vs wstest fuzzingserver", run_client_side),
}


def run_side(
    name: str,
    env: WstestEnv,
    args: argparse.Namespace,
    cases: list[str],
    ready: threading.Event | None = None,
) -> SideSummary:
    """Run one side; ``ready`` is set once the side no longer needs the machine's
    free ports to itself (see ``run_client_side``)."""
    title, runner = SIDES[name]
    outdir = fresh_dir(args.reports / name)
    print(f"== {name}: {title}, {len(cases)} cases", flush=True)
    started = time.monotonic()
    error = None
    try:
        runner(env, args, cases, outdir, ready or threading.Event())
    except HarnessError as exc:
        error = str(exc)
        print(f"  {name}: ERROR: {error}", flush=True)
    except Exception as exc:  # a bug here must not leave the other side unreported
        error = f"harness crashed: {exc!r}"
        traceback.print_exc()
        print(f"  {name}: ERROR: {error}", flush=True)
    results = load_results(outdir, AGENT, cases)
    return SideSummary(
        side=name,
        agent=AGENT,
        outdir=outdir,
        results=results,
        strict_unimplemented=args.strict_unimplemented,
        wall_seconds=time.monotonic() - started,
        error=error,
    )


# -- main --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        default=DEFAULT_CASES,
        metavar="PATTERN",
        help="case patterns, e.g. 1.* 9.1.6 or * (commas work too; default: 1.* to 10.*)",
    )
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="run the server side, then the client side (default: both at once)",
    )
    parser.add_argument(
        "--stock-wstest",
        action="store_true",
        help="run wstest without wstest_launcher.py's speedups (same cases and verdicts)",
    )
    side = parser.add_mutually_exclusive_group()
    side.add_argument("--server-only", action="store_true", help="only test trio_ws's server")
    side.add_argument("--client-only", action="store_true", help="only test trio_ws's client")
    parser.add_argument(
        "--strict-unimplemented",
        action="store_true",
        help="count UNIMPLEMENTED verdicts as failures (default: listed, tolerated)",
    )
    parser.add_argument(
        "--reports",
        type=Path,
        default=REPO / "reports" / "autobahn",
        help="where reports go (default: reports/autobahn)",
    )
    parser.add_argument(
        "--wstest-env",
        type=Path,
        default=REPO / ".nox" / "wstest-py27",
        help="the cached wstest virtualenv (default: .nox/wstest-py27)",
    )
    parser.add_argument("--python2", type=Path, help="Python 2.7 to build wstest's venv with")
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds allowed per side (default: %(default)s)",
    )
    parser.add_argument(
        "--case-timeout",
        type=float,
        default=1100.0,
        help="client side: seconds per case (default: %(default)s, above wstest's own limits)",
    )
    args = parser.parse_args(argv)
    args.cases = [p.strip() for item in args.cases for p in item.split(",") if p.strip()]
    args.reports = args.reports.resolve()
    return args


def chosen_sides(args: argparse.Namespace) -> list[str]:
    if args.server_only:
        return ["server"]
    if args.client_only:
        return ["client"]
    return ["server", "client"]


def prepare_env(args: argparse.Namespace) -> WstestEnv | None:
    """The wstest environment, or None (after saying so) without Python 2.7."""
    python27, tried = find_python27(args.python2)
    if python27 is None:
        where = ", ".join(str(p) for p in tried) or "(nowhere to look)"
        print(f"SKIPPED: autobahn needs Python 2.7 for wstest; none found at {where}")
        return None
    env = WstestEnv(args.wstest_env.resolve())
    env.ensure(python27)
    return env


def write_summary_json(
    args: argparse.Namespace, summaries: list[SideSummary], wall: float
) -> Path:
    path: Path = args.reports / "summary.json"
    data = {
        "cases": args.cases,
        "strict_unimplemented": args.strict_unimplemented,
        "sides_concurrent": len(summaries) > 1 and not args.sequential,
        "stock_wstest": args.stock_wstest,
        "accepted": list(ACCEPTED),
        "ok": all(s.ok for s in summaries),
        "wall_seconds": round(wall, 1),
        "sides": {s.side: s.to_json() for s in summaries},
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def report(args: argparse.Namespace, summaries: list[SideSummary], wall: float) -> int:
    print()
    for summary in summaries:
        print(format_summary(summary))
        print()
    path = write_summary_json(args, summaries, wall)
    print(f"summary: {path}")
    print(f"total wall time: {wall:.0f} s")
    failed = sum(len(s.failures()) for s in summaries)
    skipped = 0 if args.strict_unimplemented else sum(len(s.unimplemented()) for s in summaries)
    passed = sum(len(s.results) for s in summaries) - failed - skipped
    print(f"autobahn: {passed} passed, {failed} failed, {skipped} skipped")
    if any(s.error for s in summaries):
        return 2
    return 0 if failed == 0 else 1


def _terminate(signum: int, _frame: object) -> None:
    # Unwind like Ctrl-C, through the cleanup of child processes.
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        env = prepare_env(args)
        if env is None:
            return 0
        cases = resolve_cases(env, args.cases)
    except (SetupError, HarnessError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    args.reports.mkdir(parents=True, exist_ok=True)
    summaries = run_sides(env, args, cases)
    return report(args, summaries, time.monotonic() - started)


def run_sides(env: WstestEnv, args: argparse.Namespace, cases: list[str]) -> list[SideSummary]:
    """Both sides at once, each in a thread (``--sequential``: one after the other)."""
    names = chosen_sides(args)
    if args.sequential or len(names) == 1:
        return [run_side(name, env, args, cases) for name in names]
    summaries: dict[str, SideSummary] = {}
    client_ready = threading.Event()

    def client() -> None:
        summaries["client"] = run_side("client", env, args, cases, client_ready)

    def server() -> None:
        # The client side's wstest first takes the free port it was given.
        client_ready.wait(STARTUP_TIMEOUT + STOP_TIMEOUT)
        summaries["server"] = run_side("server", env, args, cases)

    threads = [
        threading.Thread(target=side, name=side.__name__, daemon=True) for side in (client, server)
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
    except KeyboardInterrupt:
        STOPPING.set()  # each side stops its processes within seconds
        for thread in threads:
            thread.join()
        raise
    return [summaries[name] for name in names]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted: child processes stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
