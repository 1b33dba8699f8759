"""Issue 15: the runtime drives pykka only through its public API (no ``_`` names, no ``_`` overrides).

The check reads the source with ``ast``: in every module of the package (actors/, pytsnet/, messages/,
netstack/, wire/), an import of a private pykka module or name, an attribute ``x._name`` where
``_name`` is one of pykka's private attributes (in a module that imports pykka), or a method named
like one of them defined in a class with a pykka base, is a finding. The detector is first shown to
catch what the runtime used to do (override ``_actor_loop_running``), so the tree scan cannot pass
by seeing nothing.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pykka

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = ("actors", "pytsnet", "messages", "netstack", "wire")


def _pykka_private_names() -> frozenset[str]:
    """Every ``_``-prefixed, non-dunder attribute of pykka's public classes and modules."""
    names: set[str] = set()
    for obj in (pykka, pykka.messages, *(v for v in vars(pykka).values() if inspect.isclass(v))):
        names.update(n for n in dir(obj) if n.startswith("_") and not n.startswith("__"))
    return frozenset(names)


PRIVATE = _pykka_private_names()


def _is_pykka_expr(node: ast.expr, aliases: set[str]) -> bool:
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name) and node.id in aliases


def pykka_private_uses(source: str, filename: str = "<src>") -> list[str]:
    """Where ``source`` reaches into pykka's private API (``file:line: what``)."""
    tree = ast.parse(source, filename)
    aliases: set[str] = set()  # names bound to pykka or its classes in this module
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "pykka" or a.name.startswith("pykka."):
                    aliases.add((a.asname or a.name).split(".")[0])
                    if any(part.startswith("_") for part in a.name.split(".")):
                        found.append(f"{filename}:{node.lineno}: import {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pykka":
            if any(part.startswith("_") for part in node.module.split(".")):
                found.append(f"{filename}:{node.lineno}: from {node.module} import ...")
            for a in node.names:
                aliases.add(a.asname or a.name)
                if a.name.startswith("_"):
                    found.append(f"{filename}:{node.lineno}: from {node.module} import {a.name}")
    if not aliases:
        return found
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE:
            found.append(f"{filename}:{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ClassDef) and any(_is_pykka_expr(b, aliases) for b in node.bases):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name in PRIVATE:
                    found.append(f"{filename}:{item.lineno}: overrides pykka's {item.name}")
    return found


OLD_RUNTIME = '''
import pykka

class _IncarnationThread(pykka.ThreadingActor):
    def _actor_loop_running(self) -> None:
        self.actor_stopped.set()
        pykka.ActorRegistry.unregister(self.actor_ref)

    def _actor_loop_teardown(self) -> None:
        pass
'''


def test_the_detector_finds_private_overrides_imports_and_attributes() -> None:
    assert pykka_private_uses(OLD_RUNTIME) == [
        "<src>:5: overrides pykka's _actor_loop_running",
        "<src>:9: overrides pykka's _actor_loop_teardown",
    ]
    assert pykka_private_uses("from pykka._actor import Actor\n")
    assert pykka_private_uses("from pykka import _envelope\n")
    assert pykka_private_uses("import pykka\npykka.messages._ActorStop()\n")
    assert pykka_private_uses("import pykka as p\ndef f(a: p.ThreadingActor) -> None:\n    a._stop()\n")
    # public use is not a finding
    assert pykka_private_uses(
        "import pykka\nclass R(pykka.ThreadingActor):\n    def on_receive(self, m: object) -> None:\n"
        "        self._mine = m\n        self.actor_ref.tell(m)\n") == []


def test_no_module_of_the_package_touches_pykka_private_api() -> None:
    files = [p for d in PACKAGE_DIRS for p in sorted((ROOT / d).rglob("*.py"))]
    assert any(p.name == "dispatch.py" for p in files)  # the runtime's pykka user is scanned
    found = [f for p in files for f in pykka_private_uses(p.read_text(), str(p.relative_to(ROOT)))]
    assert found == []
