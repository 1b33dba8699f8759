"""Restart memory by message: what a restarted actor resumes with, held by the ``MemoryKeeper``.

An actor that must outlive a crash with some state (the engine's last ``WgConfig``, the UDP router's
bound port, the DiscoPinger's peers, the StunProber's home region) tells the keeper an immutable
snapshot whenever it changes (``Remember``) and asks for it in ``on_start`` (``Recall``); the
data-plane bridge keeps what it learned (``BridgeMemory``) the same way. No other actor and not the
facade reads it: the snapshot is a copy in a message, never a shared object.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, SerializationInfo

from pytsnet.messages.base import REGISTRY, Message, Request
from pytsnet.messages.dataplane import BridgeMemory
from pytsnet.messages.magicsock import HomeRegion, SetPeers, UdpBound
from pytsnet.messages.services import ServicesMemory
from pytsnet.messages.wgengine import WgConfig

_KINDS = (WgConfig, SetPeers, UdpBound, HomeRegion, BridgeMemory, ServicesMemory)  # ServicesMemory: 20d


def _load(v: Any) -> Message:
    if isinstance(v, _KINDS):
        return v
    if isinstance(v, dict) and REGISTRY.get(str(v.get("tag"))) in _KINDS:
        return REGISTRY[str(v["tag"])].model_validate(v.get("data"))
    raise ValueError(f"not a restart snapshot: {str(v)[:80]}")


def _dump(v: Message, info: SerializationInfo) -> dict[str, Any]:
    """Tagged (two kinds may share a shape); dumped with the caller's context, so a trace redacts."""
    return {"tag": type(v).TAG, "data": v.model_dump(mode=info.mode, context=info.context)}


Snapshot = Annotated[WgConfig | SetPeers | UdpBound | HomeRegion | BridgeMemory | ServicesMemory,
                     PlainValidator(_load), PlainSerializer(_dump)]
"""What restart memory may hold: one message type per owner, written with its tag."""


class Remember(Message, tag="memory.remember"):
    """Owner → keeper: ``snapshot`` replaces what ``owner`` remembered before."""

    owner: str
    snapshot: Snapshot


class Recalled(Message, tag="memory.recalled"):
    snapshot: Snapshot | None = None


class Recall(Request[Recalled], tag="memory.recall"):
    """A (re)started owner → keeper: its last snapshot (None: a first start)."""

    owner: str


class Forget(Message, tag="memory.forget"):
    """The bridge → keeper before it builds a new subtree: its actors start afresh."""

    owners: tuple[str, ...]
