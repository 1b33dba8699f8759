"""One netcheck report (Go ``net/netcheck``), STUN only: probe each region, measure, pick the home.

``Netcheck.start(now)`` returns the STUN requests to send; feed responses with ``on_response``; call
``handle_timeout`` at ``next_deadline()`` (unanswered probes are retransmitted with fresh TxIDs); the
report is done when every region answered or ``REPORT_TIMEOUT`` passed. ``preferred_derp`` applies Go's
home-region stickiness.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pytsnet.wire import stun
from pytsnet.wire.disco import AddrPort

REPORT_TIMEOUT = 5.0
STUN_PROBE_TIMEOUT = 3.0
DEFAULT_INITIAL_RETRANSMIT_TIME = 0.1
DEFAULT_ACTIVE_RETRANSMIT_TIME = 0.2
PREFERRED_DERP_ABSOLUTE_DIFF = 0.010
MAX_PROBES_PER_REGION = 3


@dataclass(frozen=True, slots=True)
class StunSend:
    """Send ``data`` (a Binding request) to ``dst`` from the magicsock UDP socket."""

    dst: AddrPort
    data: bytes


@dataclass(frozen=True, slots=True)
class Report:
    udp: bool
    global_v4: AddrPort | None
    global_v6: AddrPort | None
    region_latency: dict[int, float]
    preferred_derp: int
    mapping_varies_by_dest_ip: bool | None
    derp_latency: dict[str, float] = field(default_factory=dict)
    """Each region's latency by the family it was probed over, keyed as Go's ``NetInfo.DERPLatency``
    (``"<region>-v4"``, ``"<region>-v6"``; seconds)."""


def preferred_derp(latency: Mapping[int, float], prev: int = 0,
                   score: Mapping[int, float] | None = None) -> int:
    """The fastest region (latency times ``score``); keep ``prev`` unless the new one is clearly better."""
    if not latency:
        return prev
    def scaled(r: int) -> float:
        return latency[r] * (score.get(r, 1.0) if score else 1.0)
    best = min(sorted(latency), key=scaled)
    if prev and best != prev and prev in latency:
        old, new = scaled(prev), scaled(best)
        if new > old / 3 * 2 or old - new < PREFERRED_DERP_ABSOLUTE_DIFF:
            return prev
    return best


@dataclass(slots=True)
class _Probe:
    region: int
    dst: AddrPort
    sent_at: float


@dataclass(slots=True)
class Netcheck:
    """STUN servers per region: ``{region_id: [(ip, port), ...]}`` (nodes in priority order)."""

    servers: Mapping[int, list[AddrPort]]
    prev_home: int = 0
    retransmit: float = DEFAULT_INITIAL_RETRANSMIT_TIME
    tx_id: Callable[[], bytes] = stun.new_tx_id
    started: float | None = None
    done: bool = False
    latency: dict[int, float] = field(default_factory=dict)
    global_addrs: dict[AddrPort, AddrPort] = field(default_factory=dict)  # server → our mapped address
    _inflight: dict[bytes, _Probe] = field(default_factory=dict)
    _attempts: dict[int, int] = field(default_factory=dict)
    _next_retransmit: float | None = None

    def start(self, now: float) -> list[StunSend]:
        self.started = now
        out = []
        for region in sorted(self.servers):
            out.extend(self._probe(region, now))
        self._next_retransmit = now + self.retransmit
        if not out:
            self.done = True
        return out

    def _probe(self, region: int, now: float) -> list[StunSend]:
        nodes = self.servers[region]
        if not nodes:
            return []
        n = self._attempts.get(region, 0)
        self._attempts[region] = n + 1
        dst = nodes[n % len(nodes)]
        tx = self.tx_id()
        self._inflight[tx] = _Probe(region, dst, now)
        return [StunSend(dst, stun.request(tx))]

    def on_response(self, now: float, data: bytes) -> bool:
        """A STUN packet from the socket; True if it answered one of our probes (else not ours)."""
        try:
            tx, mapped = stun.parse_response(data)
        except stun.StunParseError:
            return False
        probe = self._inflight.pop(tx, None)
        if probe is None:
            return False
        rtt = max(0.0, now - probe.sent_at)
        if probe.region not in self.latency or rtt < self.latency[probe.region]:
            self.latency[probe.region] = rtt
        self.global_addrs[probe.dst] = mapped
        if all(r in self.latency for r in self.servers if self.servers[r]):
            self.done = True
        return True

    def next_deadline(self) -> float | None:
        if self.done or self.started is None:
            return None
        deadline = self.started + REPORT_TIMEOUT
        if self._next_retransmit is not None:
            deadline = min(deadline, self._next_retransmit)
        return deadline

    def handle_timeout(self, now: float) -> list[StunSend]:
        """Retransmit to regions without an answer; finish at the report timeout."""
        if self.done or self.started is None:
            return []
        if now >= self.started + REPORT_TIMEOUT:
            self.done = True
            self._inflight.clear()
            return []
        out: list[StunSend] = []
        if self._next_retransmit is not None and now >= self._next_retransmit:
            for region in sorted(self.servers):
                if region not in self.latency and self._attempts.get(region, 0) < MAX_PROBES_PER_REGION:
                    out.extend(self._probe(region, now))
            self._next_retransmit = now + DEFAULT_ACTIVE_RETRANSMIT_TIME if out else None
        return out

    def report(self) -> Report:
        v4 = [a for a in self.global_addrs.values() if a[0].version == 4]
        v6 = [a for a in self.global_addrs.values() if a[0].version == 6]
        varies = len(set(v4)) > 1 if len(v4) > 1 else None
        return Report(
            udp=bool(self.latency),
            global_v4=v4[0] if v4 else None,
            global_v6=v6[0] if v6 else None,
            region_latency=dict(self.latency),
            preferred_derp=preferred_derp(self.latency, self.prev_home),
            mapping_varies_by_dest_ip=varies,
            derp_latency={f"{r}-v{self.servers[r][0][0].version}": rtt for r, rtt in self.latency.items()},
        )
