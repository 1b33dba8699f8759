"""The TCP checksum per segment, one at a time vs a burst summed in one pass (``checksum.word_sums``).

Run: ``.venv/bin/python bench/checksum.py [--payload 1240] [--bursts 1,8,30,45,60]``. Prints µs per
segment (best of 5 ``timeit`` repeats, so a burst of load elsewhere costs a repeat, not the number):

* ``one by one``: ``checksum(payload, initial)`` per segment, the big-int residue (``int.from_bytes``
  then folds and ``% 0xFFFF``), what every emit and verify did before 14h;
* ``word_sums``: one call per burst, what the flow's emit and the receive coalescer do now;
* the whole IPv4+TCP emit of a burst with and without the burst's payload sums, and ``coalesce`` of a
  burst of whole packets (header checks, checksums, merging), per packet.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import timeit
from collections.abc import Callable
from functools import partial

from pytsnet.netstack.checksum import checksum, word_sums
from pytsnet.netstack.gro import coalesce
from pytsnet.netstack.tcp.segment import ACK, TcpSegment, emit_ipv4_segment

A = ipaddress.IPv4Address("100.64.0.1")
B = ipaddress.IPv4Address("100.64.0.2")


def per_call(fn: Callable[[], object], calls: int) -> float:
    """Best µs per call of ``fn`` over 5 repeats of about 0.1 s."""
    number = max(1, int(0.1 / max(timeit.timeit(fn, number=3) / 3, 1e-7)))
    return min(timeit.repeat(fn, number=number, repeat=5)) / number / calls * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--payload", type=int, default=1240, help="payload bytes per segment")
    ap.add_argument("--bursts", default="1,8,30,45,60", help="segments per burst, comma-separated")
    args = ap.parse_args()
    print(f"payload {args.payload} B; µs per segment (best of 5)")
    print("| burst | one by one | word_sums | emit burst | emit burst, word_sums | coalesce |")
    print("|---:|---:|---:|---:|---:|---:|")
    for k in (int(x) for x in args.bursts.split(",")):
        segs = [TcpSegment(40000, 443, 1000 + i * args.payload, 7, ACK, 512, timestamp=(11, 22),
                           payload=os.urandom(args.payload)) for i in range(k)]
        payloads = [s.payload for s in segs]
        pkts = [emit_ipv4_segment(s, A, B, 64, i) for i, s in enumerate(segs)]
        views = [memoryview(p)[20:] for p in pkts]

        def one_by_one(views: list[memoryview] = views) -> None:
            for v in views:
                checksum(v, 12345)

        def emit(segs: list[TcpSegment] = segs) -> None:
            for i, s in enumerate(segs):
                emit_ipv4_segment(s, A, B, 64, i)

        def emit_sums(segs: list[TcpSegment] = segs, payloads: list[bytes] = payloads) -> None:
            for i, (s, p) in enumerate(zip(segs, word_sums(payloads), strict=True)):
                emit_ipv4_segment(s, A, B, 64, i, p)

        row = [per_call(one_by_one, k), per_call(partial(word_sums, views), k), per_call(emit, k),
               per_call(emit_sums, k), per_call(partial(coalesce, pkts, A, B, 1000, 1 << 30), k)]
        print(f"| {k} | " + " | ".join(f"{x:.2f}" for x in row) + " |")


if __name__ == "__main__":
    main()
