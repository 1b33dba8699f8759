"""Every registered message round-trips through JSON (bytes as base64), new modules included."""

from __future__ import annotations

import enum
import importlib
import ipaddress
import pkgutil
import types
import typing
from typing import Any

import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import pytsnet.messages
from pytsnet.messages.base import REGISTRY, Message, MessageTagError, from_json, to_json

for _m in pkgutil.walk_packages(pytsnet.messages.__path__, "pytsnet.messages."):
    importlib.import_module(_m.name)


class _Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class _Inner(Message, tag="test.inner"):
    key: bytes
    port: int


class _KitchenSink(Message, tag="test.kitchen_sink"):
    """Every field kind other layers are expected to use, so the strategy is proven on them."""

    raw: bytes
    text: str
    n: int
    x: float
    flag: bool
    color: _Color
    keys: list[bytes]
    maybe: int | None
    inner: _Inner
    peers: list[_Inner]
    v4: ipaddress.IPv4Address
    v6: ipaddress.IPv6Address
    net: ipaddress.IPv4Network | ipaddress.IPv6Network
    pair: tuple[int, str]


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    """A strategy for a field annotation; floats are finite (JSON has no NaN/inf)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return strategy_for(args[0])
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(strategy_for(a) for a in args))
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (list, tuple, frozenset, set) and args:
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return st.tuples(*(strategy_for(a) for a in args))
        inner = st.lists(strategy_for(args[0]), max_size=4)
        return inner.map(origin) if origin is not list else inner
    if origin is dict and args:
        return st.dictionaries(strategy_for(args[0]), strategy_for(args[1]), max_size=4)
    if tp is type(None):
        return st.none()
    if tp is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if tp is bytes:
        return st.binary(max_size=64)
    if tp is str:
        return st.text(max_size=32)
    if isinstance(tp, type) and issubclass(tp, Message):
        return model_strategy(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if tp in (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network, ipaddress.IPv6Network):
        return st.from_type(tp)
    return st.from_type(tp)


def model_strategy(model: type[Message]) -> st.SearchStrategy[Message]:
    fields = {name: strategy_for(f.annotation) for name, f in model.model_fields.items()}

    def build(values: dict[str, Any]) -> Message:
        try:
            return model(**values)
        except ValidationError:
            reject()

    return st.fixed_dictionaries(fields).map(build)


@pytest.mark.parametrize("tag", sorted(REGISTRY))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_registered_message_round_trips_json(tag: str, data: st.DataObject) -> None:
    model = REGISTRY[tag]
    msg = data.draw(model_strategy(model))
    back = from_json(to_json(msg))
    assert type(back) is model
    assert back == msg


def test_bytes_fields_are_base64_in_json() -> None:
    """pydantic encodes bytes as URL-safe base64."""
    from pytsnet.messages.runtime import Work

    assert '"payload": "AAH_"' in to_json(Work(seq=1, payload=b"\x00\x01\xff"))


def test_unknown_tag_and_duplicate_tag_are_typed_errors() -> None:
    with pytest.raises(MessageTagError):
        from_json('{"tag": "no.such.tag", "data": {}}')
    with pytest.raises(MessageTagError):

        class Other(Message, tag="runtime.ping"):
            pass


def test_messages_are_frozen() -> None:
    from pytsnet.messages.runtime import Ping

    with pytest.raises(ValidationError):
        Ping(seq=1).seq = 2  # type: ignore[misc]
