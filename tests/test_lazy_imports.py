"""The proxy's process does not load PyAV (and the numpy it pulls in, ~20 MB of RSS)
until a thumbnail is rendered or an archive exported.

Checked on the source, not by importing: what importing a module executes is the
closure of its module-level imports (function bodies and ``if TYPE_CHECKING:`` blocks
left out). A subprocess doing the import would take over a second.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

import rmfproxy

ROOT = Path(rmfproxy.__file__).parent
ONLY_ON_USE = {"av", "numpy"}


def _module_level_imports(tree: ast.Module) -> list[str]:
    """Dotted names imported when the module runs (``from a import b`` gives ``a`` and
    ``a.b``: ``b`` may be a submodule)."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def _file_of(module: str) -> Path | None:
    """The project's file of a dotted module name, or None (a name imported from it)."""
    package = ROOT.joinpath(*module.split(".")[1:])
    for path in (package / "__init__.py", package.with_suffix(".py")):
        if path.is_file():
            return path
    return None


@functools.cache
def loaded_by(module: str) -> tuple[set[str], set[str]]:
    """The project's modules and the outside top-level packages importing ``module``
    loads."""
    ours: set[str] = set()
    outside: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        if parts[0] != "rmfproxy":
            outside.add(parts[0])
            continue
        # importing a.b.c runs a/__init__, a/b/__init__ and a/b/c
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            path = _file_of(prefix)
            if path is None or prefix in ours:
                continue
            ours.add(prefix)
            todo.extend(_module_level_imports(ast.parse(path.read_text())))
    return ours, outside


def test_closure_follows_the_imports() -> None:
    # the walk itself: it reaches modules several imports away, and PyAV through the
    # simulator, which does import it at the top
    ours, _ = loaded_by("rmfproxy.app")
    assert {"rmfproxy.ops.thumbnail", "rmfproxy.archive.export", "rmfproxy.rtp.h264"} <= ours
    assert "av" in loaded_by("rmfproxy.sim.encoder")[1]


@pytest.mark.parametrize(
    # what ``python -m rmfproxy run`` imports: the CLI, the modules its parser imports in
    # functions, the proxy
    "module",
    ["rmfproxy.__main__", "rmfproxy.manage.commands", "rmfproxy.sim.wan", "rmfproxy.app"],
)
def test_the_proxy_does_not_load_pyav(module: str) -> None:
    _, outside = loaded_by(module)
    assert not outside & ONLY_ON_USE
