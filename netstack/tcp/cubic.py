"""CUBIC congestion control (RFC 9438), the default as in Linux and gVisor.

Loss recovery itself (fast retransmit, SACK pipe, partial ACKs) is the connection's and
NewReno's; CUBIC changes how the window grows in congestion avoidance and how far it drops on a
loss. Windows are kept in bytes like ``NewReno``; the cubic function works in segments (the
RFC's unit, where C = 0.4 was tuned) and seconds.
"""

from __future__ import annotations

from pytsnet.netstack.tcp.congestion import DUPACK_THRESHOLD, NewReno

C = 0.4  # RFC 9438 §5: the cubic's scaling constant, segments / s^3
BETA = 0.7  # §4.6: multiplicative decrease factor
ALPHA_RENO = 3 * (1 - BETA) / (1 + BETA)  # §4.3: AIMD increase that matches Reno's average rate


class Cubic(NewReno):
    """cwnd/ssthresh per RFC 9438: W_cubic(t) = C*(t-K)^3 + W_max, with the Reno-friendly floor.

    Callers pass ``now`` and the smoothed RTT to ``on_ack``; NewReno ignores both.
    """

    __slots__ = ("_cwnd_prev", "_epoch", "_k", "_w_est", "_w_max", "_w_max_prev")

    def __init__(self, mss: int) -> None:
        super().__init__(mss)
        self._epoch: float | None = None  # t=0 of the current congestion-avoidance epoch
        self._k = 0.0
        self._w_max = 0.0  # segments, the window just before the last reduction
        self._w_max_prev = 0.0
        self._w_est = 0.0  # segments, the Reno-friendly estimate (§4.3)
        self._cwnd_prev = 0  # bytes, cwnd before the last reduction (spurious undo restores it)

    @property
    def w_max(self) -> float:
        return self._w_max

    @property
    def k(self) -> float:
        return self._k

    def w_cubic(self, t: float) -> float:
        """Eq. 1, in segments, ``t`` seconds into the epoch."""
        return C * (t - self._k) ** 3 + self._w_max

    def _start_epoch(self, now: float) -> None:
        """§4.2: t=0 when congestion avoidance starts; K from the window we start it at."""
        self._epoch = now
        cwnd_seg = self.cwnd / self.mss
        if self._w_max <= cwnd_seg:
            # No reduction to recover from (slow start ended by ssthresh, or after an undo).
            self._w_max = cwnd_seg
            self._k = 0.0
        else:
            self._k = ((self._w_max - cwnd_seg) / C) ** (1 / 3)  # eq. 2
        self._w_est = cwnd_seg

    def on_ack(self, acked: int, flight_before: int, now: float = 0.0, rtt: float | None = None) -> None:
        if self.cwnd < self.ssthresh:
            super().on_ack(acked, flight_before)  # slow start, byte counting
            return
        if self._epoch is None:
            self._start_epoch(now)
        mss = self.mss
        cwnd_seg = self.cwnd / mss
        acked_seg = acked / mss
        # §4.3 Reno-friendly region: W_est grows by alpha per window's worth of ACKs, and by 1
        # once it has passed W_max (the competing Reno flow would have recovered by then).
        alpha = ALPHA_RENO if self._w_est < self._w_max else 1.0
        self._w_est += alpha * acked_seg / cwnd_seg
        t = now - self._epoch  # type: ignore[operator]
        target = self.w_cubic(t + (rtt if rtt is not None else 0.0))  # §4.2: W_cubic(t + RTT)
        # §4.4/§4.5: the target is clamped to [cwnd, 1.5 cwnd]; cwnd grows (target-cwnd)/cwnd per segment.
        target = min(max(target, cwnd_seg), 1.5 * cwnd_seg)
        if self._w_est > target:
            new_seg = self._w_est  # Reno-friendly region: never slower than Reno
        else:
            new_seg = cwnd_seg + (target - cwnd_seg) * acked_seg / cwnd_seg
        new = int(new_seg * mss)
        if new > self.cwnd:
            self.cwnd = new

    def _reduce(self, flight: int) -> int:
        """§4.6/§4.7: remember W_max (with fast convergence), return the new ssthresh in bytes."""
        mss = self.mss
        cwnd_seg = self.cwnd / mss
        self._cwnd_prev = self.cwnd
        self._w_max_prev = self._w_max
        if cwnd_seg < self._w_max:
            self._w_max = cwnd_seg * (1 + BETA) / 2  # fast convergence: release bandwidth
        else:
            self._w_max = cwnd_seg
        self._epoch = None
        # §4.6 says flight_size * beta, Linux cwnd * beta; we take the larger. Under reordering the
        # flight (SACKed data included) exceeds cwnd, and cwnd alone cut the window twice (tcp_sim,
        # 2% loss + netem-style reordering: 1.8 Mbit/s with cwnd, 5.6 with flight, 8.9 with the
        # larger); with the window not full, the flight alone cut deeper than Linux does (2% random
        # loss: 1.7 with flight, 2.9 with cwnd, 2.8-3.4 with the larger).
        return max(round(max(flight, self.cwnd) * BETA), 2 * mss)

    def enter_recovery(self, flight: int, snd_max: int) -> None:
        self.ssthresh = self._reduce(flight)
        self.cwnd = self.ssthresh + DUPACK_THRESHOLD * self.mss
        self.in_recovery = True
        self.recover = snd_max

    def on_congestion_signal(self, flight: int, snd_max: int) -> None:
        self.ssthresh = self._reduce(flight)
        self.cwnd = min(self.cwnd, self.ssthresh)
        self.recover = snd_max

    def on_full_ack(self, flight: int) -> None:
        super().on_full_ack(flight)
        self._epoch = None  # the next ACK starts the epoch at the reduced window

    def on_timeout(self, flight: int) -> None:
        """§4.8: ssthresh as for a loss, cwnd to one segment, and a fresh epoch after slow start."""
        ssthresh = self._reduce(flight)
        super().on_timeout(flight)
        self.ssthresh = ssthresh

    def on_undo(self) -> None:
        """A recovery was spurious (RFC 9438 §4.9): restore W_max as it was before it."""
        self._w_max = self._w_max_prev
        self._epoch = None

    def on_idle_restart(self) -> None:
        super().on_idle_restart()
        self._epoch = None
