"""HyStart++ (RFC 9406): leave slow start when the round trip starts to grow, not at the first loss.

Slow start doubles cwnd every round trip until a loss. When the queue that fills is not one that
drops (a deep FIFO below the sender: bench/flows.py's 1,000 flows into one TUN writer queue ~60,000
packets), no loss comes: every flow doubles until its send buffer stops it, the queue grows to tens
of seconds, and whoever grew first keeps the larger window. HyStart++ watches each round's minimum
RTT: once it exceeds the previous round's by an eighth (4-16 ms), the queue is building, and slow
start gives way to Conservative Slow Start (a quarter of the growth), then to congestion avoidance,
unless the RTT falls back (a false alarm: back to slow start).

Sans-IO: the connection feeds RTT samples and the acknowledged offset; this object answers how
much of an ACK's bytes slow start may grow cwnd by, and when slow start is over.
"""

from __future__ import annotations

MIN_RTT_THRESH = 0.004  # §4.3, seconds
MAX_RTT_THRESH = 0.016
MIN_RTT_DIVISOR = 8
N_RTT_SAMPLE = 8
CSS_GROWTH_DIVISOR = 4
CSS_ROUNDS = 5

INF = float("inf")


class HyStart:
    """Round tracking and the delay-increase test of RFC 9406 §4.2 for one connection."""

    __slots__ = ("css_baseline", "css_rounds", "current_min", "done", "in_css", "last_min", "samples",
                 "window_end")

    def __init__(self) -> None:
        self.window_end = -1  # the round ends when an ACK covers this offset (SND.NXT at its start)
        self.last_min = INF
        self.current_min = INF
        self.samples = 0
        self.in_css = False
        self.css_baseline = INF
        self.css_rounds = 0
        self.done = False  # slow start is over: congestion avoidance from here

    def on_ack(self, ack_off: int, snd_nxt: int) -> None:
        """A new cumulative ACK: start a new round once the last one is acknowledged (§4.2)."""
        if ack_off < self.window_end:
            return
        self.window_end = snd_nxt
        self.last_min = self.current_min
        self.current_min = INF
        self.samples = 0
        if self.in_css:
            self.css_rounds += 1
            if self.css_rounds >= CSS_ROUNDS:
                self.done = True

    def on_rtt(self, rtt: float) -> None:
        """One RTT sample during slow start or CSS."""
        if rtt < self.current_min:
            self.current_min = rtt
        self.samples += 1
        if self.samples < N_RTT_SAMPLE or self.current_min == INF or self.last_min == INF:
            return
        if self.in_css:
            if self.current_min < self.css_baseline:  # §4.2: the delay increase was spurious
                self.in_css = False
                self.css_baseline = INF
                self.css_rounds = 0
            return
        thresh = max(MIN_RTT_THRESH, min(self.last_min / MIN_RTT_DIVISOR, MAX_RTT_THRESH))
        if self.current_min >= self.last_min + thresh:
            self.in_css = True
            self.css_baseline = self.current_min
            self.css_rounds = 0

    def growth(self, acked: int) -> int:
        """Bytes of ``acked`` slow start may add to cwnd: all of them, a quarter in CSS."""
        return acked // CSS_GROWTH_DIVISOR if self.in_css else acked

    def restart(self) -> None:
        """A loss or timeout ended slow start the classic way; a later slow start begins afresh."""
        self.__init__()  # type: ignore[misc]
