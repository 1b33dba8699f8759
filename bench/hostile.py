"""A stranger floods a node's magicsock UDP port: what it costs the node.

Usage: ``.venv/bin/python bench/hostile.py [--count 200000] [--seconds 5] [--transfer-mib 8]
[--scenarios transport:1400,transport:61440,junk:1400,initiation:148]``. The victim is an
``ActorDevice`` in its own process, the attacker another process sending as fast as one process goes
(``pytsnet.testing.flood``), the tailnet and a legitimate peer run here with a direct tunnel to the
victim; while each flood runs the peer echoes ``--transfer-mib`` MiB through the victim. Reported
per scenario: datagrams/s sent and received (taken off the victim's socket; the kernel drops the
rest), drops by reason, work (DH vs cookie replies), the victim's RSS before and at peak, how long
after the flood its data-plane backlog read zero, and the echo.
Same scenarios as tests/hostile/test_hostile_flood.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from pytsnet.testing.flood import FloodResult, FloodRig

NOT_A_DROP = "magicsock_unknown_udp_source"  # counts WireGuard from unmapped sources, passed on to W


def _report(r: FloodResult) -> None:
    drops = ", ".join(f"{k}={v}" for k, v in sorted(r.drops.items(), key=lambda kv: -kv[1])
                      if v > 0 and k != NOT_A_DROP)
    work = {k: v for k, v in r.counters.items() if k.startswith("wg_")}
    echo = "—"
    if r.transfer_ok is not None:
        echo = f"{'exact' if r.transfer_ok else 'CORRUPT'} in {r.transfer_seconds:.1f} s"
    drained = "not within the limit" if r.drained_after is None else f"{r.drained_after * 1000:.0f} ms"
    sent_rate = r.sent / r.attack_seconds
    print(f"{r.kind} {r.size} B: sent {r.sent} in {r.attack_seconds:.1f} s ({sent_rate:,.0f}/s), "
          f"received {r.read} ({r.read_rate:,.0f}/s)")
    print(f"  dropped: {drops}")
    if work:
        print(f"  work: {work}")
    print(f"  RSS {r.rss_before_mib:.1f} MiB -> peak {r.rss_peak_mib:.1f} MiB (+{r.rss_growth_mib:.1f}); "
          f"backlog empty {drained} after the flood; status() {r.status_seconds * 1000:.0f} ms; echo {echo}",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--transfer-mib", type=int, default=8)
    ap.add_argument("--scenarios", default="transport:1400,transport:61440,junk:1400,initiation:148")
    args = ap.parse_args()
    print("$ " + " ".join([".venv/bin/python", *sys.argv]), flush=True)
    with tempfile.TemporaryDirectory() as d, FloodRig(Path(d)) as rig:
        for spec in args.scenarios.split(","):
            kind, size = spec.split(":")
            _report(rig.flood(kind, int(size), count=args.count, seconds=args.seconds,
                              transfer=args.transfer_mib << 20))


if __name__ == "__main__":
    main()
