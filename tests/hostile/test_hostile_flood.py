"""A stranger floods a node's magicsock UDP port: it costs the node CPU, never memory.

The victim is an ``ActorDevice`` in its own process (so its RSS is its own), the attacker another
process sending as fast as one process goes, the legitimate peer and the tailnet live here
(``pytsnet.testing.flood.FloodRig``). Per flood: at least 200,000 datagrams over at least 5 s; the
victim's RSS grows by at most 64 MiB (a generous functional bound; bench/hostile.py reports the real
figures); the data plane's backlog, read off the mailboxes' byte counters, is empty within a second
after the flood; an 8 MiB echo on the tunnel established before the flood comes back byte-exact; the
flood is dropped on read, by reason, and never reaches the engine. A flood of genuine handshake
initiations from unknown keys puts the engine under load: it answers with cookie replies, not DH, the
reader sheds what is over its initiation budget, and the echo still comes back byte-exact.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytsnet.testing.flood import FloodRig

pytestmark = [pytest.mark.serial]  # load-sensitive: run alone (Makefile, `make test`)

COUNT, SECONDS = 200_000, 5.0
RSS_BOUND_MIB = 64
TRANSFER = 8 << 20


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("size", "reason"),
                         [(1400, "magicsock_unknown_index"), (60 << 10, "magicsock_oversize")],
                         ids=["1400B", "60KiB"])
def test_udp_flood_costs_cpu_not_memory(tmp_path: Path, size: int, reason: str) -> None:
    with FloodRig(tmp_path) as rig:
        r = rig.flood("transport", size, count=COUNT, seconds=SECONDS, transfer=TRANSFER)
        assert r.sent >= COUNT and r.attack_seconds >= SECONDS, f"the flood fell short: {r}"
        assert r.read >= 20_000, f"the victim read too little of the flood to prove anything: {r}"
        assert r.transfer_ok is True, "the 8 MiB echo during the flood was not byte-exact"
        assert r.rss_growth_mib <= RSS_BOUND_MIB, f"victim RSS grew {r.rss_growth_mib:.1f} MiB: {r}"
        assert r.drained_after is not None and r.drained_after <= 1.0, f"backlog not drained in 1 s: {r}"
        # dropped on read, by reason: everything read but the echo's own packets
        assert r.drops.get(reason, 0) >= max(20_000, r.read - 30_000), f"flood not dropped as {reason}: {r}"
        # and none of it reached the engine
        assert r.drops.get("wg_unknown_index", 0) == 0 and r.drops.get("wg_not_wireguard", 0) == 0, r.drops
        assert r.status_seconds < 1.0, f"status() took {r.status_seconds:.1f}s right after the flood"
        assert rig.transfer(256 << 10)[0], "the tunnel does not work after the flood"


@pytest.mark.timeout(600)
def test_handshake_flood_gets_cookies_not_dh(tmp_path: Path) -> None:
    with FloodRig(tmp_path) as rig:
        r = rig.flood("initiation", 148, count=COUNT, seconds=SECONDS, transfer=TRANSFER)
        assert r.sent >= COUNT and r.attack_seconds >= SECONDS, f"the flood fell short: {r}"
        cookies = r.counters.get("wg_cookie_replies", 0)
        dh = r.counters.get("wg_handshake_dh", 0)
        assert cookies >= 2_000, f"under load, initiations must earn cookie replies: {r}"
        assert dh <= cookies // 50, f"{dh} DH computations against {cookies} cookie replies: {r}"
        assert r.drops.get("wg_unknown_peer", 0) == dh  # every DH done was for an unknown key, refused
        # what the engine could not answer was shed on read, not queued
        shed = sum(r.drops.get(f"magicsock_{k}", 0) for k in ("initiation_budget", "handshake_queue_full"))
        assert shed >= max(20_000, r.read // 2), f"initiations not shed on read: {r}"
        assert r.transfer_ok is True, "the 8 MiB echo during the handshake flood was not byte-exact"
        assert r.rss_growth_mib <= RSS_BOUND_MIB, f"victim RSS grew {r.rss_growth_mib:.1f} MiB: {r}"
        assert r.drained_after is not None and r.drained_after <= 1.0, f"backlog not drained in 1 s: {r}"
