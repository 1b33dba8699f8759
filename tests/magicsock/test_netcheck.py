"""netcheck core: STUN probes per region, latency, home choice with Go's stickiness, retransmits."""

from __future__ import annotations

import ipaddress
import itertools

from pytsnet.wire import stun
from pytsnet.wire.magicsock.netcheck import REPORT_TIMEOUT, Netcheck, preferred_derp

S1 = (ipaddress.ip_address("127.0.0.1"), 3478)
S2 = (ipaddress.ip_address("127.0.0.2"), 3478)
ME = (ipaddress.ip_address("203.0.113.5"), 41641)


def make(servers: dict) -> Netcheck:
    c = itertools.count()
    return Netcheck(servers, tx_id=lambda: next(c).to_bytes(12, "big"))


def answer(req: bytes) -> bytes:
    return stun.response(stun.parse_binding_request(req), ME[0], ME[1])


def test_report_latency_global_addr_and_fastest_home() -> None:
    nc = make({1: [S1], 2: [S2]})
    sends = nc.start(0.0)
    assert [s.dst for s in sends] == [S1, S2]
    assert nc.on_response(0.030, answer(sends[0].data))
    assert not nc.done
    assert nc.on_response(0.010, answer(sends[1].data))
    assert nc.done
    r = nc.report()
    assert r.udp and r.global_v4 == ME and r.preferred_derp == 2
    assert r.region_latency == {1: 0.030, 2: 0.010}
    assert r.derp_latency == {"1-v4": 0.030, "2-v4": 0.010}  # Go's NetInfo.DERPLatency keys
    assert not nc.on_response(0.04, answer(sends[0].data))  # duplicate: not ours any more
    assert not nc.on_response(0.04, b"garbage")


def test_retransmits_then_times_out_without_udp() -> None:
    nc = make({1: [S1]})
    nc.start(0.0)
    n = 1
    t = 0.0
    while not nc.done:
        d = nc.next_deadline()
        assert d is not None
        t = d
        n += len(nc.handle_timeout(t))
    assert n == 3 and t == REPORT_TIMEOUT
    r = nc.report()
    assert not r.udp and r.global_v4 is None and r.preferred_derp == 0


def test_home_stickiness() -> None:
    assert preferred_derp({1: 0.050, 2: 0.045}, prev=1) == 1  # < 10 ms better
    assert preferred_derp({1: 0.100, 2: 0.080}, prev=1) == 1  # not 1/3 faster
    assert preferred_derp({1: 0.100, 2: 0.060}, prev=1) == 2
    assert preferred_derp({2: 0.060}, prev=1) == 2  # old home unreachable
    assert preferred_derp({}, prev=1) == 1
    assert preferred_derp({1: 0.02, 2: 0.02}) == 1  # ties: lowest region id, deterministic
