"""Two nodes on loopback: DERP only, upgrade to direct (DERP counters stop), fall back when cut."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from magicsock_nodes import node_pair, seqs, wg

from pytsnet.messages.magicsock import UdpBlackhole, WgDatagramOut
from pytsnet.testing.polling import wait_until
from pytsnet.wire import disco


def test_derp_only_when_no_endpoints_are_advertised() -> None:
    with node_pair(advertise=False) as (a, b):
        for i in range(50):
            a.send(b, wg(i))
            b.send(a, wg(1000 + i))
        wait_until(lambda: seqs(b, "derp") >= set(range(50)), what="A→B via DERP")
        wait_until(lambda: seqs(a, "derp") >= set(range(1000, 1050)), what="B→A via DERP")
        assert all(m.peer == a.key for m in b.got) and seqs(b, "udp") == set()
        st = a.status().peers[0]
        assert st.peer == b.key and st.path == "derp" and st.derp_region == 900 and st.udp_bytes_out == 0
        ds = a.derp_status()
        assert ds.home and [p.peer for p in ds.peers] == [b.key] and ds.peers[0].bytes_out >= 50 * 44


def test_upgrade_to_direct_then_fall_back_to_derp_when_cut() -> None:
    with node_pair(advertise=True) as (a, b):
        n = 0

        def pump(k: int = 5) -> None:
            nonlocal n
            for _ in range(k):
                a.send(b, wg(n))
                n += 1

        pump()
        wait_until(lambda: seqs(b, "derp") != set(), what="first packets via DERP")

        def direct() -> bool:
            pump(1)
            p = a.status().peers[0]
            return p.path == "direct"

        wait_until(direct, what="disco upgrade to direct")
        p = a.status().peers[0]
        assert p.addr == b.endpoints()[0] and p.rtt is not None and 0 <= p.rtt < 1.0
        before = a.derp_status().peers[0].bytes_out
        start = n
        pump(100)
        wait_until(lambda: seqs(b, "udp") >= set(range(start, n)), what="direct delivery")
        assert a.derp_status().peers[0].bytes_out == before  # DERP counters stop growing
        assert all(m.peer == a.key for m in b.got if m.via == "udp")  # UDP source mapped to the peer

        b.ref("udp").tell(UdpBlackhole(enabled=True))  # the direct path goes dark

        def back_on_derp() -> bool:
            pump(1)
            return a.status().peers[0].path == "derp" and max(seqs(b, "derp")) > start
        wait_until(back_on_derp, what="fallback to DERP")
        cut = n
        pump(20)
        wait_until(lambda: seqs(b, "derp") >= set(range(cut, n)), what="delivery via DERP after the cut")


def test_unknown_peer_is_dropped_and_counted() -> None:
    with node_pair(advertise=False) as (a, _b):
        a.ref("udp").tell(WgDatagramOut(peer="nodekey:" + "11" * 32, data=wg(1)))
        wait_until(lambda: a.status().dropped_unknown_peer == 1, what="drop counted")  # after its wait


def test_a_pinger_slow_to_handle_disco_still_measures_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The RTT ends when the UDP reader took the pong off the socket (``DiscoIn.at``), as Go's ends in
    its read loop, and the peer's reader sends the pong itself (``disco_reply``): DiscoPingers that
    open every disco box 0.25 s late (their mailbox, a wait for the GIL behind bulk data) add nothing
    to the path's latency, on either side."""
    real_open = disco.open_packet

    def slow_open(*args: Any, **kwargs: Any) -> Any:
        if "disco" in threading.current_thread().name:  # the DiscoPingers', not the readers'
            time.sleep(0.25)
        return real_open(*args, **kwargs)

    with node_pair(advertise=True) as (a, b):
        n = 0

        def direct() -> bool:
            nonlocal n
            a.send(b, wg(n))
            n += 1
            return a.status().peers[0].path == "direct"

        wait_until(direct, what="disco upgrade to direct")
        monkeypatch.setattr(disco, "open_packet", slow_open)
        first = a.status().peers[0].rtt
        wait_until(lambda: a.status().peers[0].rtt != first, 10, "a pong handled late")
        rtt = a.status().peers[0].rtt
        assert rtt is not None and rtt < 0.2, rtt
        assert a.status().pings_answered > 0 and b.status().pings_answered > 0
