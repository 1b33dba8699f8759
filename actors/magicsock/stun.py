"""StunProber: runs netcheck reports through the shared UDP socket and publishes endpoints and home.

Re-probes every random 20-26 s (Go magicsock). Endpoints = STUN-mapped addresses, the bound address
when it is specific, and configured extras; none at all when ``advertise_endpoints`` is off. The report
goes to the DiscoPinger (for CallMeMaybe) and to the control runner when one is configured.

The home DERP region is this actor's alone: a change is told (``HomeRegion``) to every DerpClient and to
the control side, and to the keeper, so a restart keeps it. Its randomness (STUN transaction IDs, the
re-probe jitter) comes from a seed it tells itself at start (``StunSeed``): the seed is in its recorded
inbox, so ``trace replay`` draws the same IDs and reproduces its replies.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os

from pytsnet.actors.keeper import recall, remember
from pytsnet.actors.magicsock.localaddr import local_ipv4  # 24a
from pytsnet.actors.magicsock.udp_families import udp_families  # 24d
from pytsnet.actors.runtime import Actor, TimerHandle, handles
from pytsnet.messages.magicsock import (
    HomeRegion,
    LocalEndpoints,
    MagicsockResend,
    MagicsockSpawn,
    NetcheckReport,
    ResendPaths,
    StunIn,
    StunSeed,
    StunStatus,
    StunStatusRequest,
    StunTick,
    UdpBound,
    UdpSend,
)
from pytsnet.messages.portmap import PortmapEndpoint
from pytsnet.wire.magicsock.addr import AddrParseError, format_addr, parse_addr
from pytsnet.wire.magicsock.netcheck import Netcheck, Report
from pytsnet.wire.magicsock.netcheck_dual import DualNetcheck, netcheck_for  # 24d

TICK = 0.05


class StunProber(Actor):
    def __init__(self, config: MagicsockSpawn) -> None:
        self.config = config
        self.check: Netcheck | DualNetcheck | None = None
        self.last: Report | None = None
        self.home = config.home_region
        self.bound_port = 0  # the UDP router's (UdpBound)
        self._seed: bytes | None = None
        self._draws = 0
        self.endpoints: tuple[str, ...] = ()
        self.next_report = 0.0
        self._tick: TimerHandle | None = None
        self.dropped_unsolicited = 0  # STUN-looking datagrams that answer none of our probes
        self.portmapped: str | None = None  # the gateway's mapping of our port (PortMapper)
        self.portmap_offer: dict[str, bool] = {}  # which mapping protocols the gateway took (PortMapper)

    def on_start(self) -> None:
        before = recall(self, self.config.memory)
        if isinstance(before, HomeRegion):
            self.home = before.region  # netcheck moved it before the restart
        self.ref.tell(StunSeed(seed=os.urandom(32)))
        self.tell_named(self.config.name("udp"), MagicsockResend(reply_to=self.name))  # the bound port
        now = self.clock.monotonic()
        self.next_report = now
        self._tick = self.send_after(TICK, StunTick(at=now + TICK))

    @handles(StunSeed)
    def on_seed(self, msg: StunSeed) -> None:
        self._seed, self._draws = msg.seed, 0

    def _draw(self, n: int) -> bytes:
        """``n`` bytes from the seed (BLAKE2b keyed by it, over a counter); os.urandom before it came."""
        if self._seed is None:
            return os.urandom(n)
        self._draws += 1
        return hashlib.blake2b(self._draws.to_bytes(8, "big"), key=self._seed[:64], digest_size=n).digest()

    def _tx_id(self) -> bytes:
        return self._draw(12)

    def _uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * int.from_bytes(self._draw(8), "big") / 2**64

    @handles(UdpBound)
    def on_bound(self, msg: UdpBound) -> None:
        self.bound_port = msg.port

    @handles(MagicsockResend)
    def on_resend(self, msg: MagicsockResend) -> None:
        """A (re)started DerpClient wants the home region."""
        self.tell_named(msg.reply_to, HomeRegion(region=self.home))

    def _servers(self) -> dict[int, list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]]:
        out = {}
        for r in self.config.regions:
            if r.stun_port < 0:
                continue
            try:
                ip = ipaddress.ip_address(r.host)
            except ValueError:
                continue  # this port does not resolve names for STUN
            if ip.version == 4 and not udp_families(self.config)[0]:  # 24d: an IPv6-only socket
                continue
            out[r.region_id] = [(ip, r.stun_port or 3478)]
        return out

    def _servers6(self) -> dict[int, list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]]:
        """The regions' IPv6 STUN addresses, when our socket has IPv6 (``Config.ipv6``); else none."""
        out: dict[int, list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]] = {}
        if not udp_families(self.config)[1]:
            return out
        for r in self.config.regions:
            if r.stun_port < 0 or not r.host6:
                continue
            try:
                ip = ipaddress.IPv6Address(r.host6)
            except ValueError:
                continue
            out[r.region_id] = [(ip, r.stun_port or 3478)]
        return out

    @handles(StunTick)
    def tick(self, msg: StunTick) -> None:
        """Probe (and time out probes) as of ``msg.at``: times come from messages, not clock reads
        mid-handler, so a replay of this actor computes the same latencies."""
        now = msg.at if msg.at is not None else self.clock.monotonic()
        clock_now = self.clock.monotonic()
        due = max(now + TICK, clock_now)  # a late tick re-anchors: "now" never lags more than one tick
        self._tick = self.send_after(due - clock_now, StunTick(at=due))
        if self.check is None:
            if now >= self.next_report:
                self.check = netcheck_for(self._servers(), self._servers6(), prev_home=self.home,
                                          tx_id=self._tx_id)  # 24d: IPv6 STUN beside IPv4
                self._send(self.check.start(now))
                self._maybe_done(now)
            return
        d = self.check.next_deadline()
        if d is not None and now >= d:
            self._send(self.check.handle_timeout(now))
        self._maybe_done(now)

    @handles(StunStatusRequest)
    def status(self, msg: StunStatusRequest) -> StunStatus:
        return StunStatus(dropped_unsolicited=self.dropped_unsolicited)

    @handles(StunIn)
    def stun_in(self, msg: StunIn) -> None:
        now = msg.at if msg.at is not None else self.clock.monotonic()
        if self.check is not None and self.check.on_response(now, msg.data):
            self._maybe_done(now)
        else:
            self.dropped_unsolicited += 1

    def _send(self, sends: list) -> None:  # type: ignore[type-arg]
        udp = self.lookup(self.config.name("udp"))
        if udp is None:
            return
        for s in sends:
            udp.tell(UdpSend(dst=format_addr(s.dst), data=s.data))

    def _maybe_done(self, now: float) -> None:
        if self.check is None or not self.check.done:
            return
        report = self.check.report()
        self.check = None
        self.last = report
        lo, hi = self.config.stun_interval
        self.next_report = now + self._uniform(lo, hi)
        if not self.config.home_fixed and report.preferred_derp and report.preferred_derp != self.home:
            # the new home's DerpClient connects, the old one clears NotePreferred and closes once idle
            self.home = report.preferred_derp
            home = HomeRegion(region=self.home)
            remember(self, self.config.memory, home)
            for name in (*self.config.derp_names(), self.config.control):
                if name:
                    self.tell_named(name, home)
        self.endpoints = self._endpoints(report)
        self._publish()

    def _endpoints(self, report: Report) -> tuple[str, ...]:
        if not self.config.advertise_endpoints:
            return ()
        eps: list[str] = []
        if self.portmapped is not None:  # first, as Go's EndpointPortmapped
            eps.append(self.portmapped)
        if report.global_v4 is not None:
            eps.append(format_addr(report.global_v4))
        if report.global_v6 is not None:
            eps.append(format_addr(report.global_v6))
        # Behind a hard NAT (the mapping varies by destination) with a fixed port configured, guess
        # that the router forwards that same port (Go's EndpointSTUN4LocalPort): worst case a
        # candidate that never answers.
        if report.global_v4 is not None and report.mapping_varies_by_dest_ip and self.config.bind_port:
            eps.append(format_addr((report.global_v4[0], self.config.bind_port)))
        host = self.config.bind_host
        try:
            ip = ipaddress.ip_address(host)
            if not ip.is_unspecified and self.bound_port:
                eps.append(format_addr((ip, self.bound_port)))
            elif ip.is_unspecified and self.bound_port and ip.version == 4:
                # bound to every address: offer each local interface's (Go's EndpointLocal), so two
                # peers behind one NAT meet on their LAN (no hairpin needed); loopback never
                eps.extend(format_addr((a, self.bound_port)) for a in local_ipv4())
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
                last = self.last
                ref.tell(NetcheckReport(
                    udp=last.udp, preferred_derp=self.home, region_latency=last.region_latency,
                    global_v4=format_addr(last.global_v4) if last.global_v4 else None,
                    global_v6=format_addr(last.global_v6) if last.global_v6 else None,
                    mapping_varies_by_dest_ip=last.mapping_varies_by_dest_ip,
                    derp_latency=last.derp_latency, have_port_map=self.portmapped is not None,
                    portmap_protocols=self.portmap_offer,
                    os_has_ipv6=True if udp_families(self.config)[1] else None))

    @handles(PortmapEndpoint)
    def on_portmapped(self, msg: PortmapEndpoint) -> None:
        """The port mapper's endpoint (or what the gateway offers) changed: advertise it now (or at
        the first report)."""
        self.portmapped = msg.endpoint
        self.portmap_offer = dict(msg.available)
        if self.last is not None:
            self.endpoints = self._endpoints(self.last)
            self._publish()

    @handles(ResendPaths)
    def resend(self, msg: ResendPaths) -> None:
        """A restarted DiscoPinger wants our endpoints again (or now, if no report finished yet)."""
        if self.last is not None:
            self._publish()
        else:
            self.next_report = self.clock.monotonic()
