"""Issue 15: ``ask`` call sites need no casts, and the reply type ``ask`` promises is the handler's.

``ActorRef.ask(msg: Request[R]) -> R`` types every reply; two things keep that true:
* no call site casts an ask's result or silences the checker on it (``cast(..., ref.ask(m))``,
  ``# type: ignore`` on an ask's lines) anywhere in the package, tests, chaos or bench (``ast`` +
  ``tokenize``);
* every actor's handler of a ``Request[R]`` is annotated to return ``R`` (or a subclass), so the
  ``R`` that mypy gives the caller is what the actor really replies (``ask`` cannot check it itself),
  or returns None (or R | None, answering at once or later) and takes the reply slot
  (``defer_reply``) to answer later.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import io
import pkgutil
import tokenize
import typing
from collections.abc import Iterator
from pathlib import Path

import pytsnet
from pytsnet.actors.runtime import Actor, handles
from pytsnet.messages.base import Request
from pytsnet.messages.runtime import Count, Pong, Total

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("actors", "pytsnet", "messages", "netstack", "wire", "tests", "chaos", "bench")
ASKS = ("ask", "ask_async", "_ask", "_ask_quiet")


def _is_ask(node: ast.AST) -> bool:
    if isinstance(node, ast.Await):
        node = node.value
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    return (isinstance(f, ast.Attribute) and f.attr in ASKS) or (isinstance(f, ast.Name) and f.id in ASKS)


def untyped_asks(source: str, filename: str = "<src>") -> list[str]:
    """Ask results that are cast or whose lines carry ``# type: ignore`` (``file:line: what``)."""
    tree = ast.parse(source, filename)
    ignores = {tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
               if tok.type == tokenize.COMMENT and "type: ignore" in tok.string}
    found: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
        is_cast = name == "cast"
        if is_cast and any(_is_ask(a) for a in node.args):
            found.append(f"{filename}:{node.lineno}: cast of an ask")
        if _is_ask(node) and ignores & set(range(node.lineno, (node.end_lineno or node.lineno) + 1)):
            found.append(f"{filename}:{node.lineno}: type: ignore on an ask")
    return found


def test_the_detector_finds_casts_and_ignores_on_asks() -> None:
    src = (
        "x = cast('Pong', ref.ask(Ping()))\n"
        "y = typing.cast(Pong, await ref.ask_async(Ping()))\n"
        "z = ref.ask(Ping())  # type: ignore[attr-defined]\n"
        "w = lookup('a').ask(  # type: ignore[union-attr]\n    Ping())\n"
        "ok = ref.ask(Ping(), timeout=1)\n"
        "fine = cast('int', other(3))\n"
    )
    assert untyped_asks(src) == [
        "<src>:1: cast of an ask",
        "<src>:2: cast of an ask",
        "<src>:3: type: ignore on an ask",
        "<src>:4: type: ignore on an ask",
    ]


def test_no_ask_call_site_casts_or_ignores_its_reply() -> None:
    files = [p for d in SCANNED for p in sorted((ROOT / d).rglob("*.py")) if ".venv" not in p.parts]
    assert any(p.name == "device.py" for p in files)
    found = [f for p in files for f in untyped_asks(p.read_text(), str(p.relative_to(ROOT)))]
    assert found == []


def _actor_classes() -> Iterator[type[Actor]]:
    for m in pkgutil.walk_packages(pytsnet.__path__, "pytsnet."):
        if not m.name.endswith("__main__"):
            importlib.import_module(m.name)
    todo, seen = list(Actor.__subclasses__()), set()
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.add(cls)
            todo.extend(cls.__subclasses__())
            yield cls


def _reply_type(msg_type: type[Request[typing.Any]]) -> object:
    """``R`` of ``class M(Request[R])``, read from pydantic's generic metadata."""
    for base in msg_type.__mro__:
        meta = getattr(base, "__pydantic_generic_metadata__", None)
        if meta and meta.get("origin") is Request and meta.get("args"):
            return meta["args"][0]
    raise AssertionError(f"{msg_type.__name__} does not name its reply type")


def wrong_reply_types(classes: typing.Iterable[type[Actor]]) -> tuple[int, list[str]]:
    """(request handlers checked, those whose return annotation is not their request's ``R``)."""
    checked, wrong = 0, []
    for cls in classes:
        for msg_type, attr in cls._handlers.items():
            if not (inspect.isclass(msg_type) and issubclass(msg_type, Request)):
                continue
            want = _reply_type(msg_type)
            method = getattr(cls, attr)
            got = typing.get_type_hints(method).get("return")
            checked += 1
            defers = "self.defer_reply()" in inspect.getsource(method)
            if defers and (got is type(None) or got == want | None):
                continue  # answers (now, or) later through the slot it takes (``Actor.defer_reply``)
            subclass = inspect.isclass(got) and inspect.isclass(want) and issubclass(got, want)
            if not (got == want or subclass):
                wrong.append(f"{cls.__name__}.{attr}({msg_type.__name__}) -> {got}, request says {want}")
    return checked, wrong


def test_the_reply_type_check_finds_a_handler_that_returns_something_else() -> None:
    class Liar(Actor):
        @handles(Count)
        def count(self, msg: Count) -> Pong:  # Count is Request[Total]
            return Pong()

    class Honest(Actor):
        @handles(Count)
        def count(self, msg: Count) -> Total:
            return Total(value=0)

    class Later(Actor):
        @handles(Count)
        def count(self, msg: Count) -> None:
            slot = self.defer_reply()
            if slot is not None:
                slot.set(Total(value=0))

    class Forgets(Actor):
        @handles(Count)
        def count(self, msg: Count) -> None:
            pass

    assert wrong_reply_types([Liar, Honest, Later, Forgets]) == (4, [
        f"Liar.count(Count) -> {Pong}, request says {Total}",
        f"Forgets.count(Count) -> {type(None)}, request says {Total}",
    ])


def test_every_request_handler_returns_the_reply_type_its_request_names() -> None:
    checked, wrong = wrong_reply_types(c for c in _actor_classes() if c.__module__.startswith("pytsnet."))
    assert checked >= 10  # the device's request handlers were found
    assert wrong == []
