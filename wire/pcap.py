"""Go tsnet's packet-capture format (``feature/capture``): a classic little-endian pcap with
LINKTYPE_USER0 (147), each record's payload prefixed by Tailscale's 4-byte metadata (the capture
path as uint16 LE, then SNAT and DNAT address lengths, 0 here) so Tailscale's Wireshark dissector
(``ts-dissector.lua``) decodes it. Sans-IO: bytes out; the caller owns the file and the clock."""

from __future__ import annotations

import struct
from enum import IntEnum

__all__ = ["LINKTYPE_USER0", "CapturePath", "file_header", "record"]

MAGIC = 0xA1B2C3D4
LINKTYPE_USER0 = 147
SNAPLEN = 65535
_FILE_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER = struct.Struct("<IIII")
_META = struct.Struct("<HBB")


class CapturePath(IntEnum):
    """Go ``packet.CapturePath``: where in the data path the packet was seen."""

    FROM_LOCAL = 0  # from our stack, about to be encrypted to a peer
    FROM_PEER = 1  # decrypted from a peer, before the packet filter
    SYNTHESIZED_TO_LOCAL = 2
    SYNTHESIZED_TO_PEER = 3
    DISCO = 254


def file_header() -> bytes:
    return _FILE_HEADER.pack(MAGIC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_USER0)


def record(path: CapturePath, when: float, packet: bytes) -> bytes:
    """One record: ``when`` is Unix time in seconds; the packet is kept whole, as Go does."""
    seconds = int(when)
    micros = min(999_999, round((when - seconds) * 1e6))
    n = _META.size + len(packet)
    return _RECORD_HEADER.pack(seconds, micros, n, n) + _META.pack(int(path), 0, 0) + packet
