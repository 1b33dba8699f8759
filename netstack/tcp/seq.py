"""Modular 32-bit sequence-number arithmetic (RFC 9293 §3.4, RFC 1982 style comparisons).

The connection keeps unbounded integer stream offsets internally and only uses these helpers
at the wire boundary, which keeps the hot path free of modular comparisons.
"""

from __future__ import annotations

SEQ_MOD = 1 << 32
SEQ_MASK = SEQ_MOD - 1
_HALF = 1 << 31


def seq_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**32."""
    return (a + n) & SEQ_MASK


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` in the range [-2**31, 2**31)."""
    d = (a - b) & SEQ_MASK
    return d - SEQ_MOD if d >= _HALF else d


def seq_lt(a: int, b: int) -> bool:
    """``a`` precedes ``b`` in sequence space."""
    return seq_diff(a, b) < 0


def seq_le(a: int, b: int) -> bool:
    """``a`` precedes or equals ``b`` in sequence space."""
    return seq_diff(a, b) <= 0


def seq_gt(a: int, b: int) -> bool:
    """``a`` follows ``b`` in sequence space."""
    return seq_diff(a, b) > 0


def seq_ge(a: int, b: int) -> bool:
    """``a`` follows or equals ``b`` in sequence space."""
    return seq_diff(a, b) >= 0
