"""The docs' snippet harness (``pytsnet.testing.snippets``): what the framework page's tests rely on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pytsnet.testing.snippets import SnippetError, run_snippet, snippets

PAGE = """# A page
<!-- snippet: sync-one -->
```python
x = 1 + 1
```
Prose between.

```python
not_marked = True
```
<!-- snippet: async-one -->
```python
import asyncio
await asyncio.sleep(0)
y = x * 3
```
"""


def test_marked_blocks_only_by_name(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(PAGE)
    got = snippets(page)
    assert list(got) == ["sync-one", "async-one"]
    assert got["sync-one"] == "x = 1 + 1"


def test_sync_runs_now_async_returns_a_coroutine(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(PAGE)
    got, ns = snippets(page), {}  # type: ignore[var-annotated]
    assert run_snippet(got["sync-one"], ns) is None and ns["x"] == 2
    coro = run_snippet(got["async-one"], ns)
    assert coro is not None
    asyncio.run(coro)  # type: ignore[arg-type]
    assert ns["y"] == 6


def test_a_failing_snippet_fails_and_a_duplicate_name_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(PAGE + PAGE.split("# A page\n")[1])
    with pytest.raises(SnippetError):
        snippets(page)
    with pytest.raises(ZeroDivisionError):
        run_snippet("1 / 0", {})
