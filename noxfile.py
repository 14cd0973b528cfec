"""Developer tasks.

``python -m nox`` (the README's test command) runs tests, lint, typecheck,
packaging and autobahn; ``python -m nox -s pythons`` runs the test suite on
the other supported Pythons too. The README's table lists every session.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import xml.etree.ElementTree as ElementTree
import zipfile
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "packaging", "autobahn"]
nox.options.reuse_existing_virtualenvs = True

PEERS = ["websockets==17.4", "trio-websocket==0.12.2"]

#: The Python versions trio_ws supports: pyproject.toml's classifiers say the same.
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
PYPROJECT = Path(__file__).with_name("pyproject.toml")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, with a coverage report."""
    session.install("-e", ".[test]")
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "report")


def _python_version(python: str) -> str | None:
    """``X.Y`` of the interpreter ``python``, or None if it does not run."""
    probe = "import sys; print('%d.%d' % sys.version_info[:2])"
    try:
        result = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _pyenv_roots() -> list[Path]:
    roots = [Path.home() / ".pyenv"]
    if os.environ.get("PYENV_ROOT"):
        roots.insert(0, Path(os.environ["PYENV_ROOT"]))
    if (pyenv := shutil.which("pyenv")) is not None:
        try:
            root = subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=30)
            if root.returncode == 0 and root.stdout.strip():
                roots.insert(0, Path(root.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    return list(dict.fromkeys(roots))


def find_python(version: str) -> tuple[str | None, list[str]]:
    """An interpreter of ``version`` (``X.Y``) that runs, and every place tried:
    ``pythonX.Y`` on the PATH (a pyenv shim there runs only the versions
    pyenv has selected), then pyenv's installed ``X.Y.Z``, newest first."""
    candidates = [shutil.which(f"python{version}") or f"python{version} on the PATH"]
    for root in _pyenv_roots():
        installed = [
            path
            for path in root.glob(f"versions/{version}.*/bin/python{version}")
            if re.fullmatch(rf"{re.escape(version)}\.\d+", path.parents[1].name)
        ]
        installed.sort(key=lambda path: int(path.parents[1].name.rsplit(".", 1)[1]), reverse=True)
        candidates += [str(path) for path in installed] or [f"{root}/versions/{version}.*"]
    for candidate in candidates:
        if Path(candidate).is_absolute() and _python_version(candidate) == version:
            return candidate, candidates
    return None, candidates


def _pytest_counts(junit: Path) -> str:
    """Counts of passed, failed and skipped tests from pytest's JUnit XML report."""
    try:
        suite = ElementTree.parse(junit).getroot()
    except (OSError, ElementTree.ParseError):
        return "no report"
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    if suite is None:
        return "no report"
    total, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    return f"{total - skipped - failed} passed, {failed} failed, {skipped} skipped"


@nox.session(python=False)
def pythons(session: nox.Session) -> None:
    """The test suite, without coverage, on every other supported Python here.

    The tests session runs the suite on the Python that runs nox. This one
    runs it on each other version in PYTHONS, found as ``pythonX.Y`` on the
    PATH or among pyenv's versions, each in its own virtualenv
    (.nox/pythons-X.Y). It ends with a table of every supported version: the
    Python used and its counts, or NOT FOUND and where it was looked for. A
    version not found fails the session where the CI environment variable is
    set (as nox does for missing interpreters); elsewhere it is a warning, so
    that a machine with one Python still runs the README's test command.
    """
    classified = re.findall(r'"Programming Language :: Python :: (3\.\d+)"', PYPROJECT.read_text())
    if tuple(classified) != PYTHONS:
        session.error(f"pyproject.toml's classifiers say {classified}, PYTHONS {list(PYTHONS)}")
    current = f"{sys.version_info[0]}.{sys.version_info[1]}"
    rows: list[tuple[str, str, str]] = []
    failed, missing = [], []
    for version in PYTHONS:
        if version == current:
            rows.append((version, sys.executable, "the tests session's (with coverage)"))
            continue
        python, tried = find_python(version)
        if python is None:
            missing.append(version)
            rows.append((version, "NOT FOUND", "tried " + ", ".join(tried)))
            continue
        venv = Path(".nox", f"pythons-{version}").resolve()
        venv_python = str(venv / "bin" / "python")
        if _python_version(venv_python) != version:
            shutil.rmtree(venv, ignore_errors=True)
            session.run(python, "-m", "venv", str(venv))
        env = {
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(venv),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }
        install = [venv_python, "-m", "pip", "install", "-q", "-e", ".[test]"]
        session.run(*install, env=env, silent=True)  # as session.install: output on failure
        junit = venv / "junit.xml"
        junit.unlink(missing_ok=True)
        try:
            session.run(
                venv_python, "-m", "pytest", f"--junitxml={junit}", *session.posargs, env=env
            )
        except nox.command.CommandFailed:
            failed.append(version)
        rows.append((version, python, _pytest_counts(junit)))
    session.log("the test suite on each supported Python:")
    for version, python, outcome in rows:
        session.log(f"  Python {version}: {python}: {outcome}")
    if failed:
        session.error(f"the test suite failed on Python {', '.join(failed)}")
    if missing:
        where = f"not found: Python {', '.join(missing)}; the suite did not run there"
        if "CI" in os.environ:
            session.error(f"{where} (an error where CI is set)")
        session.warn(f"{'!' * 20} {where} {'!' * 20}")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the library."""
    session.install(
        "-e", ".[redis,socks]", "mypy>=1.10", "trustme", "exceptiongroup", "pytest", "pytest-trio"
    )
    session.run("mypy", "--strict", "trio_ws")


@nox.session
def autobahn(session: nox.Session) -> None:
    """The whole Autobahn|Testsuite against our server and our client (127.0.0.1 only).

    The two sides run at the same time. Needs Python 2.7 for wstest; skips
    with a message where there is none.
    """
    session.install("-e", ".", "virtualenv<20.22")
    # Every case, compression included; UNIMPLEMENTED counts as a failure.
    args = session.posargs or ["--cases", "*", "--strict-unimplemented"]
    session.run("python", "tests/autobahn/run.py", *args)


@nox.session
def packaging(session: nox.Session) -> None:
    """The sdist and the wheel: built, checked with twine, installed and smoke-tested.

    ``python -m build`` makes the sdist and, from it, the wheel (with the C
    accelerator); the sdist is built into a wheel again where the C compiler
    fails (CC=/bin/false), which must fall back to pure Python. Each wheel is
    installed into a fresh virtualenv and tests/packaging/smoke.py runs there,
    from a temporary directory outside the checkout.
    """
    session.install("build", "twine")
    tmp = Path(session.create_tmp()).resolve()
    dist, no_cc = tmp / "dist", tmp / "dist-no-compiler"
    for old in (dist, no_cc, tmp / "sdist"):
        shutil.rmtree(old, ignore_errors=True)
    # silent: their output (hundreds of lines) shows only if they fail
    session.run("python", "-m", "build", "--outdir", str(dist), ".", silent=True)
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    with tarfile.open(sdist) as archive:
        if hasattr(tarfile, "data_filter"):  # 3.10.12 and later
            archive.extraction_filter = tarfile.data_filter
        archive.extractall(tmp / "sdist")
    (unpacked,) = (tmp / "sdist").iterdir()
    build_wheel = ["python", "-m", "build", "--wheel", "--outdir", str(no_cc), str(unpacked)]
    output = session.run(*build_wheel, env={"CC": "/bin/false"}, silent=True)
    (pure_wheel,) = no_cc.glob("*.whl")
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    with_c = "yes" if shutil.which(compiler) else "any"  # no compiler here: either is right
    for built, expected in ((wheel, with_c), (pure_wheel, "no")):
        with zipfile.ZipFile(built) as archive:
            compiled = [n for n in archive.namelist() if n.startswith("trio_ws/_speedups.")]
        present = any(not n.endswith((".c", ".pyi")) for n in compiled)
        if expected != "any" and present != (expected == "yes"):
            session.error(f"{built}: the C accelerator should be {expected!r}: {compiled}")
        session.log(f"{built.relative_to(tmp)}: C accelerator {'in' if present else 'not in'} it")
    if "building extension" not in str(output):
        session.error("the build with CC=/bin/false did not say that the extension failed")
    session.run("twine", "check", "--strict", str(sdist), str(wheel), str(pure_wheel))
    smoke = Path("tests/packaging/smoke.py").resolve()
    for name, built, accelerator in (("with-c", wheel, with_c), ("no-compiler", pure_wheel, "no")):
        # Outside the checkout, so that nothing is imported from it.
        with tempfile.TemporaryDirectory(prefix=f"trio_ws-{name}-") as outside:
            venv = Path(outside, "venv")
            session.run(sys.executable, "-m", "venv", str(venv), external=True)
            python = str(venv / "bin" / "python")
            session.run(python, "-m", "pip", "install", "-q", str(built), external=True)
            session.log(f"smoke test: {built.name} ({name})")
            with session.chdir(outside):
                session.run(python, str(smoke), f"--accelerator={accelerator}", external=True)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: trio_ws side by side with its peers, medians and ratios."""
    session.install(
        "-e",
        ".[redis]",
        *PEERS,
        "python-socketio[asyncio_client]",
        "redis",
        "hypercorn",
        "starlette",
    )
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
    session.run("python", "bench/routing.py", *quick)
    session.run("python", "bench/typed.py", *quick)
    session.run("python", "bench/asgi.py", *quick)
    session.run("python", "bench/fanout.py", *quick)
    session.run("python", "bench/fanout.py", "--compression", *quick)
    session.run("python", "bench/memory.py", *(["--connections", "50"] if quick else []))
    session.run("python", "bench/hostile.py", *(["--connections", "5"] if quick else []))
    session.run("python", "bench/backplane.py", *quick)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, in docs/_build/html; any warning fails it.

    -n (nitpicky) turns every cross-reference that does not resolve into a
    warning, and MyST warns for a Markdown link to a page or heading that does
    not exist: a broken internal link fails the build, as does a link to a
    Trio or Python name missing from the local inventories (see
    docs/_inventories/README.md; the build downloads nothing). -E reads
    every page again, so that no warning hides in a cached page.
    """
    session.install("-e", ".[docs]")
    session.run(
        "sphinx-build",
        *("-E", "-n", "-W", "--keep-going", "-b", "html"),
        "docs",
        "docs/_build/html",
        *session.posargs,
    )
