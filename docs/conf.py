"""Sphinx configuration of the trio_ws documentation site.

Build it with ``python -m nox -s docs``, or directly::

    sphinx-build -E -n -W --keep-going -b html docs docs/_build/html

The pages are the Markdown files beside this one (read by MyST-Parser);
``reference.md`` is the API reference, generated from the docstrings by
autodoc. Links to Trio's and Python's documentation come from the inventories
in ``_inventories/``, kept in the repository so that the build needs no
network (see ``_inventories/README.md``).
"""

from __future__ import annotations

import os
import re
import sys
import typing
from pathlib import Path
from typing import Any

import attrs

import trio_ws

HERE = Path(__file__).resolve().parent

# -- project -------------------------------------------------------------------

project = "trio_ws"
author = "the trio_ws authors"
copyright = "the trio_ws authors"
#: The one version, ``trio_ws.__version__`` (the package metadata reads it too).
release = trio_ws.__version__
version = release

# -- sources -------------------------------------------------------------------

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_inventories"]

# Headings get GitHub's anchors, so that ``page.md#a-heading`` links work on
# GitHub and here alike (tests/test_docs.py checks them the GitHub way).
myst_heading_anchors = 4

# -- checks --------------------------------------------------------------------

# Every cross-reference must resolve: a broken link to a page, a heading or an
# API name is a warning, and the docs session turns warnings into errors.
nitpicky = True

# -- API reference -------------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = False
autodoc_inherit_docstrings = False
python_use_unqualified_type_names = True
# One argument per line in signatures longer than this.
maximum_signature_line_length = 88

#: Classes that trio_ws creates and hands out, never the application: their
#: constructors' arguments are internal, so the reference shows none.
NOT_CONSTRUCTED = {
    "ConnectionPool",
    "Hub",
    "Member",
    "MessageStream",
    "Reconnecting",
    "Server",
    "WebSocket",
    "Worker",
    "Workers",
}

nitpick_ignore = [
    # ConnectionPool.acquire() is annotated with its private async context
    # manager class; the docstring says what it is.
    ("py:class", "trio_ws._app.pool._Lease"),
]

# -- links to other projects' documentation ------------------------------------

# Local inventories: the build never downloads one. Their contents are only
# the names these pages link to; _inventories/update.py regenerates them (and
# points TRIO_WS_DOCS_INVENTORIES at complete ones while it does).
INVENTORIES = Path(os.environ.get("TRIO_WS_DOCS_INVENTORIES", HERE / "_inventories"))
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", str(INVENTORIES / "python.inv")),
    "trio": ("https://trio.readthedocs.io/en/stable", str(INVENTORIES / "trio.inv")),
}

# -- HTML ----------------------------------------------------------------------

html_theme = "furo"
html_title = f"trio_ws {release}"


# -- public names --------------------------------------------------------------


def _public_name(target: str) -> str | None:
    """``trio_ws.X`` for a private path (``trio_ws._http.Headers``) of a public name."""
    if not target.startswith("trio_ws."):
        return None
    parts = target.split(".")
    # A public object, or an attribute or method of one.
    for i in range(len(parts) - 1, 0, -1):
        name = parts[i]
        if name in trio_ws.__all__ and any(p.startswith("_") for p in parts[1:i]):
            return ".".join(["trio_ws", *parts[i:]])
    return None


def _lookup(target: str) -> object:
    """The object that a dotted name inside trio_ws stands for, or None."""
    module_name, _, attribute = target.rpartition(".")
    module = sys.modules.get(module_name)
    return getattr(module, attribute, None) if module_name.startswith("trio_ws") else None


def _resolve_public(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve references that name a public object by the module it is defined
    in (as signatures do) to its documented, public name."""
    if node.get("refdomain") != "py":
        return None
    if isinstance(_lookup(node["reftarget"]), typing.TypeVar):
        return contnode  # a type variable of a generic class: plain text
    public = _public_name(node["reftarget"])
    if public is None:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], public, node, contnode
    )


def _signature(
    app: Any,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str, str | None] | None:
    """No arguments for classes the application never creates; an attrs
    default made by a factory shown as its call (``Headers()``), not as
    attrs' ``NOTHING``."""
    if what != "class":
        return None
    if name.removeprefix("trio_ws.") in NOT_CONSTRUCTED:
        return "", None
    if signature and "NOTHING" in signature and attrs.has(obj):
        for field in attrs.fields(obj):
            if isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
                call = f"{field.default.factory.__name__}()"
                signature = re.sub(rf"(\b{field.name}\b.*?= )NOTHING", rf"\g<1>{call}", signature)
        return signature, return_annotation
    return None


def setup(app: Any) -> None:
    app.connect("missing-reference", _resolve_public)
    app.connect("autodoc-process-signature", _signature)
