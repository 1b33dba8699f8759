"""Chaos on the path half: kill DerpClient, DiscoPinger or StunProber mid-flow; traffic resumes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pytsnet.actors.runtime import FaultInjector

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "magicsock"))

from magicsock_nodes import node_pair, seqs, wg

from pytsnet.testing.polling import wait_until


@pytest.mark.parametrize("victim", ["derp.900", "disco", "stun", "udp"])
@pytest.mark.parametrize("advertise", [False, True], ids=["derp-only", "direct"])
def test_kill_mid_flow_restarts_and_traffic_resumes(victim: str, advertise: bool) -> None:
    with node_pair(advertise) as (a, b):
        n = 0

        def pump(k: int) -> int:
            nonlocal n
            for _ in range(k):
                a.send(b, wg(n))
                n += 1
            return n

        first = pump(20)
        wait_until(lambda: seqs(b) >= set(range(first)), what="flow before the kill")
        ref = a.ref(victim)
        FaultInjector.kill_now(ref)
        wait_until(lambda: ref.incarnation == 2 and ref.is_alive, what="supervised restart")

        mark = n

        def resumed() -> bool:  # the flow continues: packets sent after the restart arrive
            pump(1)
            return max(seqs(b)) >= mark
        wait_until(resumed, timeout=15, what="traffic after restart")
        last = pump(20)
        wait_until(lambda: seqs(b) >= set(range(last - 20, last)), what="a burst after the restart")
        assert a.ref("sup").is_alive
