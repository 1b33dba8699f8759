"""Local congestion (Linux's tcp_enter_cwr on NET_XMIT_CN): the flow reports a long queue below it,
TCP reduces cwnd as for ECN-CE (RFC 3168 §6.1.2): once per window, no retransmission."""

from tcp_sim import LinkParams, Sim

from pytsnet.netstack.tcp.congestion import INITIAL_SSTHRESH
from pytsnet.netstack.tcp.connection import TcpConfig


def _sending(cc: str) -> Sim:
    sim = Sim(cfg_a=TcpConfig(congestion_control=cc, pacing=False), link=LinkParams(delay=0.05))
    sim.run(Sim.established)
    assert sim.a is not None
    sim.a.send(bytes(200_000))
    sim.poll()
    return sim


def test_one_reduction_per_window_and_nothing_resent() -> None:
    for cc in ("cubic", "newreno"):
        sim = _sending(cc)
        a = sim.a
        assert a is not None
        cwnd0 = a._cc.cwnd
        flight = a._snd_max - a._snd_una
        a.on_local_congestion()
        a.on_local_congestion()  # same window: ignored
        assert a.local_congestion_signals == 1
        assert a._cc.ssthresh < INITIAL_SSTHRESH and a._cc.cwnd <= a._cc.ssthresh < cwnd0
        assert a._cc.ssthresh == max(round(max(flight, cwnd0) * 0.7), 2 * a._payload_max) if cc == "cubic" \
            else max(flight // 2, 2 * a._payload_max)
        assert not a._cc.in_recovery and a.retransmitted_segments == 0
        end = a._snd_max
        sim.run(lambda s, end=end: s.a is not None and s.a._snd_una >= end)  # that window is acknowledged
        a.on_local_congestion()
        assert a.local_congestion_signals == 2, cc


def test_nothing_in_flight_nothing_to_reduce() -> None:
    sim = Sim()
    sim.run(Sim.established)
    assert sim.a is not None
    cwnd = sim.a._cc.cwnd
    sim.a.on_local_congestion()
    assert sim.a._cc.cwnd == cwnd and sim.a.local_congestion_signals == 0
