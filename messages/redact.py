"""Field types a trace must not write in clear: ``Secret`` (keys, credentials) and ``Payload``
(application bytes).

Both serialise normally (messages round-trip, replay rebuilds them) unless the dump runs with a
``RedactContext`` (what the tracer passes): a ``Secret`` becomes ``<redacted:SOURCE>``, where SOURCE
names the state-store entry that holds it (``_node:NodePrivate``: key ``_node``, JSON field
``NodePrivate``) so ``trace replay --state DIR`` can put it back; a ``Payload`` becomes
``{"redacted_payload": {"len": N, "sha256": H}}`` unless the context keeps payloads
(``PYTSNET_TRACE_PAYLOADS=1``). A ``Secret`` is also left out of ``repr``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import Field, SerializationInfo, SerializerFunctionWrapHandler, WrapSerializer

__all__ = ["PLACEHOLDER", "DiscoPrivateText", "NodePrivateText", "Payload",
           "RedactContext", "payload_placeholder",
           "secret_field"]

PLACEHOLDER = re.compile(r"^<redacted:([A-Za-z0-9_]+):([A-Za-z0-9_]+)>$")
"""A redacted secret in a trace: ``<redacted:STATE_KEY:JSON_FIELD>``."""


@dataclass
class RedactContext:
    """Passed as pydantic's serialisation context; collects what was redacted."""

    payloads: bool = False
    secrets: list[str] = field(default_factory=list)
    """Sources of the secrets redacted so far (``_node:NodePrivate``)."""
    payloads_redacted: int = 0


def _ctx(info: SerializationInfo) -> RedactContext | None:
    c = info.context
    return c if isinstance(c, RedactContext) else None


def secret_field(source: str) -> Any:
    """``Annotated[str, secret_field("_node:NodePrivate")]``: a secret the state store holds."""

    def ser(v: str, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        ctx = _ctx(info)
        if ctx is None or not v:
            return handler(v)
        ctx.secrets.append(source)
        return f"<redacted:{source}>"

    return WrapSerializer(ser)


def _payload(v: bytes, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
    ctx = _ctx(info)
    if ctx is None or ctx.payloads:
        return handler(v)
    ctx.payloads_redacted += 1
    return payload_placeholder(v)


def payload_placeholder(v: bytes) -> dict[str, object]:
    """What a trace shows instead of payload bytes: enough to tell packets apart, not to read them."""
    return {"redacted_payload": {"len": len(v), "sha256": hashlib.sha256(v).hexdigest()[:16]}}


Payload = Annotated[bytes, WrapSerializer(_payload)]
"""Application bytes (plaintext packets, TCP segments, datagrams)."""

NodePrivateText = Annotated[str, secret_field("_node:NodePrivate"), Field(repr=False)]
"""``privkey:…`` of the node key (in the state store under ``_node``)."""

DiscoPrivateText = Annotated[str, secret_field("process:DiscoPrivate"), Field(repr=False)]  # replay.EPHEMERAL
"""``discoprivkey:…``: made per process (as Go's magicsock), in no state store, so a replay of an
actor holding it stops with a ``ReplayError`` naming it."""
