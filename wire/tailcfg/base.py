"""Shared pydantic plumbing for tailcfg: Go field names, tolerant input, Go's omitempty on output.

Keys are ``pytsnet.wire.keys`` objects in Python and their text forms (``nodekey:<hex>``) in JSON; an
empty key string reads as ``None`` and ``None`` is never written, so a key is never ``""`` on the wire.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Self, TypeAlias, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, PlainValidator, ValidationError
from pydantic import model_serializer as _model_serializer
from pydantic_core.core_schema import SerializerFunctionWrapHandler

from pytsnet.wire.errors import ParseError
from pytsnet.wire.keys import DiscoPublic, MachinePublic, NLPublic, NodePublic

DEFAULT_MAX_JSON = 64 << 20
"""Bound on one JSON document; Go's testcontrol caps map frames far higher, clients read far less."""


class TailcfgParseError(ParseError):
    """JSON that is not a valid tailcfg message (bad syntax, wrong types, malformed keys, too large)."""


_K = TypeVar("_K", NodePublic, MachinePublic, DiscoPublic, NLPublic)


def _empty_to_none(value: object) -> object:
    return None if value == "" else value


def _key_field(cls: type[_K]) -> Any:
    def parse(value: object) -> _K:
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls.from_text(value)  # KeyParseError is a ValueError: pydantic reports it
        raise ValueError(f"expected {cls.__name__} text")

    return Annotated[cls, PlainValidator(parse), PlainSerializer(lambda k: k.to_text(), return_type=str)]


if TYPE_CHECKING:  # what a field holds; the pydantic parsing and serialising below is invisible to mypy
    NodeKey: TypeAlias = NodePublic | None
    MachineKey: TypeAlias = MachinePublic | None
    DiscoKey: TypeAlias = DiscoPublic | None
    NLKey: TypeAlias = NLPublic | None
else:
    NodeKey = Annotated[_key_field(NodePublic) | None, BeforeValidator(_empty_to_none)]
    MachineKey = Annotated[_key_field(MachinePublic) | None, BeforeValidator(_empty_to_none)]
    DiscoKey = Annotated[_key_field(DiscoPublic) | None, BeforeValidator(_empty_to_none)]
    NLKey = Annotated[_key_field(NLPublic) | None, BeforeValidator(_empty_to_none)]

_ZEROS: tuple[object, ...] = ("", 0, False, [], {}, 0.0)


class GoModel(BaseModel):
    """Base of every tailcfg model.

    ``go_always`` names the fields Go writes even when zero (no ``omitempty``/``omitzero`` tag); every
    other field is dropped when zero. ``None`` is always dropped (Go's nil pointers and absent keys).
    """

    model_config = ConfigDict(extra="ignore", arbitrary_types_allowed=True, validate_assignment=False)
    go_always: ClassVar[frozenset[str]] = frozenset()

    @_model_serializer(mode="wrap")
    def _omitempty(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items()
                if v is not None and (k in self.go_always or not any(v == z and type(v) is type(z)
                                                                    for z in _ZEROS))}

    @classmethod
    def from_json(cls, data: bytes | str, *, max_len: int = DEFAULT_MAX_JSON) -> Self:
        """Parse one JSON document; any failure is a ``TailcfgParseError``."""
        if len(data) > max_len:
            raise TailcfgParseError(f"{cls.__name__} JSON of {len(data)} bytes exceeds {max_len}")
        try:
            return cls.model_validate_json(data)
        except (ValidationError, ValueError, RecursionError) as exc:
            raise TailcfgParseError(f"invalid {cls.__name__} JSON: {exc}") from None

    def to_json(self) -> bytes:
        """Go-compatible JSON: Go field names, omitempty applied, keys in text form."""
        return self.model_dump_json().encode()
