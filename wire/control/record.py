"""The control client's persisted records: the node record (``_node``) and the last netmap (``_netmap``).

Both are JSON with sorted keys (a byte-identical netmap is not written again). Reading is lenient:
a missing or unparsable record is "none" (the store itself reports corruption at device start).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pydantic import ValidationError

from pytsnet.wire.errors import WireError
from pytsnet.wire.keys import NLPrivate, NodePrivate, NodePublic
from pytsnet.wire.mapsession import NetworkMap
from pytsnet.wire.tailcfg import Node

__all__ = ["NodeRecord", "netmap_blob", "stored_self_node"]


@dataclass(frozen=True)
class NodeRecord:
    """The node key, the key it replaces while a rotation is pending, whether control knows it, and the
    node's Tailnet Lock key (Go ``persist.NetworkLockKey``: made once, kept across key rotations and
    logouts; None only in a record written before it existed, which the login machine completes)."""

    node: NodePrivate
    old_node: NodePublic | None = None
    logged_in: bool = False
    nl: NLPrivate | None = field(default=None, repr=False)  # a signing key: never in a repr

    def to_blob(self, control_url: str) -> bytes:
        doc: dict[str, object] = {
            "NodePrivate": self.node.to_text(), "LoggedIn": self.logged_in,
            "OldNodeKey": self.old_node.to_text() if self.old_node is not None else "",
            "ControlURL": control_url}
        if self.nl is not None:
            doc["NetworkLockKey"] = self.nl.to_text()
        return _dumps(doc)

    @classmethod
    def from_blob(cls, raw: bytes | None) -> NodeRecord | None:
        doc = _json_obj(raw)
        if not doc.get("NodePrivate"):
            return None
        try:
            old = doc.get("OldNodeKey")
            return cls(NodePrivate.from_text(str(doc["NodePrivate"])),
                       NodePublic.from_text(str(old)) if old else None, bool(doc.get("LoggedIn")),
                       _nl_key(doc.get("NetworkLockKey")))
        except (ValueError, WireError):
            return None


def _nl_key(text: object) -> NLPrivate | None:
    """The stored lock key; an unreadable one is as none (a new one is made: it could sign nothing)."""
    if not text:
        return None
    try:
        return NLPrivate.from_text(str(text))
    except (ValueError, WireError):
        return None


def netmap_blob(nm: NetworkMap) -> bytes:
    return _dumps({"Node": nm.self_node.model_dump(mode="json", by_alias=True), "Domain": nm.domain,
                   "DERPMap": nm.derp_map.model_dump(mode="json", by_alias=True) if nm.derp_map else None})


def stored_self_node(raw: bytes | None) -> Node | None:
    """The self node of a stored netmap, if there is a valid one."""
    me = _json_obj(raw).get("Node")
    if not isinstance(me, dict):
        return None
    try:
        return Node.model_validate(me)
    except (ValidationError, ValueError):
        return None


def _dumps(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True).encode()


def _json_obj(raw: bytes | None) -> dict[str, object]:
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
