"""TAI64N handshake timestamps (tai64n/tai64n.go): the responder's replay protection for initiations."""

from __future__ import annotations

import struct

TAI64N_BASE = 0x400000000000000A
WHITENER_MASK = 0xFFFFFF  # low 24 bits of the nanoseconds cleared so the timestamp leaks less


def stamp(unix_time: float) -> bytes:
    """12 bytes: big-endian seconds since the TAI64 epoch and whitened nanoseconds."""
    secs = int(unix_time)
    nanos = int((unix_time - secs) * 1e9) & ~WHITENER_MASK & 0xFFFFFFFF
    return struct.pack(">QI", TAI64N_BASE + secs, nanos)


def after(a: bytes, b: bytes) -> bool:
    """True if timestamp ``a`` is strictly newer than ``b`` (big-endian bytes compare in order)."""
    return a > b
