"""Regenerate ``python.inv`` and ``trio.inv``: the entries of Python's and
Trio's Sphinx inventories that the trio_ws documentation links to, and no
others.

The docs build reads these two files instead of downloading the inventories
(it must work without a network). After adding a link to a Python or Trio
name that is not in them yet, the build fails with "reference target not
found"; then run::

    python docs/_inventories/update.py PYTHON_OBJECTS_INV TRIO_OBJECTS_INV

with complete inventories of each project: where there is a network, the
``objects.inv`` files at https://docs.python.org/3/objects.inv and
https://trio.readthedocs.io/en/stable/objects.inv; without one, see
``README.md`` beside this file. The script builds the site against the
complete inventories, collects the links the pages made into each project's
documentation, and writes the entries those links came from.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import attrs

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent

#: The base URL of each inventory, as in conf.py's intersphinx_mapping.
BASES = {
    "python": "https://docs.python.org/3/",
    "trio": "https://trio.readthedocs.io/en/stable/",
}

#: Entries missing from the complete inventories at hand. Python 3.11's
#: documentation (the inventory Debian ships) describes ``re.Pattern`` only
#: by its methods; the class entry exists from Python 3.13 on.
EXTRA = {
    "python": ["re.Pattern py:class 1 library/re.html#$ -"],
    "trio": [],
}


@attrs.frozen
class Inventory:
    project: str
    version: str
    lines: list[str]  # "name domain:role priority uri dispname"

    @classmethod
    def read(cls, path: Path) -> Inventory:
        data = path.read_bytes()
        header = []
        for _ in range(4):
            line, _, data = data.partition(b"\n")
            header.append(line.decode("utf-8"))
        if header[0] != "# Sphinx inventory version 2" or "zlib" not in header[3]:
            raise SystemExit(f"{path}: not a version 2 Sphinx inventory")
        lines = zlib.decompress(data).decode("utf-8").splitlines()
        return cls(
            header[1].removeprefix("# Project: "), header[2].removeprefix("# Version: "), lines
        )

    def write(self, path: Path) -> None:
        head = (
            "# Sphinx inventory version 2\n"
            f"# Project: {self.project}\n"
            f"# Version: {self.version}\n"
            "# The remainder of this file is compressed using zlib.\n"
        )
        body = "".join(line + "\n" for line in sorted(set(self.lines)))
        path.write_bytes(head.encode("utf-8") + zlib.compress(body.encode("utf-8"), 9))


_ENTRY = re.compile(r"(?P<name>.+?)\s+(?P<role>\S+:\S+)\s+(?P<prio>-?\d+)\s+(?P<uri>\S*)\s+(.*)")


def uri_of(line: str) -> str:
    """The entry's link, relative to its project's base URL."""
    match = _ENTRY.fullmatch(line)
    if match is None:
        raise ValueError(f"not an inventory entry: {line!r}")
    uri = match["uri"]
    return uri[:-1] + match["name"] if uri.endswith("$") else uri


def linked_uris(html: Path, base: str) -> set[str]:
    """Every link from the built pages into the documentation at ``base``."""
    pattern = re.compile(r'href="' + re.escape(base) + r'([^"]*)"')
    found: set[str] = set()
    for page in html.rglob("*.html"):
        found.update(pattern.findall(page.read_text(encoding="utf-8")))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("python", type=Path, help="Python's complete objects.inv")
    parser.add_argument("trio", type=Path, help="Trio's complete objects.inv")
    args = parser.parse_args()
    complete = {name: Inventory.read(getattr(args, name)) for name in BASES}
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp, "inventories")
        full.mkdir()
        for name, inventory in complete.items():
            attrs.evolve(inventory, lines=inventory.lines + EXTRA[name]).write(
                full / f"{name}.inv"
            )
        html = Path(tmp, "html")
        env = {**os.environ, "TRIO_WS_DOCS_INVENTORIES": str(full)}
        command = [sys.executable, "-m", "sphinx", "-E", "-q", "-b", "html", str(DOCS), str(html)]
        subprocess.run(command, env=env, check=True)
        for name, inventory in complete.items():
            used = linked_uris(html, BASES[name])
            lines = [line for line in inventory.lines + EXTRA[name] if uri_of(line) in used]
            attrs.evolve(inventory, lines=lines).write(HERE / f"{name}.inv")
            print(f"{name}.inv: {len(lines)} entries")


if __name__ == "__main__":
    main()
