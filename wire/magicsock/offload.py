"""Linux UDP segmentation offload framing: which datagrams share one GSO send, how one GRO read splits.

GSO (``UDP_SEGMENT``): one ``sendmsg`` carries several datagrams to one destination as one buffer and
a segment size; the kernel cuts it into datagrams of that size, the last one may be shorter (Linux
``udp_send_skb``; wireguard-go ``conn/gso_linux.go``). GRO (``UDP_GRO``): the kernel hands one read of
several same-source datagrams joined, with the segment size in a ``(SOL_UDP, UDP_GRO)`` control message
(every segment that size, the last one may be shorter). Sans-IO: sizes and byte ranges in, out; the
caller owns the socket.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable, Sequence

__all__ = [
    "GRO_CMSG_SPACE",
    "MAX_GSO_BYTES",
    "MAX_GSO_SEGMENTS",
    "SOL_UDP",
    "UDP_GRO",
    "UDP_SEGMENT",
    "gro_segment_size",
    "gro_segments",
    "gso_control",
    "gso_runs",
]

SOL_UDP = 17
UDP_SEGMENT = 103  # linux/udp.h: setsockopt or cmsg, u16 segment size
UDP_GRO = 104  # linux/udp.h: setsockopt int; the read's cmsg carries the segment size as an int
MAX_GSO_SEGMENTS = 64  # UDP_MAX_SEGMENTS before Linux 6.11 (128 since): the older bound works on both
MAX_GSO_BYTES = 65507  # the largest IPv4 UDP payload: one GSO send is one (unsegmented) UDP datagram
GRO_CMSG_SPACE = 32  # >= CMSG_SPACE(sizeof(int)) on every ABI: room for the UDP_GRO control message

_U16 = struct.Struct("=H")


def gso_control(segment: int) -> list[tuple[int, int, bytes]]:
    """The ancillary data of a GSO ``sendmsg`` cutting the buffer into ``segment``-byte datagrams."""
    return [(SOL_UDP, UDP_SEGMENT, _U16.pack(segment))]


def gso_runs(sizes: Sequence[int], max_segments: int = MAX_GSO_SEGMENTS,
             max_bytes: int = MAX_GSO_BYTES) -> list[tuple[int, int]]:
    """Split datagrams of ``sizes`` (in send order) into ``[start, end)`` runs that one GSO send can
    carry: each datagram the size of the run's first but the last, which may be shorter; at most
    ``max_segments`` datagrams and ``max_bytes`` together. A run of one is an ordinary send."""
    runs: list[tuple[int, int]] = []
    n = len(sizes)
    i = 0
    while i < n:
        seg = sizes[i]
        total = seg
        j = i + 1
        while j < n and j - i < max_segments and sizes[j] <= seg and total + sizes[j] <= max_bytes:
            total += sizes[j]
            j += 1
            if sizes[j - 1] < seg:
                break  # a shorter datagram ends the run
        runs.append((i, j))
        i = j
    return runs


def gro_segment_size(ancdata: Iterable[tuple[int, int, bytes]]) -> int:
    """The segment size of a GRO read from ``recvmsg``'s ancillary data; 0 when the read is one
    datagram (no ``UDP_GRO`` message, or one too short to hold a size)."""
    for level, kind, data in ancdata:
        if level == SOL_UDP and kind == UDP_GRO:
            if len(data) >= 4:
                return int.from_bytes(data[:4], sys.byteorder, signed=True)
            if len(data) >= 2:
                return int(_U16.unpack_from(data)[0])
    return 0


def gro_segments(n: int, segment: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` byte ranges of the datagrams in an ``n``-byte GRO read of ``segment``-byte
    segments; the whole read when ``segment`` is 0, negative or not smaller than ``n``."""
    if segment <= 0 or segment >= n:
        return [(0, n)]
    return [(a, min(a + segment, n)) for a in range(0, n, segment)]
