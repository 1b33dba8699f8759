"""RACK-TLP loss detection (RFC 8985): time-based loss marking and the tail loss probe timeout.

RACK marks a segment lost when a segment *sent after it* has been delivered (ACKed or SACKed)
and more than RACK.rtt + reo_wnd has passed since it was sent, instead of counting duplicate
ACKs. That detects lost retransmissions (which dupACK counting cannot) and tolerates reordering
up to the window. TLP (``probe_timeout``) sends one probe two SRTTs after the last send so a loss
at the tail of a flight is repaired by RACK instead of waiting for the RTO.

Send times are kept per *run* rather than per segment: every segment a connection emits in one
``poll`` shares one ``now``, and original transmissions go out in offset order, so a sorted list
of (first offset, time) runs gives any original segment's send time by bisection. Retransmitted
segments (rare) are kept individually. Offsets are the connection's unbounded stream offsets.
"""

from __future__ import annotations

import bisect
from typing import Protocol

REO_WND_PERSIST = 16  # RFC 8985 §6.2 step 4: recoveries a grown reo_wnd survives without DSACK
WC_DEL_ACK = 0.2  # §7.2 WCDelAckT: the worst-case delayed-ACK time when one segment is in flight
CLOCK_GRANULARITY = 0.001
MAX_RUNS = 4096  # bound on remembered send runs (a run is one poll's worth of new data)


class Sacked(Protocol):
    """What RACK needs from the SACK scoreboard."""

    def next_unsacked(self, pos: int) -> tuple[int, int | None]: ...


class Rack:
    """RACK state for one connection (RFC 8985 §6.1), all times in seconds."""

    __slots__ = (
        "_dsack_seen_at",
        "_rexmits",
        "_run_offs",
        "_run_ts",
        "dsacks",
        "end_seq",
        "fack",
        "min_rtt",
        "reo_wnd_mult",
        "reo_wnd_persist",
        "reordering_seen",
        "rtt",
        "to_resend",
        "xmit_ts",
    )

    def __init__(self) -> None:
        self._run_offs: list[int] = []  # first offset of each run of original transmissions
        self._run_ts: list[float] = []  # its send time (nondecreasing)
        self._rexmits: dict[int, tuple[int, float]] = {}  # start -> (end, last send time)
        self.xmit_ts = -1.0  # RACK.xmit_ts: send time of the most recently sent delivered segment
        self.end_seq = -1  # RACK.end_seq: its end
        self.rtt = 0.0  # RACK.rtt: RTT measured on that segment
        self.min_rtt: float | None = None
        self.fack = -1  # RACK.fack: highest end offset delivered so far
        self.reordering_seen = False
        self.reo_wnd_mult = 1
        self.reo_wnd_persist = 0
        self._dsack_seen_at = -1.0
        self.dsacks = 0  # D-SACKs (and Eifel-detected spurious recoveries) seen, for benchmarks
        self.to_resend: list[int] = []  # starts of retransmissions found lost again (the sender's queue)

    # -- sending

    def on_new_data(self, start: int, now: float) -> None:
        """Original transmission of the bytes from ``start`` (up to the next run) at ``now``."""
        if self._run_ts and self._run_ts[-1] == now and self._run_offs[-1] <= start:
            return  # same poll: the run already covers it
        if len(self._run_offs) >= MAX_RUNS:
            # Merge the two oldest runs: their bytes look sent at the later time (lost later, never early).
            del self._run_offs[1], self._run_ts[0]
        self._run_offs.append(start)
        self._run_ts.append(now)

    def on_retransmit(self, start: int, end: int, now: float) -> None:
        self._rexmits[start] = (end, now)

    def sent_at(self, offset: int) -> float | None:
        """Send time of the original transmission of ``offset`` (None if unknown)."""
        i = bisect.bisect_right(self._run_offs, offset) - 1
        return self._run_ts[i] if i >= 0 else None

    # -- acknowledgments

    def on_delivered(self, start: int, end: int, now: float) -> None:
        """Bytes [start, end) newly ACKed or SACKed: RFC 8985 §6.2 steps 1-2."""
        retransmitted = False
        if self._rexmits:
            for s in [s for s, (e, _) in self._rexmits.items() if start <= s < end]:
                e, ts = self._rexmits.pop(s)
                rtt = now - ts
                retransmitted = True
                # Ambiguous: the ACK may be for the original. Count it only when the RTT could not
                # be the original's (§6.2 step 2, the no-timestamp variant: a SACK's TSecr echoes
                # older data, RFC 7323 §4.3, so it cannot tell), within the clock's granularity.
                if self.min_rtt is not None and rtt + CLOCK_GRANULARITY < self.min_rtt:
                    continue
                self._update(ts, min(e, end), rtt)
        ts_orig = self.sent_at(end - 1)
        if ts_orig is not None and not retransmitted:
            self._update(ts_orig, end, now - ts_orig)
            if end < self.fack:
                self.reordering_seen = True  # §6.2 step 3: an original delivered below FACK
        if end > self.fack:
            self.fack = end

    def _update(self, ts: float, end: int, rtt: float) -> None:
        if self.min_rtt is None or rtt < self.min_rtt:
            self.min_rtt = rtt
        if ts > self.xmit_ts or (ts == self.xmit_ts and end > self.end_seq):
            self.xmit_ts = ts
            self.end_seq = end
            self.rtt = rtt

    def on_dsack(self, now: float, srtt: float) -> None:
        """A D-SACK (or an Eifel-detected spurious recovery) shows reordering: widen reo_wnd, at
        most once per round trip (§6.2 step 4)."""
        self.reordering_seen = True
        self.dsacks += 1
        if now - self._dsack_seen_at >= srtt:
            self._dsack_seen_at = now
            self.reo_wnd_mult += 1
            self.reo_wnd_persist = REO_WND_PERSIST

    def on_recovery_end(self) -> None:
        """§6.2 step 4: after REO_WND_PERSIST recoveries without D-SACK, shrink reo_wnd back."""
        if self.reo_wnd_persist > 0:
            self.reo_wnd_persist -= 1
            if self.reo_wnd_persist == 0:
                self.reo_wnd_mult = 1

    def forget_below(self, una: int) -> None:
        """Cumulatively acknowledged: drop runs and retransmissions wholly below ``una``."""
        offs = self._run_offs
        i = bisect.bisect_right(offs, una) - 1
        if i > 0:
            del offs[:i], self._run_ts[:i]
        if self._rexmits:
            for s in [s for s, (e, _) in self._rexmits.items() if e <= una]:
                del self._rexmits[s]

    def reset(self, una: int, now: float) -> None:
        """RTO: everything outstanding will be sent again from ``una`` as if new."""
        self._rexmits.clear()
        self.to_resend.clear()
        self._run_offs[:] = [una]
        self._run_ts[:] = [now]

    # -- loss detection

    def reo_wnd(self, in_recovery: bool, dupthresh_reached: bool, srtt: float) -> float:
        """§6.2 step 4: zero before any reordering was seen once loss is likely, else a quarter RTT
        times the multiplier, capped at 2*SRTT.

        The RFC caps at SRTT. Reordering can span a whole round trip, though (the data segment and
        its ACK each overtaking a 20 ms queue on the impaired-link rig), and a window that stops
        short of it turned half the recoveries there into spurious ones (measured: 236 recoveries,
        106 undone, against 98 and 6 with 2*SRTT); D-SACKs still have to earn the wider window.

        The RFC's quarter is of min_RTT; we take the larger of min_RTT and SRTT (§6.2 leaves the
        estimator open), because a path where some packets skip a queue (the reordering itself)
        shows a min_RTT near zero, and a window derived from it never grows past the reordering
        however many D-SACKs arrive.
        """
        if not self.reordering_seen and (in_recovery or dupthresh_reached):
            return 0.0
        base = max(self.min_rtt or 0.0, srtt)
        return min(base / 4 * self.reo_wnd_mult, 2 * srtt)

    def detect_loss(self, una: int, snd_max: int, sacked: Sacked, now: float,
                    reo_wnd: float) -> tuple[int, list[int], float | None]:
        """§6.2 step 5: (edge, lost_rexmits, timeout).

        Every unSACKed byte of an *original* transmission below ``edge`` is lost; ``lost_rexmits``
        are the starts of retransmissions lost again; ``timeout`` is how long until a segment sent
        before RACK.xmit_ts would be lost (the reordering timer), None when there is none.
        """
        edge = una
        timeout: float | None = None
        if self.xmit_ts < 0:
            return edge, [], None
        wait = self.rtt + reo_wnd
        xmit_ts, end_seq = self.xmit_ts, self.end_seq
        offs, tss = self._run_offs, self._run_ts
        i = max(bisect.bisect_right(offs, una) - 1, 0)
        n = len(offs)
        while i < n:
            ts = tss[i]
            run_end = offs[i + 1] if i + 1 < n else snd_max
            if ts > xmit_ts:
                break
            if ts == xmit_ts:
                run_end = min(run_end, end_seq)  # same send time: only what lies below RACK.end_seq
            remaining = ts + wait - now
            if remaining > 0:
                timeout = remaining
                break
            edge = max(edge, min(run_end, snd_max))
            i += 1
        lost: list[int] = []
        for s, (e, ts) in list(self._rexmits.items()):
            if e <= una or sacked.next_unsacked(s)[0] >= e:
                del self._rexmits[s]  # delivered (cumulatively or SACKed)
                continue
            if ts < xmit_ts or (ts == xmit_ts and e < end_seq):
                remaining = ts + wait - now
                if remaining <= 0:
                    lost.append(s)
                    del self._rexmits[s]
                elif timeout is None or remaining < timeout:
                    timeout = remaining
        return edge, lost, timeout


def probe_timeout(srtt: float | None, flight_segments: int, rto_remaining: float) -> float:
    """RFC 8985 §7.2: PTO = 2*SRTT (+ WCDelAckT with one segment in flight), never after the RTO."""
    if srtt is None:
        pto = 1.0
    else:
        pto = 2 * srtt
        if flight_segments <= 1:
            pto += WC_DEL_ACK
    return min(pto, rto_remaining)
