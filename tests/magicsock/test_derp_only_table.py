"""The router publishes DERP-only peers to W with their region's DERP client (``WgDirectPaths``
``derp_peers``), keeps each peer in one table at most, and counts what W told DERP in its status."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from magicsock_nodes import REGION, Node, make_node
from magicsock_relay import MiniDerp, MiniStun

from pytsnet.actors.magicsock import udp_lane
from pytsnet.messages.magicsock import DerpRoute, PathUpdate, WgDirectPathsRequest
from pytsnet.testing.polling import wait_until


@pytest.fixture
def node() -> Iterator[Node]:
    d, s = MiniDerp(), MiniStun()
    a = make_node("derponly", d.port, s.port, advertise=False)
    try:
        wait_until(lambda: a.status().offload != "", what="router up")
        yield a
    finally:
        assert a.system.shutdown(10)
        d.close()
        s.close()


def test_derp_only_rows_follow_the_peers_path(node: Node) -> None:
    a = node
    udp = a.ref("udp")
    homed, homeless = "nodekey:" + "44" * 32, "nodekey:" + "55" * 32
    derp_name = a.config.derp_name(REGION)

    # DERP home known, no UDP address: a DERP-only row naming that region's client.
    udp.tell(PathUpdate(peer=homed, udp=None, trusted_until=0, derp_region=REGION, rtt=None, addrs=()))
    wait_until(lambda: homed in a.direct[-1].derp_peers, what="the DERP-only row")
    row = a.direct[-1]
    assert not row.reset and row.derp_actors == (derp_name,) and row.peers == () and row.removed == ()

    # No home and no route yet: no path at all, so no row (the router drops and counts).
    udp.tell(PathUpdate(peer=homeless, udp=None, trusted_until=0, derp_region=0, rtt=None, addrs=()))
    wait_until(lambda: a.direct[-1].removed == (homeless,), what="no row without a region")
    # Its packets came in on our region: that region reaches it now.
    udp.tell(DerpRoute(peer=homeless, region=REGION, conn=7))
    wait_until(lambda: homeless in a.direct[-1].derp_peers, what="a row from the DERP route")
    udp.tell(DerpRoute(peer=homeless, region=REGION, conn=7, present=False))
    wait_until(lambda: a.direct[-1].removed == (homeless,), what="the route gone, the row too")

    # A UDP address (trusted or not): the router decides again (UDP, or UDP plus DERP); a trusted one
    # is a direct row and no DERP row.
    until = time.monotonic() + 600
    udp.tell(PathUpdate(peer=homed, udp="127.0.0.1:9", trusted_until=until, derp_region=REGION, rtt=0.001,
                        addrs=("127.0.0.1:9",)))
    wait_until(lambda: homed in a.direct[-1].peers, what="the direct row")
    assert a.direct[-1].derp_peers == ()

    # The whole table (a restarted engine asks): each peer in the table its path says.
    udp.tell(PathUpdate(peer=homeless, udp=None, trusted_until=0, derp_region=REGION, rtt=None, addrs=()))
    wait_until(lambda: homeless in a.direct[-1].derp_peers, what="homeless homed now")
    udp.tell(WgDirectPathsRequest())
    wait_until(lambda: a.direct[-1].reset, what="the whole table")
    full = a.direct[-1]
    assert full.peers == (homed,) and full.derp_peers == (homeless,) and full.derp_actors == (derp_name,)

    # What W told the DERP client itself shows in the router's status, refusals in its drop count.
    before = a.status()
    udp_lane.count_derp(udp, homeless, 1000, refused=2)
    st = a.status()
    row_out = {p.peer: p.derp_bytes_out for p in st.peers}
    assert row_out[homeless] == {p.peer: p.derp_bytes_out for p in before.peers}[homeless] + 1000
    assert st.dropped_derp_full == before.dropped_derp_full + 2
