"""Tell STUN, disco and WireGuard apart on magicsock's one UDP socket.

Order and tests follow Go ``packetLooksLike`` (``wgengine/magicsock/magicsock.go``): STUN binding
first, then a Geneve header (peer-relay paths, ``net/packet/geneve.go``), then the disco magic,
otherwise WireGuard. Go hands every leftover datagram to wireguard-go, which drops junk; here a
leftover that is not shaped like a WireGuard message (type 1-4, three zero bytes) is ``UNKNOWN`` so
the caller can drop it without a lookup. Classification never raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

from pytsnet.wire import disco, stun

GENEVE_FIXED_HEADER_LENGTH = 8
GENEVE_PROTOCOL_DISCO = 0x7A11
GENEVE_PROTOCOL_WIREGUARD = 0x7A12
_DISCO_HEADER_LEN = len(disco.MAGIC) + disco.KEY_LEN  # magicsock's discoHeaderLen (magic + sender key)


class PacketKind(Enum):
    STUN_BINDING = auto()
    DISCO = auto()
    WIREGUARD = auto()
    UNKNOWN = auto()


@dataclass(frozen=True, slots=True)
class Classified:
    """``kind`` of the datagram; ``geneve`` when it came inside a Geneve header (peer relay)."""

    kind: PacketKind
    geneve: bool = False


def _looks_like_disco(b: bytes) -> bool:
    return len(b) >= _DISCO_HEADER_LEN and b[: len(disco.MAGIC)] == disco.MAGIC


def looks_like_wireguard(b: bytes) -> bool:
    """A WireGuard message starts with type 1-4 and three reserved zero bytes."""
    return len(b) >= 4 and 1 <= b[0] <= 4 and b[1:4] == b"\x00\x00\x00"


def classify(b: bytes) -> Classified:
    if stun.is_stun(b) and b[1] == 0x01:  # method Binding
        return Classified(PacketKind.STUN_BINDING)
    if len(b) >= GENEVE_FIXED_HEADER_LENGTH and b[0] & 0xC0 == 0 and b[1] & 0x3F == 0 and b[7] == 0:
        proto = int.from_bytes(b[2:4], "big")
        if proto == GENEVE_PROTOCOL_DISCO:
            if _looks_like_disco(b[GENEVE_FIXED_HEADER_LENGTH:]):
                return Classified(PacketKind.DISCO, geneve=True)
            return _wireguard(b)  # Go keeps the pre-Geneve behaviour: naked WireGuard
        if proto == GENEVE_PROTOCOL_WIREGUARD:
            return Classified(PacketKind.WIREGUARD, geneve=True)
    if _looks_like_disco(b):
        return Classified(PacketKind.DISCO)
    return _wireguard(b)


def _wireguard(b: bytes) -> Classified:
    return Classified(PacketKind.WIREGUARD if looks_like_wireguard(b) else PacketKind.UNKNOWN)
