"""Chaos: the WgEngine actor is killed at seeded random points while packets stream both ways;
each restart re-handshakes and the stream finishes (in order, nothing delivered twice)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "wgengine"))

from wgengine_helpers import udp
from wgengine_rig import make_pair

from pytsnet.actors.runtime import FaultInjector
from pytsnet.messages.wgengine import IpPacketOut
from pytsnet.testing.polling import wait_until


def _seqs(packets: list[bytes]) -> list[int]:
    return [int.from_bytes(p[28:32], "big") for p in packets]


def test_engine_killed_repeatedly_traffic_resumes_each_time() -> None:
    a, b, _ = make_pair()
    try:
        seq = 0
        for round_ in range(4):
            victim = a if round_ % 2 == 0 else b
            other = b if victim is a else a
            start = seq
            for _ in range(30):
                pkt = udp(victim.addr, other.addr, payload=seq.to_bytes(4, "big"))
                victim.engine.tell(IpPacketOut(data=pkt))
                seq += 1
            inc = victim.engine.incarnation
            FaultInjector.kill_now(victim.engine, f"chaos round {round_}")
            wait_until(lambda v=victim, i=inc: v.engine.is_alive and v.engine.incarnation > i)
            mark = seq
            for _ in range(10):
                pkt = udp(victim.addr, other.addr, payload=seq.to_bytes(4, "big"))
                victim.engine.tell(IpPacketOut(data=pkt))
                seq += 1
            wait_until(lambda o=other, m=mark: any(s >= m for s in _seqs(o.got)), timeout=10)
            got = [s for s in _seqs(other.got) if s >= start]
            assert got == sorted(set(got))
    finally:
        a.system.shutdown()
        b.system.shutdown()
