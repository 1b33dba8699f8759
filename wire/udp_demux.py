"""Tell STUN, disco and WireGuard apart on magicsock's one UDP socket.

Order and tests follow Go ``packetLooksLike`` (``wgengine/magicsock/magicsock.go``): STUN binding
first, then a Geneve header (peer-relay paths, ``net/packet/geneve.go``), then the disco magic,
otherwise WireGuard. Go hands every leftover datagram to wireguard-go, which drops junk; here a
leftover that is not shaped like a WireGuard message (type 1-4, three zero bytes) is ``UNKNOWN`` so
the caller can drop it without a lookup. Classification never raises.

``early_drop`` is the reader's gate before a datagram is copied or queued (wireguard-go drops the
same things in ``RoutineReceiveIncoming`` before its queues): oversize datagrams, WireGuard messages
of the wrong length, transport/response/cookie messages whose receiver index is no live session's,
and anything unclassifiable. A flood of such datagrams then costs a read and a check, never memory.
"""

from __future__ import annotations

import struct
from collections.abc import Container
from dataclasses import dataclass
from enum import Enum, auto

from pytsnet.wire import disco, stun

GENEVE_FIXED_HEADER_LENGTH = 8
GENEVE_PROTOCOL_DISCO = 0x7A11
GENEVE_PROTOCOL_WIREGUARD = 0x7A12
_DISCO_HEADER_LEN = len(disco.MAGIC) + disco.KEY_LEN  # magicsock's discoHeaderLen (magic + sender key)

MAX_DATAGRAM = 9000
"""The largest datagram accepted: the largest wire MTU Go's magicsock probes (``WireMTUsToProbe``,
9000), which also bounds its padded disco pings. Larger ones are dropped as ``oversize``."""

# WireGuard message type -> (exact length or minimum for transport, receiver index offset or None)
_WG_SHAPES = {1: (148, None), 2: (92, 8), 3: (64, 4), 4: (32, 4)}
_U32 = struct.Struct("<I")

EARLY_DROP_REASONS = ("oversize", "bad_length", "unknown_index", "unknown_kind", "handshake_queue_full",
                      "initiation_budget")


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


def _looks_like_disco(b: bytes | bytearray | memoryview) -> bool:
    return len(b) >= _DISCO_HEADER_LEN and b[: len(disco.MAGIC)] == disco.MAGIC


def looks_like_wireguard(b: bytes | bytearray | memoryview) -> bool:
    """A WireGuard message starts with type 1-4 and three reserved zero bytes."""
    return len(b) >= 4 and 1 <= b[0] <= 4 and b[1:4] == b"\x00\x00\x00"


def classify(b: bytes | bytearray | memoryview) -> Classified:
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


def _wireguard(b: bytes | bytearray | memoryview) -> Classified:
    return Classified(PacketKind.WIREGUARD if looks_like_wireguard(b) else PacketKind.UNKNOWN)


def early_drop(
    b: bytes | bytearray | memoryview, live_indexes: Container[int] | None, *, initiations_full: bool = False
) -> str | None:
    """Why the reader should drop ``b`` at once (one of ``EARLY_DROP_REASONS``), or None to keep it.

    ``live_indexes`` are the receiver indexes the engine has sessions or pending handshakes under;
    None while unknown (nothing is dropped for its index then). ``initiations_full``: the engine's
    handshake queue is full, so an initiation would only be dropped there (wireguard-go's reader
    drops it at the full queue itself). WireGuard-shaped datagrams are recognised from four bytes (a
    WireGuard header never classifies as STUN, Geneve or disco).
    """
    n = len(b)
    if n > MAX_DATAGRAM:
        return "oversize"
    if n >= 4 and 1 <= b[0] <= 4 and b[1] == 0 and b[2] == 0 and b[3] == 0:
        size, off = _WG_SHAPES[b[0]]
        if n < size or (n != size and b[0] != 4):
            return "bad_length"
        if off is not None and live_indexes is not None and _U32.unpack_from(b, off)[0] not in live_indexes:
            return "unknown_index"
        if off is None and initiations_full:
            return "handshake_queue_full"
        return None
    if classify(b).kind is PacketKind.UNKNOWN:  # works on a memoryview too: no copy
        return "unknown_kind"
    return None
