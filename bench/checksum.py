"""What a TCP checksum costs per segment, and what the alternatives to the big-int residue would save.

Run: ``.venv/bin/python bench/checksum.py [--payload 1240] [--bursts 1,8,45,100]``. µs per segment,
best of 5 ``timeit`` repeats (a burst of load elsewhere costs a repeat, not the number):

* the parts of ``checksum._residue`` (``int.from_bytes``, one fold, ``% 0xFFFF``) and the whole
  ``checksum``/``verify`` as the emit and the receive coalescer call them;
* a fold chain (halving down to ~700 bits, the sequence cached per length) — the best pure-Python
  reduction found for 14h, which ``checksum._residue`` now uses for packet-sized buffers;
* if numpy is importable (it is not a dependency: ``pip install numpy`` into a scratch venv), a whole
  burst summed in one pass (segments joined, read as big-endian 32-bit words, one ``reduceat``),
  alone and with a CPU-bound Python thread running: numpy drops the GIL in its loops, and with another
  runnable thread the caller then waits for it back (see "Issue 14: the checksum" in
  docs/performance.md for why 14h did not keep it).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import timeit
from collections.abc import Callable, Sequence
from functools import partial

from pytsnet.netstack import checksum as cs


def per_call(fn: Callable[[], object], per: int = 1) -> float:
    """Best µs per call of ``fn`` over 5 repeats of about 0.1 s, divided by ``per``."""
    number = max(1, int(0.1 / max(timeit.timeit(fn, number=3) / 3, 1e-7)))
    return min(timeit.repeat(fn, number=number, repeat=5)) / number / per * 1e6


_SEQS: dict[int, tuple[tuple[int, int], ...]] = {}


def residue_fold_chain(data: bytes | memoryview) -> int:
    """``data`` read little-endian, mod 0xFFFF, folded in halves (multiples of 16 bits) to ~700 bits."""
    n = int.from_bytes(data, "little")
    seq = _SEQS.get(len(data))
    if seq is None:
        steps, bits = [], len(data) << 3
        while bits > 700:
            h = ((bits >> 1) + 15) & ~15
            steps.append((h, (1 << h) - 1))
            bits = bits - h + 1
        seq = _SEQS[len(data)] = tuple(steps)
    for h, m in seq:
        n = (n >> h) + (n & m)
    return n % 0xFFFF


def numpy_burst(np: object, bufs: Sequence[bytes | memoryview]) -> list[int]:
    """Per buffer (length a multiple of 4 here), a value ≡ its 16-bit word sum mod 0xFFFF."""
    offs, o = [], 0
    for b in bufs:
        offs.append(o)
        o += len(b) >> 2
    words = np.frombuffer(b"".join(bufs), ">u4").astype(np.uint64)  # type: ignore[attr-defined]
    sums: list[int] = np.add.reduceat(words, offs).tolist()  # type: ignore[attr-defined]
    return sums


def with_spinner(fn: Callable[[], object], calls: int) -> float:
    """Mean µs per call of ``fn`` while another thread runs Python code (the GIL contended)."""
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():
            x += 1

    t = threading.Thread(target=spin, daemon=True)
    t.start()
    try:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - start) / calls * 1e6
    finally:
        stop.set()
        t.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--payload", type=int, default=1240, help="payload bytes per segment")
    ap.add_argument("--bursts", default="1,8,45,100", help="segments per burst for the numpy rows")
    args = ap.parse_args()
    seg = memoryview(os.urandom(args.payload + 52))[20:]  # a TCP segment (32-byte header) in an IP packet
    n = int.from_bytes(seg, "little")
    h = (len(seg) << 2) & ~31
    folded = (n >> h) + (n & ((1 << h) - 1))
    assert residue_fold_chain(seg) == cs._residue(seg)[1]
    print(f"one {len(seg)}-byte segment (a memoryview), µs per call, best of 5")
    rows: list[tuple[str, Callable[[], object]]] = [
        ("int.from_bytes(seg, 'little')", partial(int.from_bytes, seg, "little")),
        ("n % 0xFFFF, unfolded", partial(int.__mod__, n, 0xFFFF)),
        ("n % 0xFFFF after one fold", partial(int.__mod__, folded, 0xFFFF)),
        ("checksum._residue (from_bytes, its cached fold chain, %)", partial(cs._residue, seg)),
        ("checksum.checksum(seg, initial)", partial(cs.checksum, seg, 12345)),
        ("checksum.verify(seg, initial)", partial(cs.verify, seg, 12345)),
        ("fold chain to ~700 bits, then %", partial(residue_fold_chain, seg)),
    ]
    for name, fn in rows:
        print(f"| {name} | {per_call(fn):.2f} |")
    try:
        import numpy
    except ImportError:
        print("numpy not importable: no burst rows")
        return
    print("\nnumpy, one pass per burst: µs per segment (best of 5); mean µs per burst, a thread spinning")
    for k in (int(x) for x in args.bursts.split(",")):
        bufs = [memoryview(os.urandom(args.payload + 52))[20:] for _ in range(k)]
        burst = partial(numpy_burst, numpy, bufs)
        assert [s % 0xFFFF for s in burst()] == [cs.ones_sum(b) % 0xFFFF for b in bufs]
        one_by_one = per_call(lambda bufs=bufs: [cs.checksum(b, 1) for b in bufs], k)  # type: ignore[misc]
        print(f"| burst of {k} | one by one {one_by_one:.2f} | numpy {per_call(burst, k):.2f} "
              f"| numpy with a spinner {with_spinner(burst, 200):.0f} per burst |")


if __name__ == "__main__":
    main()
