"""HyStart++ (RFC 9406): slow start ends when the round trip grows, before any loss."""

from tcp_sim import LinkParams, Sim, Transfer

from pytsnet.netstack.tcp.congestion import INITIAL_SSTHRESH
from pytsnet.netstack.tcp.connection import TcpConfig
from pytsnet.netstack.tcp.hystart import CSS_ROUNDS, HyStart
from pytsnet.netstack.tcp.segment import TcpSegment


def _round(hs: HyStart, end: int, rtts: list[float]) -> None:
    hs.on_ack(end, end + 10_000)
    for r in rtts:
        hs.on_rtt(r)


def test_delay_increase_enters_css_then_congestion_avoidance() -> None:
    hs = HyStart()
    _round(hs, 0, [0.010] * 8)
    _round(hs, 10_000, [0.011] * 8)  # +1 ms: under the 4 ms floor of the threshold
    assert not hs.in_css and hs.growth(1000) == 1000
    _round(hs, 20_000, [0.016] * 8)  # +5 ms over 11 ms: the queue is building
    assert hs.in_css and hs.growth(1000) == 250
    for k in range(CSS_ROUNDS):
        assert not hs.done
        _round(hs, 30_000 + k * 10_000, [0.016] * 8)
    assert hs.done


def test_rtt_falling_back_leaves_css() -> None:
    hs = HyStart()
    _round(hs, 0, [0.010] * 8)
    _round(hs, 10_000, [0.020] * 8)
    assert hs.in_css
    _round(hs, 20_000, [0.012] * 8)  # below the CSS baseline: the increase was spurious
    assert not hs.in_css


def test_fewer_than_eight_samples_decide_nothing() -> None:
    hs = HyStart()
    _round(hs, 0, [0.010] * 8)
    _round(hs, 10_000, [0.050] * 7)
    assert not hs.in_css


def _queue_below(hystart: bool) -> Sim:
    """A sender whose round trip grows by 1 ms per segment beyond 20 in flight (a FIFO that never
    drops) and a 1 MiB send buffer: only the delay can end slow start."""
    box: dict[str, Sim] = {}
    last = [0.0]  # FIFO: nothing overtakes what is queued ahead of it

    def queued(d: int, seg: TcpSegment) -> float:
        sim = box["sim"]
        a = sim.a
        if d != 0 or a is None or not seg.payload:
            return 0.0
        extra = max(0, (a._snd_max - a._snd_una) // a._payload_max - 20) * 0.001
        due = max(sim.now + extra, last[0])
        last[0] = due
        return due - sim.now

    cfg = TcpConfig(hystart=hystart, send_buffer=1 << 20)  # off by default: see TcpConfig
    sim = Sim(cfg_a=cfg, cfg_b=TcpConfig(recv_buffer=1 << 20), link=LinkParams(delay=0.01, delay_fn=queued))
    box["sim"] = sim
    sim.run(Sim.established)
    xfer = Transfer(bytes(4 << 20), b"")
    sim.run(lambda s: len(xfer.got[1]) == 4 << 20, xfer)
    return sim


def test_a_growing_queue_ends_slow_start_without_a_loss() -> None:
    plain, hy = _queue_below(False), _queue_below(True)
    assert plain.a is not None and hy.a is not None
    assert plain.a.retransmitted_segments == hy.a.retransmitted_segments == 0
    assert plain.a._cc.ssthresh == INITIAL_SSTHRESH  # without HyStart++, slow start never ended
    assert hy.a._cc.ssthresh < INITIAL_SSTHRESH
    assert hy.a._cc.cwnd < plain.a._cc.cwnd / 4, (hy.a._cc.cwnd, plain.a._cc.cwnd)
