"""RFC 1071 Internet checksum, computed with big-integer arithmetic (fast in CPython).

The ones'-complement sum of 16-bit big-endian words equals the whole buffer, read as one
big-endian integer, modulo 0xFFFF (because 2**16 ≡ 1 mod 0xFFFF); only a non-zero buffer whose
sum is a multiple of 0xFFFF needs care (it folds to 0xFFFF, not 0).
"""

from __future__ import annotations

import ipaddress


def ones_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """Folded 16-bit ones'-complement sum of ``data`` (zero-padded to even length) plus ``initial``."""
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    n = int.from_bytes(data, "big") + initial
    if n == 0:
        return 0
    r = n % 0xFFFF
    return r if r else 0xFFFF


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The value to put in a checksum field: the complement of the folded sum."""
    return ~ones_sum(data, initial) & 0xFFFF


def verify(data: bytes | bytearray | memoryview, initial: int = 0) -> bool:
    """True when ``data`` (with its checksum field filled in) sums to 0xFFFF, i.e. is intact."""
    return checksum(data, initial) == 0


def pseudo_header_sum(src: ipaddress.IPv4Address | ipaddress.IPv6Address,
                      dst: ipaddress.IPv4Address | ipaddress.IPv6Address,
                      protocol: int, length: int) -> int:
    """Sum of the TCP/UDP/ICMPv6 pseudo-header (RFC 9293 §3.1, RFC 8200 §8.1) for ``initial``."""
    if src.version == 4:
        head = src.packed + dst.packed + bytes((0, protocol)) + length.to_bytes(2, "big")
    else:
        head = src.packed + dst.packed + length.to_bytes(4, "big") + b"\x00\x00\x00" + bytes((protocol,))
    return ones_sum(head)
