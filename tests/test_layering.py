"""Arrows only point down (docs/architecture.md), held by import-linter's contracts in pyproject.toml.

``lint-imports`` runs in ``make test``; here it runs too, on the tree and on a copy with one planted
violation per contract (so a contract that stopped matching anything would show), and the facade
list the layers may not import is checked against what ``pytsnet/`` really holds. The last check is
one import-linter cannot make: nothing imports a layer by its top-level folder name (``import wire``
works in no installed copy).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from pytsnet.testing.source_tree import copy_source_tree

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("actors", "messages", "netstack", "wire")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the copy's pytsnet, not the editable install's
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def _contracts() -> list[dict[str, object]]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_contracts_hold() -> None:
    out = _lint_imports(REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in out.stdout, out.stdout


PLANTED = {  # file -> (line to append, contract id it breaks)
    "wire/disco.py": ("import time", "sans-io"),
    "netstack/udp.py": ("import socket", "sans-io"),
    "wire/pcap.py": ("from pytsnet.netstack import errors", "wire-netstack"),
    "messages/__init__.py": ("import pytsnet.actors", "layers"),
    "actors/runtime/__init__.py": ("import pytsnet.device", "no-facade"),
    "netstack/config.py": ("from pytsnet import config", "no-facade"),
}


def test_each_contract_reports_a_planted_violation(tmp_path: Path) -> None:
    copy_source_tree(REPO, tmp_path)
    for rel, (line, _) in PLANTED.items():
        path = tmp_path / rel
        path.write_text(path.read_text() + f"\n{line}  # planted\n")
    out = _lint_imports(tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    ids = {str(c["id"]) for c in _contracts()}
    assert ids == {contract for _, contract in PLANTED.values()}  # every contract gets a violation
    assert f"Contracts: 0 kept, {len(ids)} broken." in out.stdout, out.stdout
    for rel in PLANTED:
        module = "pytsnet." + rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        assert module in out.stdout, (module, out.stdout)


def test_facade_list_names_everything_in_pytsnet_that_is_not_a_layer() -> None:
    (no_facade,) = (c for c in _contracts() if c["id"] == "no-facade")
    assert isinstance(no_facade["forbidden_modules"], list)
    listed = set(no_facade["forbidden_modules"])
    found = set()
    for entry in (REPO / "pytsnet").iterdir():
        if entry.name in LAYERS:
            assert entry.is_symlink() and entry.readlink() == Path("..", entry.name), entry
        elif entry.suffix == ".py" and entry.name != "__init__.py":
            found.add(f"pytsnet.{entry.stem}")
        elif (entry / "__init__.py").exists():
            found.add(f"pytsnet.{entry.name}")
    assert listed == found


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_no_top_level_layer_imports() -> None:
    bad = []
    sources = [p for d in (*LAYERS, "pytsnet", "tests", "chaos", "bench") for p in (REPO / d).rglob("*.py")]
    for path in sources:
        for line, mod in _imports(path):
            if mod.split(".", 1)[0] in LAYERS:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {mod}")
    assert not bad, "\n".join(bad)
