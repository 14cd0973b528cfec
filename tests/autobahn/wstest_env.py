"""Finding Python 2.7 and keeping a cached virtualenv with wstest in it.

wstest (autobahntestsuite) runs on Python 2.7 only. The virtualenv is built
once under ``.nox/wstest-py27/`` with ``python -m virtualenv`` (a version
below 20.22, the last to create Python 2.7 environments) and reused while
its marker file says it is complete and matches the pinned version.

autobahntestsuite requires ``autobahn[accelerate]``: wsaccel (C masking and
UTF-8 validation, built from source for Python 2.7, so it needs a C compiler
and Python 2.7's headers) and ujson. Where that install fails, wstest is
installed again without them: it then masks and validates in pure Python,
slower, with the same cases and verdicts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO

AUTOBAHN_PACKAGE = "autobahntestsuite"
AUTOBAHN_VERSION = "25.10.1"
PY27_VERSION = "2.7.18"
MARKER = "trio_ws-wstest-ready"
BUILD_TIMEOUT = 900.0

#: What autobahntestsuite 25.10.1 requires (its own pins), with autobahn's
#: "accelerate" extra (wsaccel, ujson) left out: the fallback install.
WITHOUT_ACCELERATORS = [
    "autobahn[twisted]==0.10.9",
    "setuptools==44.0.0",
    "txaio==2.1.0",
    "incremental==16.10.1",
    "pyOpenSSL==19.1.0",
    "cryptography==3.3.2",
    "Twisted==19.10.0",
    "zope.interface==4.6.0",
    "jinja2==2.11.3",
    "markupsafe==1.1.1",
    "Werkzeug==1.0.1",
    "klein==17.10.0",
    "service-identity==18.1.0",
    "unittest2==1.1.0",
    "six==1.16.0",
]


class SetupError(Exception):
    """The wstest environment cannot be built."""


def _pyenv_roots() -> list[Path]:
    roots = []
    pyenv = shutil.which("pyenv")
    if pyenv is not None:
        try:
            out = subprocess.run(
                [pyenv, "root"], capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            roots.append(Path(out))
    roots.append(Path.home() / ".pyenv")
    return roots


def python27_candidates() -> list[Path]:
    """Where Python 2.7 is looked for, in order."""
    candidates = [
        root / "versions" / PY27_VERSION / "bin" / "python2.7" for root in _pyenv_roots()
    ]
    on_path = shutil.which("python2.7")
    if on_path is not None:
        candidates.append(Path(on_path))
    return candidates


def is_python27(executable: Path) -> bool:
    if not os.access(executable, os.X_OK):
        return False
    try:
        result = subprocess.run(
            [str(executable), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0 and result.stdout.strip() == "2.7"


def find_python27(explicit: Path | None = None) -> tuple[Path | None, list[Path]]:
    """The first working Python 2.7, and every place that was tried."""
    tried = [explicit] if explicit is not None else python27_candidates()
    for candidate in tried:
        if is_python27(candidate):
            return candidate, tried
    return None, tried


class WstestEnv:
    """The cached Python 2.7 virtualenv that holds wstest."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.python = directory / "bin" / "python"
        self.marker = directory / MARKER
        self.log = directory.with_name(directory.name + "-build.log")

    def is_ready(self) -> bool:
        """True when a complete build of the pinned version is there and runs."""
        try:
            if self.marker.read_text().strip() != AUTOBAHN_VERSION:
                return False
        except OSError:
            return False
        probe = "import autobahntestsuite, sys; sys.stdout.write(autobahntestsuite.__version__)"
        try:
            result = subprocess.run(
                [str(self.python), "-c", probe], capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.SubprocessError):
            return False
        return result.returncode == 0 and result.stdout.strip() == AUTOBAHN_VERSION

    def has_wsaccel(self) -> bool:
        """True when wstest can use wsaccel's C masking and UTF-8 validation."""
        try:
            result = subprocess.run(
                [str(self.python), "-c", "import wsaccel"], capture_output=True, timeout=60
            )
        except (OSError, subprocess.SubprocessError):
            return False
        return result.returncode == 0

    def describe(self) -> str:
        if self.has_wsaccel():
            return "with wsaccel"
        return "WITHOUT wsaccel (it could not be built): pure-Python masking, slower"

    def ensure(self, python27: Path) -> None:
        """Build the environment unless a complete one is already there."""
        if self.is_ready():
            print(f"wstest: cached environment {self.directory}, {self.describe()}", flush=True)
            return
        print(f"wstest: building {self.directory} (log: {self.log})", flush=True)
        _check_virtualenv()
        if self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("w") as log:
            self._run(
                log, [sys.executable, "-m", "virtualenv", "-p", str(python27), str(self.directory)]
            )
            requirement = f"{AUTOBAHN_PACKAGE}=={AUTOBAHN_VERSION}"
            pip = [str(self.python), "-m", "pip", "install"]
            try:
                self._run(log, [*pip, requirement])
            except SetupError:
                print("wstest: install failed; trying again without wsaccel and ujson", flush=True)
                log.write("# failed: again without autobahn[accelerate]\n")
                self._run(log, [*pip, "--no-deps", requirement])
                self._run(log, [*pip, *WITHOUT_ACCELERATORS])
        self.marker.write_text(AUTOBAHN_VERSION + "\n")
        if not self.is_ready():
            raise SetupError(f"wstest environment built but not usable; see {self.log}")
        print(f"wstest: built {self.directory}, {self.describe()}", flush=True)

    def _run(self, log: IO[str], command: list[str]) -> None:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONWARNINGS": "ignore"}
        try:
            result = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT, env=env
            )
        except subprocess.TimeoutExpired:
            raise SetupError(
                f"timed out after {BUILD_TIMEOUT}s: {command}; see {self.log}"
            ) from None
        if result.returncode != 0:
            raise SetupError(
                f"failed ({result.returncode}): {' '.join(command)}\n{_tail(self.log)}"
            )


def _check_virtualenv() -> None:
    try:
        import virtualenv
    except ImportError:
        raise SetupError(
            "this interpreter has no virtualenv; install 'virtualenv<20.22' "
            "(the nox session 'autobahn' does)"
        ) from None
    version = getattr(virtualenv, "__version__", "0")
    major_minor = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if major_minor >= (20, 22):
        raise SetupError(
            f"virtualenv {version} cannot create Python 2.7 environments; install "
            "'virtualenv<20.22' (the nox session 'autobahn' does)"
        )


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
