"""RFC 1071 Internet checksum, computed with big-integer arithmetic (fast in CPython).

The ones'-complement sum of 16-bit words equals the whole buffer, read as one integer, modulo
0xFFFF (because 2**16 ≡ 1 mod 0xFFFF); only a non-zero buffer whose sum is a multiple of 0xFFFF
needs care (it folds to 0xFFFF, not 0). The buffer is read little-endian, CPython's own digit
order (~25% faster than big-endian, and an odd length needs no zero pad: the pad byte would be the
most significant), which gives the byte-swapped sum (RFC 1071 §2(B): the sum is byte-order
independent); one swap of the 16-bit result turns it back. The same congruence makes an address
pair's pseudo-header contribution the plain sum of its integers.

``n % 0xFFFF`` is a hardware division per 30-bit digit; for a buffer of 512 bytes or more, folds
first (``n = (n >> h) + (n & (2**h - 1))`` with ``h`` a multiple of 16 bits, which keeps the
residue) halve the number with cheap shifts and masks: a packet-sized buffer down to ~700 bits by a
chain cached per length, a larger one twice (~35% faster at 64 KiB than the division alone).
"""

from __future__ import annotations

import ipaddress

_from_bytes = int.from_bytes
_FOLD_MIN = 512  # bytes; below this the folds cost more than the division they save
_MASKS: dict[int, int] = {}  # h -> 2**h - 1, for the few packet sizes a flow uses
_MASKS_MAX = 128
_MASK_BITS_MAX = 16384  # only small masks are kept (a 64 KiB datagram builds its own)
# Up to a packet's size, halving down to ~700 bits before the modulo beat two folds by ~12% at
# 1,272 bytes (bench/checksum.py: 1.96 against 2.21 µs); the chain is cached per buffer length.
_CHAIN_MAX_BYTES = 2048
_CHAIN_STOP_BITS = 700
_CHAINS: dict[int, tuple[tuple[int, int], ...]] = {}
_CHAINS_MAX = 128


def _mask(h: int) -> int:
    m = _MASKS.get(h)
    if m is None:
        m = (1 << h) - 1
        if h <= _MASK_BITS_MAX and len(_MASKS) < _MASKS_MAX:
            _MASKS[h] = m
    return m


def _chain(size: int) -> tuple[tuple[int, int], ...]:
    """The folds that take a ``size``-byte buffer's integer down to ~700 bits: (shift, mask) each,
    the shift a multiple of 16 bits (2**16 ≡ 1 mod 0xFFFF, so each fold keeps the residue)."""
    steps, bits = [], size << 3
    while bits > _CHAIN_STOP_BITS:
        h = ((bits >> 1) + 15) & ~15
        steps.append((h, (1 << h) - 1))
        bits = max(bits - h, h) + 1
    return tuple(steps)


def _residue(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(the buffer read little-endian is non-zero, that integer mod 0xFFFF)."""
    n = _from_bytes(data, "little")
    size = len(data)
    if size >= _FOLD_MIN and n:
        chain = _CHAINS.get(size)
        if chain is None and size <= _CHAIN_MAX_BYTES:
            chain = _chain(size)
            if len(_CHAINS) < _CHAINS_MAX:
                _CHAINS[size] = chain
        if chain is not None:
            for h, m in chain:
                n = (n >> h) + (n & m)
        else:
            h = (size << 2) & ~31  # half the bits, a multiple of 16
            n = (n >> h) + (n & _mask(h))
            h >>= 1
            n = (n >> h) + (n & _mask(h))
    return n, n % 0xFFFF


def ones_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """Folded 16-bit ones'-complement sum of ``data`` (zero-padded to even length) plus ``initial``.

    ``initial`` may be any non-negative integer congruent to a partial sum (it need not be folded).
    """
    le, s = _residue(data)
    if not le and not initial:
        return 0
    r = (((s & 0xFF) << 8 | s >> 8) + initial) % 0xFFFF
    return r if r else 0xFFFF


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The value to put in a checksum field: the complement of the folded sum."""
    le, s = _residue(data)
    if not le and not initial:
        return 0xFFFF
    r = (((s & 0xFF) << 8 | s >> 8) + initial) % 0xFFFF
    return 0xFFFF - r if r else 0


def verify(data: bytes | bytearray | memoryview, initial: int = 0) -> bool:
    """True when ``data`` (with its checksum field filled in) sums to 0xFFFF, i.e. is intact."""
    le, s = _residue(data)
    if not le and not initial:
        return False
    return not (((s & 0xFF) << 8 | s >> 8) + initial) % 0xFFFF


def update16(csum: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3: the checksum field after one 16-bit word of the covered data changes from
    ``old`` to ``new`` (HC' = ~(~HC + ~m + m')), for header rewrites without a full re-sum."""
    r = ((~csum & 0xFFFF) + (~old & 0xFFFF) + new) % 0xFFFF
    return 0xFFFF - r if r else 0


def address_sum(src: ipaddress.IPv4Address | ipaddress.IPv6Address,
                dst: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    """The addresses' unfolded contribution to a pseudo-header sum (valid as part of ``initial``)."""
    return int(src) + int(dst)


def pseudo_header_sum(src: ipaddress.IPv4Address | ipaddress.IPv6Address,
                      dst: ipaddress.IPv4Address | ipaddress.IPv6Address,
                      protocol: int, length: int) -> int:
    """Sum of the TCP/UDP/ICMPv6 pseudo-header (RFC 9293 §3.1, RFC 8200 §8.1) for ``initial``."""
    # 2**16 ≡ 1 (mod 0xFFFF): each address, the 32-bit length and the protocol sum as integers.
    n = int(src) + int(dst) + protocol + length
    r = n % 0xFFFF
    return r if r or not n else 0xFFFF
