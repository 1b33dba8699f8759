"""Two pacing rules that decided the fairness of 1,000 flows on a CPU-bound stack (issue 14).

* Paced segments leave in pairs. A receiver ACKs a second full segment at once and delays the ACK
  of a lone one (Linux up to its ato, which grows towards the RTT); a flow paced to one segment per
  tick had its SRTT inflated by that delay, so its pacing rate (gain * cwnd / SRTT) fell, so it sent
  lone segments again. Under bench/flows.py such flows ran at a tenth of those that sent bursts.
* Slow start grows cwnd only while the flight fills it (as congestion avoidance already did, RFC
  7661), not half of it: flows whose pacer is held back by late ticks (a busy pool) otherwise stayed
  in slow start forever, doubling towards the send buffer, while the flows cut once sat at their
  window: max/min 9-22.
"""

import collections

from tcp_sim import LinkParams, Sim, Transfer

from pytsnet.netstack.tcp.connection import TcpConfig


def test_paced_new_data_leaves_in_pairs() -> None:
    # The sim polls each connection exactly at its deadline: the pacer is never late, so before,
    # every paced release was one segment.
    sim = Sim(cfg_a=TcpConfig(pacing=True, send_buffer=64 << 10), link=LinkParams(delay=0.25))
    sim.run(Sim.established)
    size = 1 << 20
    xfer = Transfer(bytes(size), b"")
    sim.run(lambda s: len(xfer.got[1]) == size, xfer)
    per_instant = collections.Counter(t.t for t in sim.trace if t.direction == 0 and t.seg.payload)
    lone = sum(1 for n in per_instant.values() if n == 1)
    assert lone <= 0.05 * len(per_instant), (lone, len(per_instant))
    assert max(per_instant.values()) <= 4  # still paced: the pair, plus at most the credit


def test_slow_start_grows_only_while_the_flight_fills_the_window() -> None:
    sim = Sim(link=LinkParams(delay=0.02))
    sim.run(Sim.established)
    a = sim.a
    assert a is not None and sim.b is not None
    iw, mss = a._cc.cwnd, a._payload_max
    assert iw < a._cc.ssthresh  # slow start
    chunk = (iw // mss) * 6 // 10 * mss  # 60% of the window every 50 ms (RTT 40 ms)
    for _ in range(100):
        a.send(b"x" * chunk)
        end = sim.now + 0.05
        sim.run(lambda s, end=end: s.now >= end, lambda s: s.b.recv(1 << 20) if s.b else None, tick=0.01)
    assert a._cc.cwnd == iw


def test_slow_start_still_doubles_when_the_window_is_filled() -> None:
    sim = Sim(link=LinkParams(delay=0.02))
    sim.run(Sim.established)
    a = sim.a
    assert a is not None
    iw = a._cc.cwnd
    xfer = Transfer(bytes(1 << 20), b"", close=False)
    sim.run(lambda s: s.now >= 0.3, xfer)  # ~7 round trips
    assert a._cc.cwnd >= 16 * iw
