"""Code snippets in the docs, run by tests: a page's examples cannot rot without a test failing.

A snippet is a fenced ``python`` block preceded by a marker line ``<!-- snippet: NAME -->``. Tests
read them with ``snippets(path)`` and run one with ``run_snippet`` in a namespace they prepare (the
page says which names a snippet may assume, e.g. ``dev``, a started device). Top-level ``await`` is
allowed, as in an async REPL, so async examples read as users would write them inside their own
coroutine; ``run_snippet`` then returns the coroutine for the test to await. Shell command lines are
marked ``<!-- command: NAME -->`` before a ```sh block and read with ``commands(path)``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

__all__ = ["SnippetError", "commands", "run_snippet", "snippets"]



class SnippetError(LookupError):
    """A named snippet is missing, or a name is used twice."""


def _blocks(path: str | Path, marker: str, lang: str) -> dict[str, str]:
    block = re.compile(rf"<!--\s*{marker}:\s*([\w.-]+)\s*-->\s*\n```{lang}\n(.*?)\n```", re.DOTALL)
    out: dict[str, str] = {}
    for m in block.finditer(Path(path).read_text()):
        name, code = m.group(1), m.group(2)
        if name in out:
            raise SnippetError(f"{path}: {marker} {name!r} appears twice")
        out[name] = code
    return out


def snippets(path: str | Path) -> dict[str, str]:
    """Every marked Python snippet on the page, by name (the source as written)."""
    return _blocks(path, "snippet", "python")


def commands(path: str | Path) -> dict[str, str]:
    """Every marked shell command block on the page, by name (run with ``bash -euo pipefail -c``)."""
    return _blocks(path, "command", "sh")


def run_snippet(code: str, namespace: dict[str, Any],
                name: str = "<snippet>") -> Coroutine[Any, Any, Any] | None:
    """Run ``code`` in ``namespace`` (which it may change: a snippet's names stay there for the test to
    inspect). With a top-level ``await`` the result is a coroutine the caller must await."""
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    compiled = compile(code, name, "exec", flags=flags, dont_inherit=True)
    result: Coroutine[Any, Any, Any] | None = eval(compiled, namespace)  # our own docs' code
    return result
