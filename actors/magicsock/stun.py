"""StunProber: runs netcheck reports through the shared UDP socket and publishes endpoints and home.

Re-probes every random 20-26 s (Go magicsock). Endpoints = STUN-mapped addresses, the bound address
when it is specific, and configured extras; none at all when ``advertise_endpoints`` is off. The report
goes to the DiscoPinger (for CallMeMaybe) and to the control runner when one is configured.
"""

from __future__ import annotations

import ipaddress
import random

from pytsnet.actors.magicsock.config import MagicsockConfig
from pytsnet.actors.runtime import Actor, TimerHandle, handles
from pytsnet.messages.magicsock import (
    LocalEndpoints,
    NetcheckReport,
    ResendPaths,
    StunIn,
    StunStatus,
    StunStatusRequest,
    StunTick,
    UdpSend,
)
from pytsnet.wire.magicsock.addr import AddrParseError, format_addr, parse_addr
from pytsnet.wire.magicsock.netcheck import Netcheck, Report

TICK = 0.05


class StunProber(Actor):
    def __init__(self, config: MagicsockConfig) -> None:
        self.config = config
        self.check: Netcheck | None = None
        self.last: Report | None = None
        self.home = config.home_region
        self.endpoints: tuple[str, ...] = ()
        self.next_report = 0.0
        self._tick: TimerHandle | None = None
        self.dropped_unsolicited = 0  # STUN-looking datagrams that answer none of our probes

    def on_start(self) -> None:
        self._tick = self.send_interval(TICK, StunTick())
        self.next_report = self.clock.monotonic()

    def _servers(self) -> dict[int, list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]]:
        out = {}
        for r in self.config.regions:
            if r.stun_port < 0:
                continue
            try:
                ip = ipaddress.ip_address(r.host)
            except ValueError:
                continue  # this port does not resolve names for STUN
            out[r.region_id] = [(ip, r.stun_port or 3478)]
        return out

    @handles(StunTick)
    def tick(self, msg: StunTick) -> None:
        now = self.clock.monotonic()
        if self.check is None:
            if now >= self.next_report:
                self.check = Netcheck(self._servers(), prev_home=self.home)
                self._send(self.check.start(now))
                self._maybe_done()
            return
        d = self.check.next_deadline()
        if d is not None and now >= d:
            self._send(self.check.handle_timeout(now))
        self._maybe_done()

    @handles(StunStatusRequest)
    def status(self, msg: StunStatusRequest) -> StunStatus:
        return StunStatus(dropped_unsolicited=self.dropped_unsolicited)

    @handles(StunIn)
    def stun_in(self, msg: StunIn) -> None:
        if self.check is not None and self.check.on_response(self.clock.monotonic(), msg.data):
            self._maybe_done()
        else:
            self.dropped_unsolicited += 1

    def _send(self, sends: list) -> None:  # type: ignore[type-arg]
        udp = self.lookup(self.config.name("udp"))
        if udp is None:
            return
        for s in sends:
            udp.tell(UdpSend(dst=format_addr(s.dst), data=s.data))

    def _maybe_done(self) -> None:
        if self.check is None or not self.check.done:
            return
        report = self.check.report()
        self.check = None
        self.last = report
        lo, hi = self.config.stun_interval
        self.next_report = self.clock.monotonic() + random.uniform(lo, hi)
        if not self.config.home_fixed and report.preferred_derp:
            # the DerpClients read the shared config on their tick: the new home connects, the old
            # one clears NotePreferred and closes once idle
            self.home = self.config.home_region = report.preferred_derp
        self.endpoints = self._endpoints(report)
        self._publish()

    def _endpoints(self, report: Report) -> tuple[str, ...]:
        if not self.config.advertise_endpoints:
            return ()
        eps: list[str] = []
        if report.global_v4 is not None:
            eps.append(format_addr(report.global_v4))
        if report.global_v6 is not None:
            eps.append(format_addr(report.global_v6))
        host = self.config.bind_host
        try:
            ip = ipaddress.ip_address(host)
            if not ip.is_unspecified:
                eps.append(format_addr((ip, self.config.bound_port)))
        except ValueError:
            pass
        for e in self.config.extra_endpoints:
            try:
                eps.append(format_addr(parse_addr(e)))
            except AddrParseError:
                continue
        return tuple(dict.fromkeys(eps))

    def _publish(self) -> None:
        msg = LocalEndpoints(endpoints=self.endpoints)
        for name in (self.config.name("disco"), self.config.control):
            ref = self.lookup(name) if name else None
            if ref is not None:
                ref.tell(msg)
        if self.config.control and self.last is not None:
            ref = self.lookup(self.config.control)
            if ref is not None:
                ref.tell(NetcheckReport(
                    udp=self.last.udp, preferred_derp=self.home, region_latency=self.last.region_latency,
                    global_v4=format_addr(self.last.global_v4) if self.last.global_v4 else None))

    @handles(ResendPaths)
    def resend(self, msg: ResendPaths) -> None:
        """A restarted DiscoPinger wants our endpoints again (or now, if no report finished yet)."""
        if self.last is not None:
            self._publish()
        else:
            self.next_report = self.clock.monotonic()
