"""Receive coalescing for one TCP flow: a burst's in-order data segments become one segment (GRO).

A bulk transfer arrives as bursts of full-sized, in-order segments that differ only in sequence
number and payload. Feeding each one to ``TcpConnection.on_segment`` repeats the same bookkeeping
(acceptability, ACK field, timestamps, window, the ACK decision) per packet; Linux's and gVisor's
GRO instead merge such a run before TCP sees it. ``coalesce`` does that for the packets the
WireGuard engine routed to one flow: each packet's IP header and TCP checksum are still checked
one by one (nothing unverified is merged), then a run of segments that continue one another with
the same header (ACK or ACK|PSH, the NOP NOP TIMESTAMP layout, equal ACK, window and both
timestamps, as Linux's ``tcp_gro_receive`` requires identical options) is handed on as one segment
carrying the joined payload. A run starts only at the sequence number the connection expects next
(so out-of-order data still reaches TCP segment by segment: one duplicate ACK each, RFC 5681 §4.2),
ends after a PSH, and carries at most ``limit`` bytes (the connection's ACK-within-a-burst step, so
the sender's window opens as often as without coalescing). Anything else — SYN, FIN, RST, URG,
other options, a pure ACK — goes through ``parse_segment`` unchanged, in its place in the order.

Sans-IO and pure: packets in, segments out.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from pytsnet.netstack.checksum import verify
from pytsnet.netstack.config import IPAddress
from pytsnet.netstack.errors import ParseError
from pytsnet.netstack.interface import tcp_payload
from pytsnet.netstack.tcp import segment as tcpseg
from pytsnet.netstack.tcp.errors import TcpParseError
from pytsnet.netstack.tcp.segment import ACK, IPPROTO_TCP, PSH, TcpSegment

__all__ = ["coalesce"]

_HDR_TS = struct.Struct("!HHIIBBHHHIII")  # TCP header + NOP NOP TIMESTAMP (32 bytes)
_HDR_TS_LEN = 32
_IP4_TS_LEN = tcpseg.IP4_TCP_TS.size  # IPv4 without options + _HDR_TS
_OFF_TS = 0x80  # data offset 8 words
_NOP_NOP_TS = 0x0101080A
_SEQ_MASK = 0xFFFFFFFF
_new = tuple.__new__


def coalesce(packets: Iterable[bytes | bytearray | memoryview], src_ip: IPAddress, dst_ip: IPAddress,
             expected: int, limit: int) -> tuple[list[TcpSegment], int]:
    """The segments in ``packets`` (whole IP packets from ``src_ip`` to ``dst_ip``), in order, with
    runs of in-order data merged; and how many packets were dropped as malformed (bad IP header,
    bad TCP checksum or header). ``expected`` is the sequence number the connection wants next,
    ``limit`` the most payload bytes one merged segment may carry."""
    out: list[TcpSegment] = []
    bad = 0
    addr_sum = int(src_ip) + int(dst_ip) + IPPROTO_TCP
    unpack, unpack4 = _HDR_TS.unpack_from, tcpseg.IP4_TCP_TS.unpack_from
    # The open run: its head's header fields, its pieces and where it ends.
    pieces: list[memoryview] = []
    head: tuple[int, int, int, int, int, int, int] | None = None
    run_end = run_bytes = 0
    run_flags = ACK
    for data in packets:
        tcp = None
        if len(data) > _IP4_TS_LEN and data[0] == 0x45:
            # The common packet, IPv4 without options and TCP with timestamps, in one unpack: the IP
            # checks are ``tcp_payload``'s (lengths, no fragment, TCP, the header checksum summed from
            # the fields; a 32-bit field is ≡ the sum of its 16-bit halves mod 0xFFFF).
            (_vihl, tos, total, ident, frag, ttl, proto, ip_csum, src, dst, sport, dport, seq, ack, off,
             flags, window, _csum, _urg, opt4, tsval, tsecr) = unpack4(data)
            if (_IP4_TS_LEN < total <= len(data) and not frag & 0x3FFF and proto == IPPROTO_TCP
                    and not (0x4500 + tos + total + ident + frag + (ttl << 8 | proto) + ip_csum + src
                             + dst) % 0xFFFF):
                tcp = memoryview(data)[20:total]
        if tcp is None:
            try:
                tcp = tcp_payload(data)
            except ParseError:
                bad += 1
                continue
            if len(tcp) > _HDR_TS_LEN:
                sport, dport, seq, ack, off, flags, window, _csum, _urg, opt4, tsval, tsecr = unpack(tcp)
            else:
                off = 0  # too short for the merged layout: parsed on its own below
        n = len(tcp)
        if off == _OFF_TS and opt4 == _NOP_NOP_TS and flags | PSH == ACK | PSH:
            if not verify(tcp, addr_sum + n):
                bad += 1
                continue
            plen = n - _HDR_TS_LEN
            if head is not None and seq == run_end and run_bytes + plen <= limit and \
                    (sport, dport, ack, window, tsval, tsecr) == head[1:]:
                pieces.append(tcp[_HDR_TS_LEN:])
                run_end = (run_end + plen) & _SEQ_MASK
                run_bytes += plen
                if flags & PSH:
                    run_flags = ACK | PSH
                    expected = _flush(out, head, pieces, run_flags, run_end)
                    head = None
                continue
            if head is not None:
                expected = _flush(out, head, pieces, run_flags, run_end)
                head = None
            if seq == expected and plen <= limit:
                head = (seq, sport, dport, ack, window, tsval, tsecr)
                pieces = [tcp[_HDR_TS_LEN:]]
                run_end = (seq + plen) & _SEQ_MASK
                run_bytes = plen
                run_flags = flags
                if flags & PSH:
                    expected = _flush(out, head, pieces, run_flags, run_end)
                    head = None
                continue
        if head is not None:
            expected = _flush(out, head, pieces, run_flags, run_end)
            head = None
        try:
            seg = tcpseg.parse_segment(tcp, src_ip, dst_ip)
        except TcpParseError:
            bad += 1
            continue
        out.append(seg)
        if seg.seq == expected:
            expected = (expected + seg.seg_len) & _SEQ_MASK
    if head is not None:
        _flush(out, head, pieces, run_flags, run_end)
    return out, bad


def _flush(out: list[TcpSegment], head: tuple[int, int, int, int, int, int, int],
           pieces: list[memoryview], flags: int, end: int) -> int:
    """Append the run as one segment; returns the sequence number after it."""
    seq, sport, dport, ack, window, tsval, tsecr = head
    payload = bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces)
    out.append(_new(TcpSegment, (sport, dport, seq, ack, flags, window, None, None, False, (),
                                 (tsval, tsecr), payload, 0)))
    return end
