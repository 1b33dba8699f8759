"""docs/frameworks.md: every marked snippet and command block is run by some test (one nobody runs can
rot)."""

from __future__ import annotations

from pathlib import Path

from pytsnet.testing.snippets import commands, snippets

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "frameworks.md"


def test_every_snippet_on_the_page_is_run_by_a_test() -> None:
    names = [*snippets(PAGE), *commands(PAGE)]
    assert names, "the page has no marked snippets"
    sources = "\n".join(p.read_text() for tree in ("tests", "chaos") for p in (ROOT / tree).rglob("test_*.py")
                        if p.name != Path(__file__).name)
    unrun = [n for n in names if f'"{n}"' not in sources and f"'{n}'" not in sources]
    assert not unrun, f"snippets no test names (so none runs them): {unrun}"
