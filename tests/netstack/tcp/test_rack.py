"""RACK-TLP (RFC 8985): time-based loss marking, the reordering window, lost retransmissions, TLP."""

import pytest
from tcp_sim import LinkParams, Sim

from pytsnet.netstack.tcp.connection import TcpConfig
from pytsnet.netstack.tcp.rack import REO_WND_PERSIST, WC_DEL_ACK, Rack, probe_timeout
from pytsnet.netstack.tcp.segment import TcpSegment
from pytsnet.netstack.tcp.sendbuf import SackScoreboard

SEG = 1000


def _rack_with_two_runs() -> Rack:
    """Segments [0, 10000) sent at t=0 and [10000, 20000) at t=0.01."""
    r = Rack()
    for i in range(10):
        r.on_new_data(i * SEG, 0.0)
    for i in range(10, 20):
        r.on_new_data(i * SEG, 0.01)
    return r


def test_send_times_are_kept_per_run() -> None:
    r = _rack_with_two_runs()
    assert r.sent_at(0) == 0.0 and r.sent_at(9999) == 0.0 and r.sent_at(10000) == 0.01
    assert len(r._run_offs) == 2


def test_segment_is_lost_once_a_later_one_is_delivered_and_rtt_plus_reo_wnd_passed() -> None:
    r = _rack_with_two_runs()
    sb = SackScoreboard()
    sb.add(15000, 16000)
    r.on_delivered(15000, 16000, 0.06)  # sent at 0.01, so RACK.rtt = 0.05
    assert (r.xmit_ts, r.end_seq, r.rtt) == (0.01, 16000, pytest.approx(0.05))
    # At 0.055 the t=0 run is 5 ms short of rtt + reo_wnd (10 ms): not lost yet, timer 5 ms.
    edge, lost, timeout = r.detect_loss(0, 20000, sb, 0.055, 0.01)
    assert edge == 0 and lost == [] and timeout == pytest.approx(0.005)
    # At 0.06 the whole t=0 run is lost; of the t=0.01 run only what lies below RACK.end_seq is
    # a candidate, and it waits until 0.07.
    edge, lost, timeout = r.detect_loss(0, 20000, sb, 0.06, 0.01)
    assert edge == 10000 and timeout == pytest.approx(0.01)
    edge, _, timeout = r.detect_loss(0, 20000, sb, 0.07, 0.01)
    assert edge == 16000 and timeout is None
    # Segments sent after RACK.xmit_ts are never marked lost by it: the edge stops at RACK.end_seq
    # (the delivered segment itself is SACKed, so "lost" only means the unSACKed bytes below).
    r2 = _rack_with_two_runs()
    r2.on_delivered(5000, 6000, 0.05)
    edge, _, _ = r2.detect_loss(0, 20000, SackScoreboard(), 10.0, 0.0)
    assert edge == 6000


def test_reordering_is_noticed_and_widens_the_window() -> None:
    r = _rack_with_two_runs()
    r.on_delivered(15000, 16000, 0.05)
    assert not r.reordering_seen
    assert r.reo_wnd(in_recovery=True, dupthresh_reached=False, srtt=0.04) == 0.0  # §6.2: no reordering yet
    r.on_delivered(3000, 4000, 0.052)  # an original below FACK: reordering (§6.2 step 3)
    assert r.reordering_seen
    assert r.reo_wnd(True, True, srtt=0.04) == pytest.approx(0.01)  # SRTT/4 (min_RTT is smaller here)
    r.on_dsack(1.0, 0.04)
    r.on_dsack(1.01, 0.04)  # within the same round trip: counted once
    assert r.reo_wnd_mult == 2 and r.reo_wnd(True, True, 0.04) == pytest.approx(0.02)
    for i in range(10):
        r.on_dsack(2.0 + i, 0.04)
    assert r.reo_wnd(True, True, 0.04) == pytest.approx(0.08)  # capped at 2*SRTT (the RFC: SRTT)
    for _ in range(REO_WND_PERSIST):
        r.on_recovery_end()
    assert r.reo_wnd_mult == 1


def test_lost_retransmission_is_detected() -> None:
    r = _rack_with_two_runs()
    sb = SackScoreboard()
    r.on_retransmit(0, 1000, 0.1)
    r.on_new_data(20000, 0.11)
    sb.add(20000, 21000)
    r.on_delivered(20000, 21000, 0.16)
    _, lost, timeout = r.detect_loss(0, 21000, sb, 0.16, 0.02)
    assert lost == [] and timeout == pytest.approx(0.01)  # sent 0.1 + rtt 0.05 + reo 0.02 = 0.17
    _, lost, _ = r.detect_loss(0, 21000, sb, 0.17, 0.02)
    assert lost == [0]
    # A retransmission that was SACKed is forgotten, never reported lost.
    r.on_retransmit(1000, 2000, 0.1)
    sb.add(1000, 2000)
    _, lost, _ = r.detect_loss(0, 21000, sb, 1.0, 0.0)
    assert lost == []


def test_memory_is_bounded_and_released_by_acks() -> None:
    r = Rack()
    for i in range(10_000):
        r.on_new_data(i * SEG, i * 0.001)
    assert len(r._run_offs) <= 4096
    assert r.sent_at(10_000 * SEG - 1) == pytest.approx(9.999)
    r.forget_below(9_990 * SEG)
    assert len(r._run_offs) <= 11


def test_probe_timeout() -> None:
    assert probe_timeout(0.05, 5, 1.0) == pytest.approx(0.1)  # 2*SRTT
    assert probe_timeout(0.05, 1, 1.0) == pytest.approx(0.1 + WC_DEL_ACK)  # one segment: + WCDelAckT
    assert probe_timeout(0.05, 5, 0.07) == pytest.approx(0.07)  # never after the RTO
    assert probe_timeout(None, 5, 3.0) == 1.0


# -- the connection with RACK-TLP ---------------------------------------------------------------

def _lose_tail_once(n_tail: int):  # type: ignore[no-untyped-def]
    state = {"seen": 0}
    total_segments = 20

    def drop(direction: int, seg: TcpSegment) -> bool:
        if direction != 0 or not seg.payload:
            return False
        state["seen"] += 1
        return total_segments - n_tail < state["seen"] <= total_segments
    return drop


@pytest.mark.parametrize("rack", [True, False])
def test_tail_loss_is_repaired_by_a_probe_not_the_rto(rack: bool) -> None:
    """The last 3 segments of a 20-segment write are lost: TLP's probe brings a SACK and RACK
    repairs the rest; without RACK-TLP only the RTO can (no later data makes duplicate ACKs)."""
    cfg = TcpConfig(rack=rack, rto_min=1.0)
    sim = Sim(cfg_a=cfg, link=LinkParams(delay=0.02, drop_fn=_lose_tail_once(3)))
    sim.run(Sim.established)
    data = bytes(range(256)) * 100  # 20 full segments are taken from it
    sim.a.send(data[: 20 * 1228])
    got = bytearray()
    sim.run(lambda s: (got.extend(s.b.recv(1 << 20)), len(got) == 20 * 1228)[1])
    assert bytes(got) == data[: 20 * 1228]
    if rack:
        assert sim.a.tail_loss_probes == 1 and sim.a.rto_expiries == 0
        assert sim.now < 0.5  # a few RTTs, not the 1 s RTO
    else:
        assert sim.a.tail_loss_probes == 0 and sim.a.rto_expiries >= 1


@pytest.mark.parametrize("rack", [True, False])
def test_lost_retransmission_is_repaired_without_rto(rack: bool) -> None:
    """Segment 30 and its fast retransmission are both lost. Duplicate ACKs cannot show a lost
    retransmission; RACK does (a later-sent segment was delivered), so no RTO is needed."""
    state = {"n": 0, "first": None}

    def drop(direction: int, seg: TcpSegment) -> bool:
        if direction != 0 or not seg.payload:
            return False
        state["n"] += 1
        if state["n"] == 30:
            state["first"] = seg.seq
            return True
        if seg.seq == state["first"] and state["first"] is not None:
            state["first"] = None  # its first retransmission: lost too
            return True
        return False
    cfg = TcpConfig(rack=rack, rto_min=1.0)
    sim = Sim(cfg_a=cfg, link=LinkParams(delay=0.02, drop_fn=drop))
    sim.run(Sim.established)
    data = bytes(range(256)) * 1000
    sim.a.send(data)
    got = bytearray()
    sim.run(lambda s: (got.extend(s.b.recv(1 << 20)), len(got) == len(data))[1])
    assert bytes(got) == data and state["first"] is None
    if rack:
        assert sim.a.rto_expiries == 0
    else:
        assert sim.a.rto_expiries == 1


def test_a_lost_fin_is_resent_by_the_rto_with_rack_tlp_on() -> None:
    """Only our FIN is unacknowledged and it is lost twice: TLP has no data to probe with (and is
    not armed once we half-closed), so the RTO resends the FIN, backing off."""
    state = {"fins": 0}

    def drop(direction: int, seg: TcpSegment) -> bool:
        if direction == 0 and seg.flags & 0x01:  # FIN
            state["fins"] += 1
            return state["fins"] <= 2
        return False
    sim = Sim(cfg_a=TcpConfig(rto_min=0.2), link=LinkParams(delay=0.02, drop_fn=drop))
    sim.run(Sim.established)
    sim.a.send(b"x" * 5000)
    sim.run(lambda s: s.a.send_buffered == 0)
    sim.a.shutdown_write()
    sim.run(lambda s: (s.b.recv(1 << 20), s.b.at_eof)[1], max_time=30.0)
    assert state["fins"] == 3 and sim.a.rto_expiries >= 1
