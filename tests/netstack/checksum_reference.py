"""The RFC 1071 sum as it was before issue 14 (big-endian integer, zero pad for odd lengths): the
reference the fast checksum and header paths are checked against."""


def old_ones_sum(data: bytes, initial: int = 0) -> int:
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    n = int.from_bytes(data, "big") + initial
    if n == 0:
        return 0
    r = n % 0xFFFF
    return r if r else 0xFFFF


def old_checksum(data: bytes, initial: int = 0) -> int:
    return ~old_ones_sum(data, initial) & 0xFFFF
