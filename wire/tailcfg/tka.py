"""Tailnet Lock RPC bodies (Go ``tailcfg/tka.go``): the ``/machine/tka/*`` requests and responses and
the MapResponse's ``TKAInfo``.

JSON as Go's ``encoding/json`` writes it: Go field names; a field without ``omitempty`` is always
written, a nil ``[]byte``/slice/map as ``null`` (Python ``None``) and an empty one as ``""``/``[]``/
``{}``; an ``omitempty`` field (``SupportDisablement``, ``TKAInfo``'s two, ``TKABootstrapResponse``'s
two) is dropped when nil or empty. ``[]byte`` (``tkatype.MarshaledAUM``/``MarshaledSignature``/
``KeyID``) is standard base64 with padding, strictly decoded as Go does. AUM hashes travel as their
``MarshalText`` form (base32 std, no padding), as plain strings here: ``wire/tka`` parses them.
``map[NodeID]…`` keys are decimal strings, written sorted as strings (Go sorts map keys that way).
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypeAlias

from pydantic import PlainSerializer, PlainValidator
from pydantic import model_serializer as _model_serializer
from pydantic_core.core_schema import SerializerFunctionWrapHandler

from pytsnet.wire.tailcfg.base import GoModel
from pytsnet.wire.tailcfg.base import NodeKey as _NodeKey

__all__ = [
    "CAPABILITY_TAILNET_LOCK", "TKABootstrapRequest", "TKABootstrapResponse", "TKADisableRequest",
    "TKADisableResponse", "TKAInfo", "TKAInitBeginRequest", "TKAInitBeginResponse", "TKAInitFinishRequest",
    "TKAInitFinishResponse", "TKASignInfo", "TKASignaturesUsingKeyRequest", "TKASignaturesUsingKeyResponse",
    "TKASubmitSignatureRequest", "TKASubmitSignatureResponse", "TKASyncOfferRequest",
    "TKASyncOfferResponse", "TKASyncSendRequest", "TKASyncSendResponse",
]

CAPABILITY_TAILNET_LOCK = "https://tailscale.com/cap/tailnet-lock"
"""``tailcfg.CapabilityTailnetLock``: without it in the self node's CapMap a Go node ignores TKA."""


def _b64_in(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not standard base64") from None
    raise ValueError("expected base64 text")


def _b64_out(value: bytes) -> str:
    return base64.b64encode(value).decode()


if TYPE_CHECKING:
    GoBytes: TypeAlias = bytes
else:
    GoBytes = Annotated[bytes, PlainValidator(_b64_in), PlainSerializer(_b64_out, return_type=str)]
"""Go ``[]byte``: base64 std in JSON."""


class _TkaModel(GoModel):
    """tka.go's omitempty is the exception: every field is written (``None`` as ``null``) unless it is
    named in ``go_omitempty``, which is dropped when ``None`` or empty."""

    go_omitempty: ClassVar[frozenset[str]] = frozenset()

    @_model_serializer(mode="wrap")
    def _omitempty(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return self._go_order({k: v for k, v in data.items() if k not in self.go_omitempty
                               or (v is not None and v not in ("", False, 0, [], {}))})

    def _go_order(self, data: dict[str, Any]) -> dict[str, Any]:
        return data


class TKAInitBeginRequest(_TkaModel):
    """``/machine/tka/init/begin``: a genesis (checkpoint) AUM to seed the tailnet's authority."""

    Version: int = 0
    NodeKey: _NodeKey = None
    GenesisAUM: GoBytes | None = None


class TKASignInfo(_TkaModel):
    """A node init/finish must bring a signature for."""

    NodeID: int = 0
    NodePublic: _NodeKey = None
    RotationPubkey: GoBytes | None = None
    """Raw ed25519 key allowed to sign this node's rotation signatures (its ``NLKey``)."""


class TKAInitBeginResponse(_TkaModel):
    NeedSignatures: list[TKASignInfo] | None = None


class TKAInitFinishRequest(_TkaModel):
    """``/machine/tka/init/finish``: node ID → serialized NodeKeySignature; enables the lock."""

    go_omitempty = frozenset({"SupportDisablement"})
    Version: int = 0
    NodeKey: _NodeKey = None
    Signatures: dict[int, GoBytes] | None = None
    SupportDisablement: GoBytes | None = None

    def _go_order(self, data: dict[str, Any]) -> dict[str, Any]:
        sigs = data.get("Signatures")
        if isinstance(sigs, dict):  # Go sorts map keys by their text
            data["Signatures"] = {str(k): sigs[k] for k in sorted(sigs, key=str)}
        return data


class TKAInitFinishResponse(_TkaModel):
    pass


class TKAInfo(_TkaModel):
    """MapResponse ``TKAInfo``: control's head (``{}``-less: both fields omitempty). A nil TKAInfo in a
    delta means unchanged; ``Disabled`` tells nodes to fetch the disablement secret."""

    go_omitempty = frozenset({"Head", "Disabled"})
    Head: str = ""
    Disabled: bool = False


class TKABootstrapRequest(_TkaModel):
    Version: int = 0
    NodeKey: _NodeKey = None
    Head: str = ""


class TKABootstrapResponse(_TkaModel):
    """The genesis AUM (lock enabled) or the disablement secret (after a disable)."""

    go_omitempty = frozenset({"GenesisAUM", "DisablementSecret"})
    GenesisAUM: GoBytes | None = None
    DisablementSecret: GoBytes | None = None


class TKASyncOfferRequest(_TkaModel):
    Version: int = 0
    NodeKey: _NodeKey = None
    Head: str = ""
    Ancestors: list[str] | None = None


class TKASyncOfferResponse(_TkaModel):
    Head: str = ""
    Ancestors: list[str] | None = None
    MissingAUMs: list[GoBytes] | None = None


class TKASyncSendRequest(_TkaModel):
    Version: int = 0
    NodeKey: _NodeKey = None
    Head: str = ""
    MissingAUMs: list[GoBytes] | None = None
    Interactive: bool = False


class TKASyncSendResponse(_TkaModel):
    Head: str = ""


class TKADisableRequest(_TkaModel):
    Version: int = 0
    NodeKey: _NodeKey = None
    Head: str = ""
    DisablementSecret: GoBytes | None = None


class TKADisableResponse(_TkaModel):
    pass


class TKASubmitSignatureRequest(_TkaModel):
    """``/machine/tka/sign``: one serialized NodeKeySignature (the signed node key is inside it)."""

    Version: int = 0
    NodeKey: _NodeKey = None
    Signature: GoBytes | None = None


class TKASubmitSignatureResponse(_TkaModel):
    pass


class TKASignaturesUsingKeyRequest(_TkaModel):
    """``/machine/tka/affected-sigs``: which node signatures ``KeyID`` authorizes."""

    Version: int = 0
    NodeKey: _NodeKey = None
    KeyID: GoBytes | None = None


class TKASignaturesUsingKeyResponse(_TkaModel):
    Signatures: list[GoBytes] | None = None
