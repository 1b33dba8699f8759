"""One peer's path state (Go ``magicsock.endpoint``): candidates, pings in flight, best UDP address.

The driver feeds events with ``now`` (data sent, disco Ping/Pong/CallMeMaybe received, timers) and
carries out the returned actions (``SendPing``, ``SendPong``, ``SendCallMeMaybe``). ``addrs_for_send``
answers where a WireGuard datagram goes: the best UDP address alone while it is trusted (6.5 s after its
last pong), otherwise the (possibly stale) UDP address and DERP both, or DERP alone.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from pytsnet.wire.disco import AddrPort

HEARTBEAT_INTERVAL = 3.0
TRUST_UDP_ADDR_DURATION = 6.5
SESSION_ACTIVE_TIMEOUT = 45.0
UPGRADE_UDP_DIRECT_INTERVAL = 60.0
GOOD_ENOUGH_LATENCY = 0.005
PING_TIMEOUT_DURATION = 5.0
DISCO_PING_INTERVAL = 5.0
MAX_PINGS_IN_FLIGHT = 64  # bound memory against a peer that never answers
MAX_ENDPOINTS = 64  # bound the candidate set (CallMeMaybe and ping sources are peer-controlled)


@dataclass(frozen=True, slots=True)
class SendPing:
    """Send a disco Ping with ``tx_id`` to ``dst`` over UDP."""

    dst: AddrPort
    tx_id: bytes


@dataclass(frozen=True, slots=True)
class SendPong:
    """Answer a Ping: over UDP to ``dst``, or over DERP when ``dst`` is None; ``src`` goes in the Pong."""

    dst: AddrPort | None
    tx_id: bytes
    src: AddrPort


@dataclass(frozen=True, slots=True)
class SendCallMeMaybe:
    """Tell the peer over DERP to ping our endpoints (the driver fills in our current endpoints)."""


Action = SendPing | SendPong | SendCallMeMaybe


@dataclass(slots=True)
class _SentPing:
    to: AddrPort
    at: float
    heartbeat: bool


@dataclass(slots=True)
class _EndpointState:
    last_ping: float | None = None
    latency: float | None = None
    from_call_me_maybe: bool = False
    from_netmap: bool = False
    from_ping: bool = False


@dataclass(frozen=True, slots=True)
class AddrQuality:
    addr: AddrPort | None
    latency: float = 0.0


def _bonus(addr: AddrPort) -> int:
    ip = addr[0]
    pts = 0
    if ip.is_loopback:
        pts += 50
    elif ip.is_link_local:
        pts += 30
    elif _is_private(ip):
        pts += 20
    if isinstance(ip, ipaddress.IPv6Address):
        pts += 10
    return pts


def _is_private(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Go ``netip.Addr.IsPrivate``: RFC 1918 and RFC 4193 only (Python's is_private is much wider)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return any(ip in n for n in _PRIVATE_V4)
    return ip in _PRIVATE_V6


_PRIVATE_V4 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_PRIVATE_V6 = ipaddress.ip_network("fc00::/7")


def better_addr(a: AddrQuality, b: AddrQuality) -> bool:
    """Go ``betterAddr`` (no MTU probing, no relay paths): is ``a`` better than the current ``b``?"""
    if a.addr == b.addr:
        return False
    if b.addr is None:
        return True
    if a.addr is None:
        return False
    la, lb = round(a.latency * 1e9), round(b.latency * 1e9)  # Go compares integer nanoseconds
    a_points = b_points = 0
    if la > lb and la > 0:
        b_points = 100 - (lb * 100) // la
    elif lb > 0:
        a_points = 100 - (la * 100) // lb
    a_points += _bonus(a.addr)
    b_points += _bonus(b.addr)
    if a_points <= 1 and b_points == 0:
        return False
    return a_points > b_points


@dataclass(frozen=True, slots=True)
class Timings:
    """Go's constants by default; tests shorten them to exercise the same rules in less wall time."""

    heartbeat: float = HEARTBEAT_INTERVAL
    trust: float = TRUST_UDP_ADDR_DURATION
    session_active: float = SESSION_ACTIVE_TIMEOUT
    upgrade: float = UPGRADE_UDP_DIRECT_INTERVAL
    ping_timeout: float = PING_TIMEOUT_DURATION
    ping_interval: float = DISCO_PING_INTERVAL


@dataclass(slots=True)
class Endpoint:
    """Path state for one peer. ``derp_region`` 0 = unknown home (no DERP fallback)."""

    derp_region: int = 0
    timings: Timings = field(default_factory=Timings)
    tx_id: Callable[[], bytes] = field(default=lambda: os.urandom(12))  # injectable for deterministic tests
    best: AddrQuality = field(default_factory=lambda: AddrQuality(None))
    trust_best_until: float = float("-inf")
    last_full_ping: float | None = None
    last_send: float | None = None
    next_heartbeat: float | None = None
    endpoints: dict[AddrPort, _EndpointState] = field(default_factory=dict)
    sent: dict[bytes, _SentPing] = field(default_factory=dict)
    last_ping_rx: dict[AddrPort, bytes] = field(default_factory=dict)

    # -- configuration ---------------------------------------------------------------------------
    def set_netmap_endpoints(self, addrs: list[AddrPort] | tuple[AddrPort, ...]) -> None:
        """The peer's endpoints from control; old netmap-only ones that vanished are dropped."""
        want = set(addrs[:MAX_ENDPOINTS])
        for ap, st in list(self.endpoints.items()):
            st.from_netmap = ap in want
            if not (st.from_netmap or st.from_call_me_maybe or st.from_ping) and ap != self.best.addr:
                del self.endpoints[ap]
        for ap in want:
            self._state(ap).from_netmap = True

    def _state(self, ap: AddrPort) -> _EndpointState:
        st = self.endpoints.get(ap)
        if st is None:
            if len(self.endpoints) >= MAX_ENDPOINTS:
                victim = next((k for k in self.endpoints if k != self.best.addr), None)
                if victim is not None:
                    del self.endpoints[victim]
            st = self.endpoints[ap] = _EndpointState()
        return st

    # -- sending -----------------------------------------------------------------------------------
    def addrs_for_send(self, now: float) -> tuple[AddrPort | None, bool]:
        """``(udp address or None, also via DERP?)`` (Go ``addrForSendLocked``)."""
        udp = self.best.addr
        if udp is not None and now <= self.trust_best_until:
            return udp, False
        return udp, self.derp_region != 0

    def is_direct_trusted(self, now: float) -> bool:
        return self.best.addr is not None and now <= self.trust_best_until

    def note_send(self, now: float) -> list[Action]:
        """A WireGuard datagram is being sent: keep heartbeats going, start discovery if wanted."""
        self.last_send = now
        if self.next_heartbeat is None:
            self.next_heartbeat = now + self.timings.heartbeat
        if (self.best.addr is None or now > self.trust_best_until) and self._want_full_ping(now):
            return self._full_ping(now, call_me_maybe=True)
        return []

    def _want_full_ping(self, now: float) -> bool:
        if self.best.addr is None or self.last_full_ping is None or now > self.trust_best_until:
            return True
        if self.best.latency <= GOOD_ENOUGH_LATENCY:
            return False
        return now - self.last_full_ping >= self.timings.upgrade

    def _full_ping(self, now: float, call_me_maybe: bool) -> list[Action]:
        self.last_full_ping = now
        out: list[Action] = []
        for ap, st in self.endpoints.items():
            if st.last_ping is not None and now - st.last_ping < self.timings.ping_interval:
                continue
            out.append(self._ping(ap, now, heartbeat=False))
        if out and call_me_maybe and self.derp_region:
            out.append(SendCallMeMaybe())
        return out

    def _ping(self, ap: AddrPort, now: float, heartbeat: bool) -> SendPing:
        if len(self.sent) >= MAX_PINGS_IN_FLIGHT:
            oldest = min(self.sent, key=lambda k: self.sent[k].at)
            del self.sent[oldest]
        tx = self.tx_id()
        self.sent[tx] = _SentPing(ap, now, heartbeat)
        self._state(ap).last_ping = now
        return SendPing(ap, tx)

    # -- timers ------------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        ds = [sp.at + self.timings.ping_timeout for sp in self.sent.values()]
        if self.next_heartbeat is not None:
            ds.append(self.next_heartbeat)
        return min(ds) if ds else None

    def handle_timeout(self, now: float) -> list[Action]:
        """Expire unanswered pings (an untrusted best address that timed out is cleared) and heartbeat."""
        for tx, sp in list(self.sent.items()):
            if now >= sp.at + self.timings.ping_timeout:
                del self.sent[tx]
                if sp.to == self.best.addr and now > self.trust_best_until:
                    self.best = AddrQuality(None)  # Go clearBestAddrLocked: DERP only from now
        out: list[Action] = []
        if self.next_heartbeat is not None and now >= self.next_heartbeat:
            out = self._heartbeat(now)
        return out

    def _heartbeat(self, now: float) -> list[Action]:
        if self.last_send is None or now - self.last_send > self.timings.session_active:
            self.next_heartbeat = None  # idle session: stop until the next send
            return []
        out: list[Action] = []
        if self.best.addr is not None:
            out.append(self._ping(self.best.addr, now, heartbeat=True))
        if self._want_full_ping(now):
            out.extend(a for a in self._full_ping(now, call_me_maybe=True)
                       if not (isinstance(a, SendPing) and a.dst == self.best.addr))
        self.next_heartbeat = now + self.timings.heartbeat
        return out

    # -- disco messages received -------------------------------------------------------------------
    def on_ping(self, now: float, tx_id: bytes, src: AddrPort | None, derp_src: AddrPort) -> list[Action]:
        """A Ping from this peer, over UDP from ``src`` or (``src`` None) over DERP (``derp_src`` is
        ``127.3.3.40:<region>``). UDP sources become candidates; a repeated TxID gets no Pong."""
        if src is None:
            return [SendPong(None, tx_id, derp_src)]
        if self.last_ping_rx.get(src) == tx_id:
            return []
        if len(self.last_ping_rx) >= MAX_ENDPOINTS and src not in self.last_ping_rx:
            self.last_ping_rx.pop(next(iter(self.last_ping_rx)))
        self.last_ping_rx[src] = tx_id
        self._state(src).from_ping = True
        return [SendPong(src, tx_id, src)]

    def on_pong(self, now: float, tx_id: bytes, src: AddrPort | None) -> bool:
        """A Pong arrived from ``src`` (None = over DERP). True if it answered one of our pings.

        The pinged address becomes best if it is better or the best is untrusted, and is trusted for
        ``TRUST_UDP_ADDR_DURATION`` when it is (now) the best.
        """
        sp = self.sent.pop(tx_id, None)
        if sp is None:
            return False
        if src is None:
            return True
        st = self.endpoints.get(sp.to)
        if st is None:
            return True
        latency = max(0.0, now - sp.at)
        st.latency = latency
        this = AddrQuality(sp.to, latency)
        if better_addr(this, self.best) or now > self.trust_best_until:
            self.best = this
        if self.best.addr == this.addr:
            self.best = this
            self.trust_best_until = now + self.timings.trust
        return True

    def on_call_me_maybe(self, now: float, addrs: tuple[AddrPort, ...]) -> list[Action]:
        """The peer's current endpoints (over DERP): add them, drop stale CallMeMaybe ones, ping all."""
        want = set()
        for ap in addrs[:MAX_ENDPOINTS]:
            ip = ap[0]
            if isinstance(ip, ipaddress.IPv6Address) and ip.is_link_local:
                continue
            want.add(ap)
        for ap, st in list(self.endpoints.items()):
            if st.from_call_me_maybe and ap not in want:
                st.from_call_me_maybe = False
                if not (st.from_netmap or st.from_ping) and ap != self.best.addr:
                    del self.endpoints[ap]
        for ap in want:
            self._state(ap).from_call_me_maybe = True
        for st in self.endpoints.values():
            st.last_ping = None  # reset the rate limit: the peer just opened its firewall for us
        return self._full_ping(now, call_me_maybe=False)

    def candidates(self) -> list[AddrPort]:
        return list(self.endpoints)
