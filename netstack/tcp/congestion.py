"""NewReno congestion control (RFC 5681 slow start / congestion avoidance, RFC 6582 recovery).

Byte counting (RFC 3465) in both phases. The connection tells this object about
ACKs and losses; it answers with ``cwnd`` and whether it is in fast recovery.
"""

from __future__ import annotations

DUPACK_THRESHOLD = 3
INITIAL_SSTHRESH = 1 << 30  # "arbitrarily high" (RFC 5681 §3.1): slow start until a loss says otherwise


class NewReno:
    """cwnd/ssthresh bookkeeping for one connection (all quantities in bytes)."""

    __slots__ = ("_ca_acc", "cwnd", "in_recovery", "mss", "recover", "ssthresh")

    def __init__(self, mss: int) -> None:
        self.mss = mss
        # RFC 6928 IW10, as Linux: a lossy path spends fewer RTTs in slow start after each restart.
        self.cwnd = self.initial_window
        self.ssthresh = INITIAL_SSTHRESH
        self.in_recovery = False
        self.recover = 0  # stream offset of the highest byte sent when recovery began
        self._ca_acc = 0

    @property
    def initial_window(self) -> int:
        return min(10 * self.mss, max(2 * self.mss, 14600))

    def on_idle_restart(self) -> None:
        """RFC 5681 §4.1: after an idle period longer than the RTO, restart from the initial window."""
        self.cwnd = min(self.cwnd, self.initial_window)

    def on_ack(self, acked: int, flight_before: int, now: float = 0.0, rtt: float | None = None) -> None:
        """New data ``acked`` outside of recovery: grow cwnd (``now``/``rtt`` are for CUBIC)."""
        if self.cwnd < self.ssthresh:
            # Full byte counting: coalesced ACKs (a batching stack, GRO) must not slow slow start.
            self.cwnd = min(self.cwnd + acked, max(self.ssthresh, self.cwnd))
        else:
            self._ca_acc += acked
            if self._ca_acc >= self.cwnd:
                self._ca_acc -= self.cwnd
                self.cwnd += self.mss

    def enter_recovery(self, flight: int, snd_max: int) -> None:
        """Third duplicate ACK (or SACK evidence of loss): RFC 6582 §3.2 step 2."""
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh + DUPACK_THRESHOLD * self.mss
        self.in_recovery = True
        self.recover = snd_max

    def on_congestion_signal(self, flight: int, snd_max: int) -> None:
        """A congestion signal without a loss (ECN-CE, RFC 3168 §6.1.2; a long local queue, as Linux's
        tcp_enter_cwr on NET_XMIT_CN): reduce as for a loss, once per window, nothing to resend."""
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = min(self.cwnd, self.ssthresh)
        self.recover = snd_max
        self._ca_acc = 0

    def on_dupack_in_recovery(self) -> None:
        """Each further duplicate ACK inflates cwnd by one segment (step 3)."""
        self.cwnd += self.mss

    def on_partial_ack(self, acked: int) -> None:
        """Deflate by the amount acknowledged, add back one segment (step 5, partial ACK)."""
        self.cwnd = max(self.cwnd - acked + self.mss, self.mss)

    def on_full_ack(self, flight: int) -> None:
        """Recovery is over: deflate the window (step 5, full ACK, option 1)."""
        self.cwnd = max(min(self.ssthresh, flight + self.mss), self.mss)
        self.in_recovery = False

    def on_timeout(self, flight: int) -> None:
        """RTO expiry: RFC 5681 §3.1 equation 4, cwnd to one loss window."""
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss
        self.in_recovery = False
        self._ca_acc = 0

    def on_undo(self) -> None:
        """A recovery turned out spurious and the caller restored cwnd/ssthresh: nothing else to undo."""
