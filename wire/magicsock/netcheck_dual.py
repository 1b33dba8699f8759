"""A dual-stack netcheck report: IPv4 and IPv6 STUN probed side by side (Go ``netcheck``'s v4 and v6
probes of each region), merged into one ``Report``.

``Netcheck`` finishes a region at its first answer, so one instance over both families would never
learn our IPv6 address when IPv4 answers first. ``DualNetcheck`` runs one ``Netcheck`` per family
with the same interface; the report takes ``global_v4`` from the IPv4 run, ``global_v6`` from the
IPv6 run, each region's best latency of the two, and the home from those latencies. Sans-IO.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pytsnet.wire import stun
from pytsnet.wire.disco import AddrPort
from pytsnet.wire.magicsock.netcheck import Netcheck, Report, StunSend, preferred_derp

__all__ = ["DualNetcheck", "netcheck_for"]


class DualNetcheck:
    """Two ``Netcheck`` runs (IPv4 servers, IPv6 servers), done when both are."""

    def __init__(self, v4: Mapping[int, list[AddrPort]], v6: Mapping[int, list[AddrPort]], *,
                 prev_home: int = 0, tx_id: Callable[[], bytes] = stun.new_tx_id) -> None:
        self.prev_home = prev_home
        self.v4 = Netcheck(v4, prev_home=prev_home, tx_id=tx_id)
        self.v6 = Netcheck(v6, prev_home=prev_home, tx_id=tx_id)

    @property
    def done(self) -> bool:
        return self.v4.done and self.v6.done

    def start(self, now: float) -> list[StunSend]:
        return self.v4.start(now) + self.v6.start(now)

    def on_response(self, now: float, data: bytes) -> bool:
        """True if the STUN answer is one of either run's probes (TxIDs are unique across both)."""
        return self.v4.on_response(now, data) or self.v6.on_response(now, data)

    def next_deadline(self) -> float | None:
        ds = [d for d in (self.v4.next_deadline(), self.v6.next_deadline()) if d is not None]
        return min(ds) if ds else None

    def handle_timeout(self, now: float) -> list[StunSend]:
        out: list[StunSend] = []
        for run in (self.v4, self.v6):
            d = run.next_deadline()
            if d is not None and now >= d:
                out.extend(run.handle_timeout(now))
        return out

    def report(self) -> Report:
        r4, r6 = self.v4.report(), self.v6.report()
        latency = dict(r6.region_latency)
        for region, rtt in r4.region_latency.items():
            latency[region] = min(rtt, latency.get(region, rtt))
        return Report(udp=r4.udp or r6.udp, global_v4=r4.global_v4, global_v6=r6.global_v6,
                      region_latency=latency, preferred_derp=preferred_derp(latency, self.prev_home),
                      mapping_varies_by_dest_ip=r4.mapping_varies_by_dest_ip,
                      derp_latency=r4.derp_latency | r6.derp_latency)


def netcheck_for(v4: Mapping[int, list[AddrPort]], v6: Mapping[int, list[AddrPort]], *, prev_home: int = 0,
                 tx_id: Callable[[], bytes] = stun.new_tx_id) -> Netcheck | DualNetcheck:
    """A plain ``Netcheck`` when there are no IPv6 servers (IPv6 off: exactly the IPv4-only run)."""
    if not any(v6.values()):
        return Netcheck(v4, prev_home=prev_home, tx_id=tx_id)
    return DualNetcheck(v4, v6, prev_home=prev_home, tx_id=tx_id)
