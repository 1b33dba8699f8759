"""Arrows only point down (docs/architecture.md): a layer never imports a layer above it.

import-linter cannot see the layers (they live outside ``pytsnet/`` and are mapped in by
setup.py), so this scans the source with ``ast``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# layer folder -> pytsnet modules it must never import
FORBIDDEN = {
    "wire": ("pytsnet.netstack", "pytsnet.actors", "pytsnet.messages", "pytsnet.localnet",
             "pytsnet.device", "pytsnet.commands", "pytsnet.cli"),
    "netstack": ("pytsnet.wire", "pytsnet.actors", "pytsnet.messages", "pytsnet.localnet",
                 "pytsnet.device", "pytsnet.commands", "pytsnet.cli"),
    "messages": ("pytsnet.actors", "pytsnet.localnet", "pytsnet.device", "pytsnet.commands",
                 "pytsnet.cli"),
    "actors": ("pytsnet.localnet", "pytsnet.device", "pytsnet.commands", "pytsnet.cli"),
}
TOP_LEVEL_LAYER_NAMES = ("actors", "messages", "netstack", "wire")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _sources() -> list[Path]:
    dirs = [*FORBIDDEN, "pytsnet", "tests", "chaos", "bench"]
    return [p for d in dirs for p in (REPO / d).rglob("*.py") if ".venv" not in p.parts]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_down(layer: str) -> None:
    bad = []
    for path in (REPO / layer).rglob("*.py"):
        for line, mod in _imports(path):
            if any(mod == f or mod.startswith(f + ".") for f in FORBIDDEN[layer]):
                bad.append(f"{path.relative_to(REPO)}:{line} imports {mod}")
    assert not bad, "\n".join(bad)


def test_no_top_level_layer_imports() -> None:
    bad = []
    for path in _sources():
        for line, mod in _imports(path):
            if mod.split(".", 1)[0] in TOP_LEVEL_LAYER_NAMES:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {mod}")
    assert not bad, "\n".join(bad)
