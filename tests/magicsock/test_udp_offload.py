"""Batched UDP (issue 14): GSO sends and GRO reads against plain Linux UDP sockets, and the plain paths.

The sans-IO framing (``wire.magicsock.offload``) first; then the UDP router against a kernel socket on
loopback, each test twice: with offload (``gso+gro``; the kernel has both here) and forced plain
(``udp_offload=False``). Either way the datagrams on the wire and those handed to W are the same,
byte for byte and in order; only the counters say which path ran.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator

import pytest
from magicsock_nodes import REGION, Node, introduce, make_node
from magicsock_relay import MiniDerp, MiniStun

from pytsnet.actors.magicsock import udp_lane
from pytsnet.messages.magicsock import DerpRegion, PathUpdate, PeerActive, WgDatagramsOut
from pytsnet.testing.polling import wait_until
from pytsnet.wire.magicsock import offload

# -- sans-IO framing -------------------------------------------------------------------------------


def test_gso_runs_group_equal_sizes_and_end_on_a_shorter_one() -> None:
    assert offload.gso_runs([100, 100, 100, 40, 100, 100]) == [(0, 4), (4, 6)]
    assert offload.gso_runs([40, 100, 100]) == [(0, 1), (1, 3)]  # a longer one never joins a run
    assert offload.gso_runs([]) == []
    assert offload.gso_runs([7]) == [(0, 1)]


def test_gso_runs_respect_the_segment_and_byte_bounds() -> None:
    assert offload.gso_runs([10] * 130) == [(0, 64), (64, 128), (128, 130)]
    assert offload.gso_runs([1400] * 100) == [(0, 46), (46, 92), (92, 100)]  # 46 * 1400 <= 65507
    assert all(sum([1400] * (j - i)) <= offload.MAX_GSO_BYTES for i, j in offload.gso_runs([1400] * 100))


def test_gro_segments_split_a_read_into_datagrams() -> None:
    assert offload.gro_segments(250, 100) == [(0, 100), (100, 200), (200, 250)]
    assert offload.gro_segments(200, 100) == [(0, 100), (100, 200)]
    assert offload.gro_segments(80, 100) == [(0, 80)]  # one datagram
    assert offload.gro_segments(80, 0) == [(0, 80)]
    assert offload.gro_segments(0, 100) == [(0, 0)]


def test_gro_segment_size_from_ancillary_data() -> None:
    size = (1232).to_bytes(4, sys.byteorder)
    assert offload.gro_segment_size([(offload.SOL_UDP, offload.UDP_GRO, size)]) == 1232
    assert offload.gro_segment_size([(offload.SOL_UDP, offload.UDP_GRO, size[:2] if sys.byteorder == "little"
                                      else size[2:])]) == 1232  # a u16, as UDP_SEGMENT is
    assert offload.gro_segment_size([]) == 0
    assert offload.gro_segment_size([(socket.SOL_SOCKET, offload.UDP_GRO, size)]) == 0  # another level
    assert offload.gro_segment_size([(offload.SOL_UDP, offload.UDP_GRO, b"\x01")]) == 0  # too short


# -- the router against a kernel socket ----------------------------------------------------------------


def transport(seq: int, size: int) -> bytes:
    """A WireGuard-shaped transport datagram of ``size`` bytes (>= 32) carrying ``seq``."""
    return b"\x04\x00\x00\x00" + seq.to_bytes(8, "big") + bytes(size - 12)


@pytest.fixture(params=[True, False], ids=["gso-gro", "plain"])
def node(request: pytest.FixtureRequest) -> Iterator[Node]:
    """A router whose socket carries only the tests' datagrams: no STUN server in its region (a
    netcheck reply landing mid-test would be one more datagram read, whenever the prober's round
    trip happens to finish)."""
    d = MiniDerp()
    no_stun = (DerpRegion(region_id=REGION, host="127.0.0.1", port=d.port, stun_port=-1),)
    a = make_node("offload", d.port, 0, advertise=False, regions=no_stun, udp_offload=request.param)
    try:
        wait_until(lambda: a.status().offload != "", what="router up")
        yield a
    finally:
        assert a.system.shutdown(10)
        d.close()


@pytest.fixture
def kernel() -> Iterator[socket.socket]:
    k = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    k.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # a burst of 105 must not overflow it
    k.bind(("127.0.0.1", 0))
    k.settimeout(5)
    yield k
    k.close()


def _offloaded(a: Node) -> bool:
    return a.config.udp_offload


def test_reads_a_kernel_gso_burst_as_datagrams(node: Node, kernel: socket.socket) -> None:
    """The kernel peer sends 40 datagrams in one GSO sendmsg (and a plain one after): W gets 41
    datagrams, in order, byte-exact; with GRO on they came in one read."""
    a = node
    port = a.ref("udp")._cell.actor.bound_port
    burst = [transport(i, 140) for i in range(39)] + [transport(39, 60)]
    kernel.sendmsg([b"".join(burst)], offload.gso_control(140), 0, ("127.0.0.1", port))
    kernel.sendto(transport(40, 500), ("127.0.0.1", port))
    wait_until(lambda: len(a.got) >= 41, what="41 datagrams at W")
    assert [m.data for m in a.got] == [*burst, transport(40, 500)]
    src = f"127.0.0.1:{kernel.getsockname()[1]}"
    assert all(m.src == src and m.via == "udp" and m.peer is None for m in a.got)
    st = a.status()
    assert st.unknown_udp_source == 41 and st.datagrams_read == 41
    if _offloaded(a):
        assert st.offload == "gso+gro" and st.gro_reads == 1 and st.gro_datagrams == 40
    else:
        assert st.offload == "plain" and st.gro_reads == 0


def test_gro_read_drops_bad_segments_one_by_one(node: Node, kernel: socket.socket) -> None:
    """A GRO read holding junk segments: each is judged on its own (early drop), the rest delivered."""
    a = node
    port = a.ref("udp")._cell.actor.bound_port
    junk = b"\x09" * 100
    burst = [transport(0, 100), junk, transport(2, 100), b"\x01\x00\x00\x00" + bytes(96)]  # bad-length init
    kernel.sendmsg([b"".join(burst)], offload.gso_control(100), 0, ("127.0.0.1", port))
    wait_until(lambda: a.status().datagrams_read >= 4, what="4 datagrams examined")
    wait_until(lambda: len(a.got) >= 2, what="2 delivered")
    time.sleep(0.1)
    assert [m.data for m in a.got] == [burst[0], burst[2]]
    st = a.status()
    assert st.early_drops["unknown_kind"] == 1 and st.early_drops["bad_length"] == 1


def test_sends_a_burst_with_gso_the_kernel_sees_each_datagram(node: Node, kernel: socket.socket) -> None:
    """A burst to one peer: equal sizes go out in GSO sends (offload), the datagrams the kernel
    socket reads are the burst's, in order, byte-exact, either way."""
    a = node
    peer = "nodekey:" + "22" * 32
    dst = f"127.0.0.1:{kernel.getsockname()[1]}"
    a.ref("udp").tell(PathUpdate(peer=peer, udp=dst, trusted_until=time.monotonic() + 600, derp_region=0,
                                 rtt=0.001, addrs=(dst,)))
    burst = ([transport(i, 1232) for i in range(100)] + [transport(100, 200)]
             + [transport(101 + i, 96) for i in range(3)] + [transport(104, 1500)])
    a.ref("udp").tell(WgDatagramsOut(peer=peer, datas=tuple(burst)))
    got = [kernel.recv(65535) for _ in burst]
    assert got == burst
    st = a.status()
    assert st.peers[0].udp_bytes_out == sum(map(len, burst))
    if _offloaded(a):
        # 1232-byte runs of 53 (65507 // 1232) and 47 + the 200-byte tail, then 3 x 96; 1500 alone
        assert st.gso_sends == 3 and st.gso_datagrams == 104
    else:
        assert st.gso_sends == 0 and st.gso_datagrams == 0


def test_disco_lane_sends_on_the_routers_socket(node: Node, kernel: socket.socket) -> None:
    """``udp_lane``: the router's socket is published while it runs; a send from another thread goes
    out from the router's port (disco's source address is the one peers know)."""
    a = node
    ref = a.ref("udp")
    assert udp_lane.send(ref, b"lane", kernel.getsockname())
    data, src = kernel.recvfrom(100)
    assert data == b"lane" and src[1] == ref._cell.actor.bound_port
    assert not udp_lane.send(None, b"x", kernel.getsockname())


def test_disco_finds_the_direct_path_while_both_routers_are_stalled() -> None:
    """The disco lane: pings leave on the router's socket from the DiscoPinger's thread and the
    readers hand disco straight to the pingers, so a ping and its pong never wait in a router's
    mailbox. With both routers' handlers held (as if each were busy with a long bulk burst), disco
    still finds the direct path."""
    d, s = MiniDerp(), MiniStun()
    a = make_node("lane-a", d.port, s.port, advertise=True)
    b = make_node("lane-b", d.port, s.port, advertise=True)
    held = []
    try:
        wait_until(lambda: a.derp_status().connected and b.derp_status().connected, what="DERP connected")
        introduce(a, b)
        wait_until(lambda: len(a.status().peers) == 1 and len(b.status().peers) == 1, what="paths known")
        pinger, b_addr = a.ref("disco")._cell.actor, b.endpoints()[0]
        assert pinger.peers[b.key].ep.best.addr is None  # nothing sent yet: no discovery so far
        for n in (a, b):
            lock = n.ref("udp")._cell.run_lock
            lock.acquire()
            held.append(lock)
        a.ref("disco").tell(PeerActive(peer=b.key))  # what the router says when data flows
        wait_until(lambda: pinger.peers[b.key].ep.best.addr is not None, 10, "a direct path via disco alone")
        ip, port = pinger.peers[b.key].ep.best.addr
        assert f"{ip}:{port}" == b_addr
    finally:
        for lock in held:
            lock.release()
        assert a.system.shutdown(10)
        assert b.system.shutdown(10)
        d.close()
        s.close()


def test_router_publishes_direct_only_peers_and_counts_the_engines_sends(node: Node,
                                                                         kernel: socket.socket) -> None:
    """A trusted UDP path reaches W as a ``WgDirectPaths`` row (with the socket's GSO state); bytes W
    then writes on the lane show in the router's status; a removed peer leaves the table."""
    a = node
    peer = "nodekey:" + "33" * 32
    dst = f"127.0.0.1:{kernel.getsockname()[1]}"
    until = time.monotonic() + 600
    a.ref("udp").tell(PathUpdate(peer=peer, udp=dst, trusted_until=until, derp_region=0, rtt=0.001,
                                 addrs=(dst,)))
    wait_until(lambda: any(peer in t.peers for t in a.direct), what="the direct table")
    assert a.direct[0].reset and a.direct[0].peers == ()  # the router's start: an empty table
    table = next(t for t in reversed(a.direct) if peer in t.peers)
    assert table.addrs == (("127.0.0.1", kernel.getsockname()[1]),) and table.until == (until,)
    assert not table.reset and table.peers == (peer,)  # a path change is one row, not the table
    assert table.gso == _offloaded(a)
    burst = [transport(i, 1232) for i in range(5)]
    res = udp_lane.send_burst(a.ref("udp"), peer, table.addrs[0], burst, table.gso)
    assert res is not None and [kernel.recv(65535) for _ in burst] == burst
    st = a.status()
    assert st.peers[0].udp_bytes_out == sum(map(len, burst))
    assert (st.gso_sends, st.gso_datagrams) == ((1, 5) if _offloaded(a) else (0, 0))
    a.ref("udp").tell(PathUpdate(peer=peer, removed=True, udp=None, trusted_until=0, derp_region=0, rtt=None,
                                 addrs=()))
    wait_until(lambda: a.direct[-1].removed == (peer,) and not a.direct[-1].peers, what="removed")
