"""CUBIC (RFC 9438): the window function, the multiplicative decrease, the Reno-friendly region."""

import pytest
from tcp_sim import A, B

from pytsnet.netstack.config import StackConfig
from pytsnet.netstack.tcp.congestion import NewReno
from pytsnet.netstack.tcp.connection import TcpConfig, TcpConnection
from pytsnet.netstack.tcp.cubic import ALPHA_RENO, BETA, C, Cubic

MSS = 1000


def _in_avoidance(w_segments: int) -> Cubic:
    """A sender in congestion avoidance at ``w_segments`` (ssthresh below cwnd)."""
    cc = Cubic(MSS)
    cc.cwnd = w_segments * MSS
    cc.ssthresh = 2 * MSS
    return cc


def _loss_and_recover(cc: Cubic) -> None:
    cc.enter_recovery(cc.cwnd, 10**9)
    cc.on_full_ack(10**9)  # flight large: cwnd deflates to ssthresh


def _ack_rounds(cc: Cubic, start: float, rtt: float, rounds: int) -> float:
    """ACK one window per RTT, one segment per ACK; return the time reached."""
    t = start
    for _ in range(rounds):
        n = cc.cwnd // MSS
        for _ in range(n):
            cc.on_ack(MSS, cc.cwnd, t, rtt)
        t += rtt
    return t


def test_constants_are_the_rfcs() -> None:
    assert (C, BETA) == (0.4, 0.7)
    assert pytest.approx(3 * 0.3 / 1.7) == ALPHA_RENO


def test_loss_sets_w_max_ssthresh_and_k() -> None:
    cc = _in_avoidance(100)
    _loss_and_recover(cc)
    assert cc.w_max == 100
    assert cc.ssthresh == 70 * MSS and cc.cwnd == 70 * MSS  # beta_cubic = 0.7, not Reno's 0.5
    cc.on_ack(MSS, cc.cwnd, 10.0, 0.1)  # the first ACK in avoidance starts the epoch
    assert cc.k == pytest.approx((100 * (1 - BETA) / C) ** (1 / 3))  # eq. 2: cbrt(W_max*(1-beta)/C)
    assert cc.w_cubic(cc.k) == pytest.approx(100)


def test_window_follows_the_cubic_curve_concave_then_convex() -> None:
    cc = _in_avoidance(200)  # a large window at a long RTT: the cubic region, not the Reno-friendly one
    _loss_and_recover(cc)
    rtt = 0.1
    k = (200 * (1 - BETA) / C) ** (1 / 3)  # ~5.3 s
    t = _ack_rounds(cc, 0.0, rtt, int(k / 2 / rtt))
    half = cc.cwnd / MSS
    assert half == pytest.approx(cc.w_cubic(t), rel=0.05)
    t = _ack_rounds(cc, t, rtt, int(k / 2 / rtt))
    plateau = cc.cwnd / MSS
    assert plateau == pytest.approx(200, rel=0.05)  # W(K) = W_max: the plateau at the old window
    # Concave: the second half of the approach to W_max grew less than the first.
    assert plateau - half < half - 140
    t = _ack_rounds(cc, t, rtt, int(k / rtt))
    assert cc.cwnd / MSS == pytest.approx(cc.w_cubic(t), rel=0.05)  # convex probing beyond W_max
    assert cc.cwnd / MSS > 230


def test_reno_friendly_region_on_a_short_rtt() -> None:
    """With a small window and a 10 ms RTT the cubic curve is slower than Reno: W_est governs."""
    cc = _in_avoidance(10)
    _loss_and_recover(cc)
    rtt = 0.01
    t = _ack_rounds(cc, 0.0, rtt, 50)
    w = cc.cwnd / MSS
    assert w > cc.w_cubic(t) + 10
    # W_est: +alpha per RTT up to W_max (10), then +1 per RTT (§4.3).
    rounds_to_w_max = (10 - 7) / ALPHA_RENO
    assert w == pytest.approx(10 + (50 - rounds_to_w_max), rel=0.15)


def test_fast_convergence_and_timeout() -> None:
    cc = _in_avoidance(100)
    _loss_and_recover(cc)
    cc.cwnd = 90 * MSS  # lost again before regaining W_max: release bandwidth (§4.7)
    _loss_and_recover(cc)
    assert cc.w_max == pytest.approx(90 * (1 + BETA) / 2)
    assert cc.ssthresh == 63 * MSS
    cc.cwnd = 50 * MSS
    cc.on_timeout(50 * MSS)  # §4.8: ssthresh as for a loss, cwnd to one segment
    assert cc.cwnd == MSS and cc.ssthresh == 35 * MSS and not cc.in_recovery


def test_undo_restores_w_max() -> None:
    cc = _in_avoidance(100)
    _loss_and_recover(cc)
    cc.cwnd = 80 * MSS
    cc.enter_recovery(cc.cwnd, 10**9)
    assert cc.w_max == pytest.approx(80 * 1.7 / 2)
    cc.on_undo()
    assert cc.w_max == 100


def test_cubic_is_the_default_and_newreno_selectable() -> None:
    assert type(TcpConnection.connect(A, B, 1, 0.0)._cc) is Cubic
    assert type(TcpConnection.connect(A, B, 1, 0.0, TcpConfig(congestion_control="newreno"))._cc) is NewReno
    with pytest.raises(ValueError):
        TcpConfig(congestion_control="vegas")
    assert StackConfig().congestion_control == "cubic"
    with pytest.raises(ValueError):
        StackConfig(congestion_control="bbr")


def test_ssthresh_from_the_larger_of_flight_and_cwnd() -> None:
    """RFC 9438 §4.6 takes flight_size, Linux cwnd: SACKed data under reordering makes the flight
    the larger, a window not full makes cwnd the larger; the cut is from whichever is larger."""
    cc = _in_avoidance(10)
    cc.enter_recovery(20 * MSS, 10**9)
    assert cc.ssthresh == 14 * MSS
    cc = _in_avoidance(10)
    cc.enter_recovery(5 * MSS, 10**9)
    assert cc.ssthresh == 7 * MSS
