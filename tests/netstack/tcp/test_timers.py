"""Retransmission timer (RFC 6298), fast retransmit (RFC 5681/6582), delayed ACK, keepalive."""

import itertools

import pytest
from tcp_sim import LinkParams, Sim

from pytsnet.netstack.tcp.connection import TcpConfig
from pytsnet.netstack.tcp.errors import ConnectionTimedOut
from pytsnet.netstack.tcp.segment import TcpSegment

DATA_A_TO_B = 0


def test_rto_backoff_doubles_and_gives_up() -> None:
    block = {"on": False}
    cfg = TcpConfig(max_retransmits=5, rto_min=0.2, timestamps=False, rack=False)  # no TLP probe: RTOs only
    sim = Sim(cfg_a=cfg, link=LinkParams(drop_fn=lambda d, s: block["on"] and d == 0))
    sim.run(Sim.established)
    sim.a.send(b"x" * 100)
    sim.run(lambda s: s.a.send_buffered == 0 and not s._q)
    block["on"] = True
    sim.a.send(b"y" * 100)
    sim.run(lambda s: s.a.is_closed)
    sends = [t.t for t in sim.trace if t.direction == 0 and t.seg.payload == b"y" * 100]
    assert len(sends) == 6  # first transmission + max_retransmits
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    for g1, g2 in itertools.pairwise(gaps):
        assert g2 == pytest.approx(2 * g1)  # RFC 6298 §5.5
    assert gaps[0] >= 0.2  # never below RTO.min
    assert isinstance(sim.a.error, ConnectionTimedOut)


def test_rtt_estimate_converges_to_path_rtt() -> None:
    for ts in (True, False):  # timestamps (RFC 7323 §4) and one-timed-segment-per-RTT (Karn)
        sim = Sim(cfg_a=TcpConfig(timestamps=ts), cfg_b=TcpConfig(timestamps=ts), link=LinkParams(delay=0.05))
        sim.run(Sim.established)
        for _ in range(20):
            sim.a.send(b"ping")
            sim.run(lambda s: s.a.send_buffered == 0)
        assert sim.a._rtt.srtt == pytest.approx(0.1, abs=0.045)  # 2*delay, + up to one delayed ACK


@pytest.mark.parametrize(("lose", "rack"), [("syn", True), ("ack", False), ("ack", True)])
def test_ambiguous_timestamp_echo_does_not_inflate_rtt(lose: str, rack: bool) -> None:
    """After a retransmission, an ACK echoing an older TSval must not become an RTT sample.

    A lost SYN (the SYN-ACK echoes the first SYN) or a lost ACK followed by an RTO (the duplicate
    is answered with TS.Recent of older data) would otherwise yield a sample as long as the RTO.
    """
    state = {"armed": lose == "syn", "dropped": 0}

    def drop(direction: int, seg: TcpSegment) -> bool:
        if not state["armed"] or state["dropped"]:
            return False
        hit = (lose == "syn" and direction == 1) or (lose == "ack" and direction == 1 and not seg.payload)
        state["dropped"] += hit
        return hit
    sim = Sim(cfg_a=TcpConfig(rack=rack), cfg_b=TcpConfig(delayed_ack=0), link=LinkParams(drop_fn=drop))
    sim.run(Sim.established)
    state["armed"] = True
    sim.a.send(b"q" * 100)
    sim.run(lambda s: s.a.send_buffered == 0)
    assert state["dropped"] == 1
    if lose == "ack":
        # Without RACK-TLP the RTO resends; with it the tail loss probe does, before the RTO.
        assert (sim.a.rto_expiries, sim.a.tail_loss_probes) == ((0, 1) if rack else (1, 0))
    assert sim.a._rtt.srtt is not None and sim.a._rtt.srtt < 0.025, sim.a._rtt.srtt


@pytest.mark.parametrize("sack", [True, False])
def test_single_loss_is_repaired_by_fast_retransmit_not_rto(sack: bool) -> None:
    state = {"n": 0}

    def drop(direction: int, seg: TcpSegment) -> bool:
        if direction == 0 and seg.payload:
            state["n"] += 1
            return state["n"] == 30
        return False
    cfg = TcpConfig(sack=sack)
    sim = Sim(cfg_a=cfg, cfg_b=cfg, link=LinkParams(drop_fn=drop))
    sim.run(Sim.established)
    data = bytes(range(256)) * 1000
    sim.a.send(data)
    got = bytearray()

    def app(s: Sim) -> None:
        got.extend(s.b.recv(1 << 20))
    sim.run(lambda s: len(got) == len(data), app)
    assert bytes(got) == data
    assert sim.a.rto_expiries == 0 and sim.a.fast_recoveries == 1
    assert sim.a.retransmitted_segments == 1


def test_reordering_recovery_is_undone_with_timestamps() -> None:
    """A segment delayed (not lost) past 3 duplicate ACKs: Eifel detection restores cwnd."""
    state = {"n": 0}

    def late(direction: int, seg: TcpSegment) -> float:
        if direction == 0 and seg.payload:
            state["n"] += 1
            if state["n"] == 60:
                return 0.015
        return 0.0
    sim = Sim(link=LinkParams(delay_fn=late))
    sim.run(Sim.established)
    data = bytes(1 << 20)
    sim.a.send(data[:200_000])
    got = bytearray()

    def app(s: Sim) -> None:
        got.extend(s.b.recv(1 << 20))
    sim.run(lambda s: len(got) == 200_000, app)
    assert sim.a.fast_recoveries == 1 and sim.a.spurious_recoveries == 1
    assert sim.a._dupthresh == 6
    assert sim.a.rto_expiries == 0
    assert sim.a._cc.ssthresh == 1 << 30  # the halving was undone: still in slow start


def test_cwnd_restarts_after_idle() -> None:
    sim = Sim()
    sim.run(Sim.established)
    sim.a.send(bytes(200_000))

    def drain(s: Sim) -> None:
        s.b.recv(1 << 20)
    sim.run(lambda s: s.a.send_buffered == 0, drain)
    assert sim.a._cc.cwnd > 40_000
    sim.run(lambda s: s.now > 30.0, tick=1.0)  # idle far longer than the RTO
    sim.a.send(bytes(200_000))
    sim.poll()
    assert sim.a._cc.cwnd == sim.a._cc.initial_window  # RFC 5681 §4.1
    burst = [t for t in sim.trace if t.direction == 0 and t.t == sim.now and t.seg.payload]
    assert sum(len(t.seg.payload) for t in burst) <= sim.a._cc.initial_window


def test_delayed_ack_timing() -> None:
    sim = Sim(cfg_b=TcpConfig(delayed_ack=0.04))
    sim.run(Sim.established)
    sim.run(lambda s: not s._q)
    n = len(sim.trace)
    t0 = sim.now
    sim.a.send(b"one small segment")
    sim.run(lambda s: any(t.direction == 1 for t in s.trace[n:]))
    ack = next(t for t in sim.trace[n:] if t.direction == 1)
    assert ack.t == pytest.approx(t0 + 0.01 + 0.04)  # arrival + delayed-ACK timeout
    # Two full-sized segments are acknowledged at once (RFC 9293 §3.8.6.3 / RFC 5681 §4.2).
    sim.run(lambda s: not s._q)
    n = len(sim.trace)
    t0 = sim.now
    sim.a.send(bytes(2 * 1228))
    sim.run(lambda s: any(t.direction == 1 for t in s.trace[n:]))
    ack = next(t for t in sim.trace[n:] if t.direction == 1)
    assert ack.t == pytest.approx(t0 + 0.01)


def test_keepalive_detects_dead_peer() -> None:
    dead = {"on": False}
    cfg = TcpConfig(keepalive_idle=30.0, keepalive_interval=5.0, keepalive_probes=3)
    sim = Sim(cfg_a=cfg, link=LinkParams(drop_fn=lambda d, s: dead["on"]))
    sim.run(Sim.established)
    sim.run(lambda s: s.now > 100)  # a live idle peer answers the probes
    assert not sim.a.is_closed
    probes_alive = sum(1 for t in sim.trace if t.direction == 0 and t.t > 1)
    assert probes_alive >= 3
    dead["on"] = True
    t_dead = sim.now
    sim.run(lambda s: s.a.is_closed)
    assert isinstance(sim.a.error, ConnectionTimedOut)
    assert sim.now - t_dead <= 30.0 + 4 * 5.0 + 1e-6
