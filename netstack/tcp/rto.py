"""Retransmission timeout computation (RFC 6298) with exponential backoff.

Karn's rule is the caller's job: it only feeds samples from segments that were not retransmitted
(or, with timestamps, from TSecr echoes, which RFC 7323 §4 makes unambiguous).
"""

from __future__ import annotations

K = 4
ALPHA = 1 / 8
BETA = 1 / 4
CLOCK_GRANULARITY = 0.001  # G in RFC 6298 §2; our timestamps tick in milliseconds


class RttEstimator:
    """SRTT/RTTVAR state and the current (possibly backed-off) RTO in seconds."""

    __slots__ = ("_backoff", "_base", "rto_max", "rto_min", "rttvar", "srtt")

    def __init__(self, initial: float, rto_min: float, rto_max: float) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto_min = rto_min
        self.rto_max = rto_max
        self._base = min(max(initial, rto_min), rto_max)
        self._backoff = 0

    @property
    def rto(self) -> float:
        """The timeout to arm now: the base RTO doubled once per unanswered expiry, capped (§5.5)."""
        return min(self._base * (1 << self._backoff), self.rto_max)

    @property
    def backoff_count(self) -> int:
        return self._backoff

    def sample(self, r: float) -> None:
        """Fold in one RTT measurement R (§2.2, §2.3); also clears the backoff (§5.7 note)."""
        r = max(r, 0.0)
        if self.srtt is None:
            self.srtt = r
            self.rttvar = r / 2
        else:
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - r)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * r
        self._base = min(max(self.srtt + max(CLOCK_GRANULARITY, K * self.rttvar), self.rto_min), self.rto_max)
        self._backoff = 0

    def back_off(self) -> None:
        """The retransmission timer expired: double the RTO (§5.5)."""
        if self._base * (1 << self._backoff) < self.rto_max:
            self._backoff += 1

    def after_handshake_timeout(self) -> None:
        """§5.7: the SYN (or SYN-ACK) timed out and no RTT was measured, so when data transmission
        begins the RTO is re-initialized to 3 s — not left at the handshake's backed-off value (a
        lost first segment after the handshake would otherwise wait 4 s or more, past the peer's
        SYN-RECEIVED lifetime) nor returned to 1 s (the path already lost a segment)."""
        if self.srtt is None:
            self._base = min(max(3.0, self.rto_min), self.rto_max)
            self._backoff = 0

    def reset_backoff(self) -> None:
        """New data was acknowledged, so the path is alive again."""
        self._backoff = 0
