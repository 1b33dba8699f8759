"""DiscoPinger: drives one ``Endpoint`` core per peer and tells the router each peer's path.

Disco packets arrive from the UDP actor and the DERP clients; Pings are answered (UDP → UDP, DERP →
the region it came on), Pongs update the path, CallMeMaybe (sent only over DERP: the peer's home, or
the region we last heard it on while its home is unknown) triggers pings to the advertised endpoints.
A periodic tick runs the cores' timers (ping timeouts, heartbeats). Disco messages from keys that
are not admitted peers are dropped (Go ``handleDiscoMessage``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pytsnet.actors.keeper import recall, remember
from pytsnet.actors.magicsock import disco_reply, udp_lane
from pytsnet.actors.magicsock.config import wire_timings
from pytsnet.actors.runtime import Actor, StopReason, handles
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.messages.magicsock import (
    AdmittedPeers,
    DerpPeerGone,
    DerpSend,
    DiscoIn,
    DiscoStatus,
    DiscoStatusRequest,
    DiscoTick,
    LocalEndpoints,
    MagicsockKeys,
    MagicsockResend,
    MagicsockSpawn,
    PathUpdate,
    PeerActive,
    ResendPaths,
    SetPeers,
    UdpSend,
)
from pytsnet.messages.ping import DiscoPingPoll, DiscoPingResult, DiscoPingStart
from pytsnet.wire import disco
from pytsnet.wire.errors import WireError
from pytsnet.wire.keys import DiscoPrivate, DiscoPublic, KeyParseError, NodePublic
from pytsnet.wire.magicsock.addr import DERP_MAGIC_IP, AddrParseError, format_addr, parse_addr
from pytsnet.wire.magicsock.endpoint import Action, Endpoint, SendCallMeMaybe, SendPing, SendPong

TICK = 0.1
MAX_USER_PINGS = 64
"""On-demand pings remembered at once (the oldest forgotten past this)."""

log = subsystem_logger("magicsock")


@dataclass
class _Peer:
    node_key: str
    disco_key: DiscoPublic
    shared: disco.DiscoShared
    ep: Endpoint
    last_pushed: tuple[object, ...] | None = None
    last_path: str = ""
    derp_seen: int = 0  # the DERP region this peer's disco last came in on (Go derpRoute)


class DiscoPinger(Actor):
    def __init__(self, config: MagicsockSpawn, keys: MagicsockKeys) -> None:
        self.config = config
        self.me = DiscoPrivate.from_text(keys.disco_private)  # fixed for the node's life
        self.node_public = NodePublic.from_text(config.node_public)
        self.timings = wire_timings(config.timings)
        self.last_peers: SetPeers | None = None  # ours alone; the keeper holds a copy for a restart
        self.peers: dict[str, _Peer] = {}
        self.by_disco: dict[DiscoPublic, str] = {}
        self.local_endpoints: tuple[disco.AddrPort, ...] = ()
        self.dropped_unknown_disco = 0
        self.dropped_bad_box = 0
        self.dropped_malformed = 0  # disco-magic datagrams too short to name a sender
        self.dropped_bad_source = 0
        self.user_pings: dict[bytes, tuple[float, DiscoPingResult]] = {}
        """On-demand pings (``DiscoPingStart``) by tx ID: when sent, and the result so far."""

    def on_start(self) -> None:
        self.send_interval(TICK, DiscoTick())
        before = recall(self, self.config.memory)
        if isinstance(before, SetPeers):
            self.set_peers(before)
        stun = self.lookup(self.config.name("stun"))
        if stun is not None:
            stun.tell(ResendPaths())  # ask the prober for our endpoints again after a restart

    # -- configuration ------------------------------------------------------------------------------
    @handles(SetPeers)
    def set_peers(self, msg: SetPeers) -> None:
        if msg != self.last_peers:
            remember(self, self.config.memory, msg)
            admitted = AdmittedPeers(peers=tuple(p.node_key for p in msg.peers))
            for name in self.config.derp_names():  # the relays' admission check follows our set
                self.tell_named(name, admitted)
        self.last_peers = msg
        seen = set()
        for p in msg.peers:
            try:
                dk = DiscoPublic.from_text(p.disco_key)
                eps = [parse_addr(e) for e in p.endpoints]
            except (KeyParseError, AddrParseError):
                continue
            seen.add(p.node_key)
            cur = self.peers.get(p.node_key)
            if cur is None or cur.disco_key != dk:
                try:
                    shared = disco.DiscoShared(self.me, dk)
                except WireError:
                    continue
                if cur is not None:
                    self.by_disco.pop(cur.disco_key, None)
                cur = _Peer(p.node_key, dk, shared, Endpoint(timings=self.timings))
                self.peers[p.node_key] = cur
                self.by_disco[dk] = p.node_key
            cur.ep.derp_region = p.home_derp
            cur.ep.set_netmap_endpoints(eps)
            self._push(cur, force=True)
        for gone in set(self.peers) - seen:
            old = self.peers.pop(gone)
            self.by_disco.pop(old.disco_key, None)
            self.tell_named(self.config.name("udp"), PathUpdate(peer=gone, udp=None, trusted_until=-1.0,
                                                           derp_region=0, rtt=None, removed=True))
        self._publish_pong_keys()

    def _publish_pong_keys(self) -> None:
        """The UDP reader answers pings from these peers itself (``disco_reply``)."""
        udp = self.lookup(self.config.name("udp"))
        if udp is not None:
            disco_reply.publish(udp, disco_reply.PongKeys(
                self.me, {p.disco_key: p.shared for p in self.peers.values()}))

    def on_stop(self, reason: StopReason) -> None:
        udp = self.lookup(self.config.name("udp"))
        if udp is not None:
            disco_reply.withdraw(udp)

    @handles(LocalEndpoints)
    def local(self, msg: LocalEndpoints) -> None:
        eps = []
        for e in msg.endpoints:
            try:
                eps.append(parse_addr(e))
            except AddrParseError:
                continue
        self.local_endpoints = tuple(eps)

    @handles(MagicsockResend)
    def on_resend(self, msg: MagicsockResend) -> None:
        """A (re)started DerpClient wants the admitted peer set."""
        if self.last_peers is not None:
            keys = tuple(p.node_key for p in self.last_peers.peers)
            self.tell_named(msg.reply_to, AdmittedPeers(peers=keys))

    @handles(ResendPaths)
    def resend(self, msg: ResendPaths) -> None:
        for p in self.peers.values():
            self._push(p, force=True)
        self._publish_pong_keys()  # a (re)started router's reader

    # -- path events ---------------------------------------------------------------------------------
    @handles(PeerActive)
    def active(self, msg: PeerActive) -> None:
        p = self.peers.get(msg.peer)
        if p is not None:
            self._run(p, p.ep.note_send(self.clock.monotonic()))

    @handles(DiscoTick)
    def tick(self, msg: DiscoTick) -> None:
        now = self.clock.monotonic()
        for p in list(self.peers.values()):
            d = p.ep.next_deadline()
            if d is not None and now >= d:
                self._run(p, p.ep.handle_timeout(now))
            self._push(p)

    @handles(DiscoStatusRequest)
    def status(self, msg: DiscoStatusRequest) -> DiscoStatus:
        return DiscoStatus(dropped_unknown_disco=self.dropped_unknown_disco,
                           dropped_bad_box=self.dropped_bad_box, dropped_malformed=self.dropped_malformed,
                           dropped_bad_source=self.dropped_bad_source)

    # -- on-demand pings (the LocalAPI's ping?type=disco) --------------------------------------------
    @handles(DiscoPingStart)
    def ping_start(self, msg: DiscoPingStart) -> None:
        """A Ping to every candidate address and through the peer's DERP region; the first Pong wins."""
        while len(self.user_pings) >= MAX_USER_PINGS:  # bounded: the oldest goes
            self.user_pings.pop(next(iter(self.user_pings)))
        try:
            tx = bytes.fromhex(msg.tx)
        except ValueError:
            return
        p = self.peers.get(msg.peer)
        if p is None or len(tx) != 12:
            self.user_pings[tx] = (0.0, DiscoPingResult(done=True, error="no such peer"))
            return
        pkt = disco.seal_packet(self.me, p.shared, disco.Ping(tx, self.node_public))
        region = p.ep.derp_region or p.derp_seen
        addrs = p.ep.candidates()
        if not addrs and not region:
            self.user_pings[tx] = (0.0, DiscoPingResult(done=True, error="no path to peer"))
            return
        self.user_pings[tx] = (self.clock.monotonic(), DiscoPingResult())
        for a in addrs:
            self._send_udp(a, pkt)
        if region:
            self.tell_named(self.config.derp_name(region), DerpSend(peer=p.node_key, data=pkt))

    @handles(DiscoPingPoll)
    def ping_poll(self, msg: DiscoPingPoll) -> DiscoPingResult:
        try:
            got = self.user_pings.get(bytes.fromhex(msg.tx))
        except ValueError:
            got = None
        return got[1] if got is not None else DiscoPingResult(done=True, error="unknown ping")

    def _user_pong(self, tx: bytes, now: float, src: disco.AddrPort | None, derp_region: int) -> None:
        got = self.user_pings.get(tx)
        if got is None or got[1].done:
            return
        sent, _ = got
        self.user_pings[tx] = (sent, DiscoPingResult(
            done=True, latency=max(0.0, now - sent), endpoint=format_addr(src) if src is not None else "",
            derp_region=derp_region if src is None else 0))

    @handles(DiscoIn)
    def disco_in(self, msg: DiscoIn) -> None:
        try:
            sender = disco.source(msg.data)
        except WireError:
            self.dropped_malformed += 1
            return
        node = self.by_disco.get(sender)
        if node is None:
            self.dropped_unknown_disco += 1
            return
        p = self.peers[node]
        if msg.derp_src is not None and msg.derp_src != node:
            self.dropped_unknown_disco += 1  # DERP source node key must match the disco key's owner
            return
        try:
            _, m = disco.open_packet(self.me, msg.data, p.shared)
        except WireError:
            self.dropped_bad_box += 1
            return
        now = self.clock.monotonic() if msg.at is None else min(msg.at, self.clock.monotonic())
        via_derp = msg.derp_src is not None
        if via_derp and msg.derp_region:
            p.derp_seen = msg.derp_region
        try:
            src = None if via_derp else parse_addr(msg.src)
            derp_src = parse_addr(msg.src) if via_derp else (DERP_MAGIC_IP, 0)
        except AddrParseError:
            self.dropped_bad_source += 1
            return
        if isinstance(m, disco.Ping):
            actions = p.ep.on_ping(now, m.tx_id, src, derp_src)
            if msg.answered:  # the reader sent the pong (disco_reply)
                actions = [a for a in actions if not isinstance(a, SendPong)]
            self._run(p, actions, derp_region=msg.derp_region)
        elif isinstance(m, disco.Pong):
            if m.tx_id in self.user_pings:
                self._user_pong(m.tx_id, now, src, msg.derp_region or p.ep.derp_region or p.derp_seen)
            p.ep.on_pong(now, m.tx_id, src)
        elif isinstance(m, disco.CallMeMaybe) and via_derp:
            self._run(p, p.ep.on_call_me_maybe(now, m.my_number))
        self._push(p)

    @handles(DerpPeerGone)
    def peer_gone(self, msg: DerpPeerGone) -> None:
        """The peer left that region: stop sending CallMeMaybe there (the router forgets its route)."""
        p = self.peers.get(msg.peer)
        if p is not None and p.derp_seen == msg.region:
            p.derp_seen = 0

    # -- carrying out actions ------------------------------------------------------------------------
    def _run(self, p: _Peer, actions: list[Action], derp_region: int = 0) -> None:
        for a in actions:
            if isinstance(a, SendPing):
                pkt = disco.seal_packet(self.me, p.shared, disco.Ping(a.tx_id, self.node_public))
                self._send_udp(a.dst, pkt)
            elif isinstance(a, SendPong):
                pkt = disco.seal_packet(self.me, p.shared, disco.Pong(a.tx_id, a.src))
                if a.dst is None:
                    region = derp_region or p.ep.derp_region or p.derp_seen
                    if region:
                        self.tell_named(self.config.derp_name(region), DerpSend(peer=p.node_key, data=pkt))
                else:
                    self._send_udp(a.dst, pkt)
            elif isinstance(a, SendCallMeMaybe) and self.config.advertise_endpoints:
                region = p.ep.derp_region or p.derp_seen
                if region:
                    pkt = disco.seal_packet(self.me, p.shared, disco.CallMeMaybe(self.local_endpoints))
                    self.tell_named(self.config.derp_name(region), DerpSend(peer=p.node_key, data=pkt))
        self._push(p)

    def _send_udp(self, dst: disco.AddrPort, pkt: bytes) -> None:
        """On the router's socket from this thread (``udp_lane``: not behind the bulk sends queued in
        its mailbox); through its mailbox while it has no socket published."""
        udp = self.lookup(self.config.name("udp"))
        if not udp_lane.send(udp, pkt, (str(dst[0]), dst[1])):
            self.tell_named(self.config.name("udp"), UdpSend(dst=format_addr(dst), data=pkt))

    def _push(self, p: _Peer, force: bool = False) -> None:
        ep = p.ep
        addrs = tuple(format_addr(a) for a in ep.candidates())
        best = format_addr(ep.best.addr) if ep.best.addr is not None else None
        key = (best, ep.trust_best_until, ep.derp_region, addrs)
        if not force and key == p.last_pushed:
            return
        p.last_pushed = key
        path = f"direct {best}" if best is not None else (
            f"DERP region {ep.derp_region}" if ep.derp_region else "none")
        if path != p.last_path:
            if p.last_path or path != "none":  # a new peer with no path yet is not news
                log.info("path to %s: %s", p.node_key[:16], path)
            p.last_path = path
        self.tell_named(self.config.name("udp"), PathUpdate(
            peer=p.node_key, udp=best,
            trusted_until=ep.trust_best_until if ep.trust_best_until != float("-inf") else -1.0,
            derp_region=ep.derp_region, rtt=ep.best.latency if best else None, addrs=addrs))

