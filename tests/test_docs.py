"""The documentation's claims, checked.

Every fenced ``python`` block in ``docs/*.md`` that is a complete program
(it calls ``trio.run(``) is run as a subprocess and must exit with status 0.
When the block is followed directly by a ``text`` block, that block is the
output the page promises: the program must print exactly those lines, where
``...`` inside a line stands for any text. Blocks without ``trio.run(`` are
fragments and are not run.

The tables of options and close codes are compared with the code, the API
reference (generated from the docstrings by Sphinx: ``nox -s docs``) must
document every public name, and relative links must point at files and
headings that exist.
"""

from __future__ import annotations

import enum
import os
import re
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

import trio_ws

DOCS = Path(__file__).resolve().parent.parent / "docs"
#: Pages that report measurements rather than explain a feature, and the
#: API reference (generated from the docstrings): they need no runnable block
#: of their own.
NO_PROGRAM = {"performance.md", "conformance.md", "reference.md"}
#: Seconds one documentation program may take.
TIMEOUT = 15

_FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


@attrs.frozen
class Block:
    page: str
    line: int
    code: str
    expected: str | None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def runnable_blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    fences = list(_FENCE.finditer(text))
    blocks = []
    for i, fence in enumerate(fences):
        if fence["info"].strip() != "python" or "trio.run(" not in fence["body"]:
            continue
        expected = None
        if i + 1 < len(fences):
            following = fences[i + 1]
            between = text[fence.end() : following.start()]
            if following["info"].strip() == "text" and not between.strip():
                expected = following["body"]
        line = text.count("\n", 0, fence.start()) + 1
        blocks.append(Block(path.name, line, fence["body"], expected))
    return blocks


ALL_BLOCKS = [block for path in pages() for block in runnable_blocks(path)]


def _line_pattern(expected_line: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in expected_line.split("...")))


def assert_output_matches(output: str, expected: str) -> None:
    got = output.splitlines()
    want = expected.splitlines()
    assert len(got) == len(want), f"expected {len(want)} lines, got {len(got)}:\n{output}"
    for got_line, want_line in zip(got, want, strict=True):
        assert _line_pattern(want_line).fullmatch(got_line), (
            f"line {got_line!r} does not match {want_line!r}"
        )


def test_the_output_matcher() -> None:
    assert_output_matches("rtt 0.25 ms\nok\n", "rtt ... ms\nok")
    with pytest.raises(AssertionError):
        assert_output_matches("rtt 0.25 s\n", "rtt ... ms")
    with pytest.raises(AssertionError):
        assert_output_matches("ok\nextra\n", "ok")


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[block.id for block in ALL_BLOCKS])
def test_documented_program_runs(
    block: Block, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if "import trustme" in block.code:
        pytest.importorskip("trustme")
    script = tmp_path / "program.py"
    script.write_text(block.code, encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if "REDIS_URL" in block.code:  # a program of the backplane's: a Redis of its own
        env["REDIS_URL"] = request.getfixturevalue("redis_server").url
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{block.id} failed:\n{result.stdout}\n{result.stderr}"
    if "print(" in block.code:
        assert result.stdout.strip(), f"{block.id} printed nothing"
    if block.expected is not None:
        assert_output_matches(result.stdout, block.expected)


@pytest.mark.parametrize("page", [p.name for p in pages() if p.name not in NO_PROGRAM])
def test_every_page_has_a_runnable_program(page: str) -> None:
    assert runnable_blocks(DOCS / page), f"{page} has no complete program"


def test_expected_pages_exist() -> None:
    for name in (
        "index",
        "quickstart",
        "client",
        "server",
        "messages",
        "timeouts",
        "errors",
        "reference",
        "design",
    ):
        assert (DOCS / f"{name}.md").is_file(), name


# -- links -------------------------------------------------------------------


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    return {_slug(m[1]) for m in re.finditer(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def test_slug() -> None:
    assert _slug("How the `async with` block ends") == "how-the-async-with-block-ends"
    assert _slug("Headers, Request, Response, Accept") == "headers-request-response-accept"


@pytest.mark.parametrize("page", [p.name for p in pages()])
def test_relative_links_resolve(page: str) -> None:
    path = DOCS / page
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # an external link
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        assert linked.exists(), f"{page}: broken link {target}"
        if anchor:
            assert anchor in _anchors(linked), f"{page}: no heading for {target}"


# -- tables and the API reference -----------------------------------------------


def _table_rows(text: str, header_start: str) -> list[list[str]]:
    """The rows of the Markdown table whose header row starts with ``header_start``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def test_options_table_matches_the_code() -> None:
    text = (DOCS / "options.md").read_text(encoding="utf-8")
    rows = _table_rows(text, "| option ")
    documented = {row[0].strip("`"): row[1].strip("`") for row in rows}
    actual = {
        # A default made by a factory is documented as a call: `Deflate()`.
        field.name: f"{field.default.factory.__name__}()"
        if isinstance(field.default, attrs.Factory)  # type: ignore[arg-type]
        else repr(field.default)
        for field in attrs.fields(trio_ws.Options)
    }
    assert documented == actual


def test_close_code_table_matches_the_enum() -> None:
    text = (DOCS / "closing.md").read_text(encoding="utf-8")
    rows = _table_rows(text, "| code ")
    documented = {int(row[0]): row[1].strip("`") for row in rows}
    assert documented == {member.value: member.name for member in trio_ws.CloseCode}
    assert issubclass(trio_ws.CloseCode, enum.IntEnum)


#: ``.. autoclass:: Name`` and the like, in the reference's ``{eval-rst}`` blocks.
_DOCUMENTED = re.compile(r"^\.\. (?:auto\w+|py:\w+|data)::\s+(?:trio_ws\.)?(\w+)", re.MULTILINE)


def test_reference_documents_every_public_name() -> None:
    """Each name of ``trio_ws.__all__`` has its directive in the generated reference
    (the docs build fails for a directive naming something that does not exist)."""
    documented = set(_DOCUMENTED.findall((DOCS / "reference.md").read_text(encoding="utf-8")))
    missing = [name for name in trio_ws.__all__ if name not in documented]
    assert not missing, f"add these to docs/reference.md: {missing}"


def test_documented_exception_hierarchy() -> None:
    """The tree drawn in errors.md is the real class hierarchy."""
    text = (DOCS / "errors.md").read_text(encoding="utf-8")
    tree = next(m["body"] for m in _FENCE.finditer(text) if m["info"].strip() == "text")
    parents: list[str] = []
    drawn = set()
    for line in tree.splitlines():
        match = re.match(r"^(?P<indent>[ │├└─]*)(?P<name>\w+)", line)
        assert match, line
        depth = len(match["indent"]) // 4
        name = match["name"]
        parents = parents[:depth]
        if parents:
            assert issubclass(getattr(trio_ws, name), getattr(trio_ws, parents[-1])), name
        parents.append(name)
        drawn.add(name)
    exceptions = {
        name
        for name in trio_ws.__all__
        if isinstance(getattr(trio_ws, name), type)
        and issubclass(getattr(trio_ws, name), BaseException)
    }
    assert drawn == exceptions
