"""One version: ``trio_ws.__version__``, and everything that shows a version agrees.

The package metadata reads it (``pyproject.toml``: ``dynamic = ["version"]``
from ``trio_ws.__version__``), the documentation site's ``conf.py`` reads it,
``python -m trio_ws --version`` prints it, and it is the latest release in
``CHANGELOG.md``.
"""

from __future__ import annotations

import importlib.metadata
import re
import runpy
import subprocess
import sys
from pathlib import Path

import trio_ws

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - pytest depends on tomli before 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_version_is_a_release_number() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", trio_ws.__version__), trio_ws.__version__


def test_pyproject_takes_the_version_from_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"], "the version is written in one place"
    assert "version" in project["project"]["dynamic"]
    dynamic = project["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "trio_ws.__version__"}


def test_installed_metadata() -> None:
    """Fails after a version change until the package is installed again
    (``pip install -e .``): the metadata of an install is written then."""
    assert importlib.metadata.version("trio_ws") == trio_ws.__version__


def test_docs_conf() -> None:
    conf = runpy.run_path(str(ROOT / "docs" / "conf.py"))
    assert conf["release"] == trio_ws.__version__
    assert conf["version"] == trio_ws.__version__


def _latest_release(changelog: str) -> str:
    """The first ``## [X.Y.Z]`` heading: the newest release (Unreleased is not one)."""
    versions = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", changelog, re.MULTILINE)
    assert versions, "no release in the changelog"
    return versions[0]


def test_the_changelog_reader() -> None:
    text = "# Changelog\n\n## [Unreleased]\n\n## [1.2.0] - 2027-01-01\n\n## [1.1.0] - 2026-01-01\n"
    assert _latest_release(text) == "1.2.0"


def test_changelog_latest_release() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert _latest_release(changelog) == trio_ws.__version__


def test_command_line_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_ws", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout.split() == ["trio_ws", trio_ws.__version__]
