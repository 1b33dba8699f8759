"""The WgEngine actor: WireGuard sessions, AllowedIPs routing and the inbound packet filter.

A thin driver around two sans-IO cores: ``wire.wireguard.device.Device`` (peers, handshakes,
routing, anti-spoofing) and ``netstack.filter.Filter``. Inbound: ``WgDatagramIn`` -> decrypt ->
filter -> the packet's TCP flow actor (``FlowPacketsIn``) when the netstack published a route for
its 4-tuple (``FlowRoutes``), else ``IpPacketIn`` to the sink (the netstack: SYNs, UDP, ICMP,
unknown 4-tuples). Outbound: ``IpPacketOut`` (from the flows and the netstack) -> record the flow
-> route -> encrypt -> ``WgDatagramOut`` to magicsock.

The fast path keeps the supervision design: the netstack stays the only owner of the flow table and
tells us each change (a restarted engine asks for the whole table, ``FlowRoutesRequest``), flows stay
separate actors (a poison packet kills its flow, not the engine: we only look up a dict), and a
route that went stale costs speed, never correctness (a dead flow's tell fails and its packets go
to the netstack, which answers them from its Stack as before). WireGuard timers run on the system clock at
the device's aggregated deadline, so an idle tunnel keeps its keepalives and rekeys.

Bursts travel as one message per hop (``IpPacketsOut``/``IpPacketsIn``, ``WgDatagramsIn``/``Out``):
per-message mailbox and thread-wakeup costs, not crypto, bounded throughput when every packet was its
own message. A peer without the burst message (a test rig) gets the single-packet messages.

Handshakes wait in their own queue, as wireguard-go's (``QUEUE_HANDSHAKE_SIZE`` deep, dropped and
counted when full): transport is decrypted as it arrives, handshakes are worked off a slice at a time
(``WgHandshakeWork`` told to ourselves goes behind the data already queued), so a handshake flood
delays no established tunnel. The engine is under load while that queue is at least 1/8 full and for
``UNDER_LOAD_AFTER`` seconds after (wireguard-go ``IsUnderLoad``): initiations then need a cookie
(the ``Device`` answers with cookie replies instead of DH work) and fit the source's budget. Magicsock
hands on at most its initiation budget per second and reports shedding the rest (``WgHandshakeLoad``),
which puts the engine under load as well.
The receiver indexes in use are published to magicsock (``WgLiveIndexes``) before any datagram goes
out, so its reader drops transport for any other index before it is queued. A flush that publishes
new ones sends its datagrams through magicsock's mailbox, behind that message, never on the direct
or DERP lane: an initiation written to the socket at once could be answered before magicsock's
thread took the new index, and the reader would drop the response (WireGuard's 5 s retry).

Sessions are not preserved across a restart (keys stay in the dead incarnation); the
configuration is: each ``WgConfig`` applied is told to the tree's ``MemoryKeeper`` (``memory``), which a
restarted engine asks in ``on_start``: it comes back with the same peers and filter and re-handshakes
on the next packet.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections import deque
from dataclasses import dataclass
from typing import Literal

from pytsnet.actors.keeper import recall, remember
from pytsnet.actors.magicsock import derp_writer, udp_lane
from pytsnet.actors.peers.routes import own_addresses
from pytsnet.actors.runtime import (
    Actor,
    ActorRef,
    ActorStopped,
    MailboxConfig,
    MailboxFull,
    MailboxPolicy,
    StopReason,
    TimerHandle,
    UnhandledMessage,
    handles,
)
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.actors.wgengine.filter_rules import (
    INVALID_PACKET_FILTER,
    FilterRuleError,
    confine_unlocked,
    rules_from_tailcfg,
    unlocked_allowed_ips,
)
from pytsnet.messages.magicsock import (
    DerpSends,
    UdpSend,
    WgDirectActive,
    WgDirectPaths,
    WgDirectPathsRequest,
    WgHandshakeLoad,
    WgHandshakeQueueFull,
    WgLiveIndexes,
    WgLiveIndexesRequest,
)
from pytsnet.messages.netstack import FlowPacketsIn, FlowRoutes, FlowRoutesRequest, RouteKey
from pytsnet.messages.peers import PeersChanged
from pytsnet.messages.wgengine import (
    CapturedPackets,
    GetWgStatus,
    IpPacketIn,
    IpPacketOut,
    IpPacketsIn,
    IpPacketsOut,
    WgConfig,
    WgDatagramIn,
    WgDatagramOut,
    WgDatagramsIn,
    WgDatagramsOut,
    WgHandshakeWork,
    WgPeer,
    WgPeerStatus,
    WgStatus,
    WgTick,
)
from pytsnet.netstack.filter import PROTO_TCP, Filter, FilterParseError, summarize
from pytsnet.wire.keys import KeyParseError, NodePrivate, NodePublic
from pytsnet.wire.pcap import CapturePath
from pytsnet.wire.wireguard.constants import TAILSCALE_PERSISTENT_KEEPALIVE
from pytsnet.wire.wireguard.device import Device, PeerConfig

log = subsystem_logger("wgengine")

__all__ = ["ENGINE_MAILBOX", "WgEngine"]

_TIMER_SLACK = 0.001
QUEUE_HANDSHAKE_SIZE = 1024  # wireguard-go QueueHandshakeSize
UNDER_LOAD_QUEUE = QUEUE_HANDSHAKE_SIZE // 8  # wireguard-go: under load at 1/8 full ...
UNDER_LOAD_AFTER = 1.0  # ... and for UnderLoadAfterTime after
HANDSHAKE_SLICE = 32  # handshakes worked per WgHandshakeWork before queued data gets its turn
DIRECT_ACTIVE_INTERVAL = 0.5  # s; half magicsock's activity-note interval, so none is missed
_HANDSHAKE_TYPES = frozenset((1, 2, 3))  # initiation, response, cookie reply
ENGINE_MAILBOX = MailboxConfig(65536, MailboxPolicy.DROP_NEWEST, max_bytes=8 << 20)
"""What may wait for the engine from magicsock, DERP and the netstack together: 8 MiB (a flood past
it is dropped and counted by the mailbox, never held)."""


@dataclass(slots=True)
class _Handshake:
    data: bytes
    src: bytes
    rate_key: bytes
    via: str
    peer: str | None
    reply_to: str


_SERVICE_V4 = bytes((100, 100, 100, 100))
_SERVICE_V6 = bytes.fromhex("fd7a115ca1e000000000000000000053")


def _to_service(p: bytes) -> bool:
    """Addressed to 100.100.100.100 or fd7a:115c:a1e0::53 (read straight off the header)."""
    return p[16:20] == _SERVICE_V4 if p[:1] < b"\x50" else p[24:40] == _SERVICE_V6


class WgEngine(Actor):
    def __init__(
        self,
        private: NodePrivate,
        *,
        magicsock: str = "magicsock",
        sink: str = "netstack",
        memory: str | None = None,
        mtu: int = 0,
        persistent_keepalive: float = TAILSCALE_PERSISTENT_KEEPALIVE,
        ipv6: bool = False,
        capture: str = "capture",
        service: str | None = None,
        local_routes: tuple[str, ...] = (),
        peerapi_port: int = 0,
    ) -> None:
        self._private = private
        self._peerapi_port = peerapi_port  # 21h: unsigned peerAPI-only peers may open TCP to it only
        self.invalid_packet_filter = False  # 21h: the netmap's filter let such a peer in: dropped whole
        self._local_routes = local_routes  # routes we advertise (subnet router / exit node): forwarded
        self._service_name = service  # quad-100's resolver: packets to 100.100.100.100 go there
        self._magicsock_name = magicsock
        self._sink_name = sink
        self._memory = memory  # the keeper's name: the last WgConfig survives a restart there
        self._config = WgConfig()
        self._mtu = mtu
        self._keepalive = persistent_keepalive
        self._ipv6 = ipv6
        self._capture_name = capture  # a PcapWriter under this name, while one runs, gets plaintext
        self._magicsock: ActorRef | None = None
        self._sink: ActorRef | None = None
        self._texts: dict[NodePublic, str] = {}
        self._timer: TimerHandle | None = None
        self._timer_at: float | None = None
        self._sink_batches = True  # until the sink refuses IpPacketsIn
        self._routes: dict[RouteKey, ActorRef] = {}
        self._routes_wanted = False  # the netstack has not yet been asked for its table
        """The fast path: TCP flows the netstack published (``FlowRoutes``), by inbound 4-tuple."""
        self._magicsock_batches = True  # until magicsock refuses WgDatagramsOut
        self._direct: dict[str, tuple[tuple[str, int], float]] = {}
        """Peers magicsock published as direct-only (``WgDirectPaths``): address, trusted until."""
        self._direct_gso = False
        self._direct_gso_failed = False  # a GSO send of ours failed as on a device that cannot segment
        self._derp: dict[str, str] = {}
        """Peers magicsock published as DERP-only (``WgDirectPaths.derp_peers``): their region's client."""
        self._direct_noted: dict[str, float] = {}  # peer -> when magicsock last heard WgDirectActive
        self.datagrams_direct = 0  # sent on the UDP socket ourselves (the rest went to magicsock)
        self.datagrams_derp = 0  # told a DERP client ourselves
        self.packets_in = 0
        self.packets_to_flows = 0
        self.packets_out = 0
        self._handshakes: deque[_Handshake] = deque()
        self._handshake_bytes = 0
        self._work_pending = False
        self._queue_full_told = False  # magicsock was told our handshake queue is full
        self._under_load_until = float("-inf")
        self._published_indexes = -1  # the Device.index_version magicsock last heard of
        self.drops: dict[str, int] = {"handshake_queue_full": 0}

    # --- lifecycle -------------------------------------------------------------------------------

    def on_start(self) -> None:
        clock = self.clock
        self.device = Device(self._private, mtu=self._mtu, unix_time_offset=clock.time() - clock.monotonic())
        self.filter = Filter(None, (), ipv6=self._ipv6)
        before = recall(self, self._memory)
        if isinstance(before, WgConfig):
            self._config = before
        self._apply(self._config)
        self._publish_indexes()  # a new incarnation has no sessions: magicsock forgets the old ones
        self._tell_magicsock(WgHandshakeQueueFull(full=False))  # nor a full handshake queue
        self._tell_magicsock(WgDirectPathsRequest())  # the direct-path table died with the last one
        self._routes_wanted = not self._ask_routes()  # a restart: the routes died with the last incarnation

    def on_stop(self, reason: StopReason) -> None:
        if self._timer is not None:
            self._timer.cancel()

    # --- configuration ---------------------------------------------------------------------------

    @handles(WgConfig)
    def on_config(self, msg: WgConfig) -> None:
        self._config = msg
        remember(self, self._memory, msg)
        self._apply(msg)

    @handles(PeersChanged)
    def on_peers_changed(self, msg: PeersChanged) -> None:
        """The PeerTracker's admitted set replaces our peers; addresses and filter are kept."""
        peers = [WgPeer(node_key=p.node_key, allowed_ips=own_addresses(p)) for p in msg.peers]  # no routes
        config = self._config = self._config.model_copy(
            update={"peers": peers, "unlocked_allowed_ips": unlocked_allowed_ips(msg.peers)})
        remember(self, self._memory, config)
        self._apply(config)

    def _apply(self, config: WgConfig) -> None:
        peers: list[PeerConfig] = []
        self._texts = {}
        for p in config.peers:
            try:
                public = NodePublic.from_text(p.node_key)
            except KeyParseError:
                log.warning("ignoring peer with bad node key %r", p.node_key)
                continue
            self._texts[public] = public.to_text()
            peers.append(PeerConfig(public, tuple(p.allowed_ips), self._keepalive))
        self.device.set_peers(peers)
        local = []
        for a in (*config.addresses, *self._local_routes):
            try:
                local.append(ipaddress.ip_network(a, strict=False))
            except ValueError:
                log.warning("ignoring bad local address %r", a)
        rules = None
        if config.packet_filter is not None:
            try:
                rules = rules_from_tailcfg(config.packet_filter)
            except FilterRuleError as e:
                log.warning("refusing packet filter (%s); no inbound until a valid one", e)
        # -- unsigned peerAPI-only (21h): such peers reach our peerAPI port only; a filter letting them
        # in is dropped whole (filter_rules.confine_unlocked, Go's packetFilterPermitsUnlockedNodes)
        unlocked = config.unlocked_allowed_ips
        rules, peerapi, invalid = confine_unlocked(rules, unlocked, local, self._peerapi_port)
        if invalid and not self.invalid_packet_filter:
            log.warning("%s", INVALID_PACKET_FILTER)
        self.invalid_packet_filter = invalid
        self.filter = self.filter.with_rules(rules, local, peerapi=peerapi)
        self._flush()

    # --- data path -------------------------------------------------------------------------------

    @handles(IpPacketOut)
    def on_ip_out(self, msg: IpPacketOut) -> None:
        if self._service_name is not None and _to_service(msg.data):
            self._to_service((msg.data,))
            return
        self._capture(CapturePath.FROM_LOCAL, (msg.data,))
        self.filter.run_out(msg.data)
        self.device.send(msg.data, self.clock.monotonic())
        self._flush()

    @handles(IpPacketsOut)
    def on_ips_out(self, msg: IpPacketsOut) -> None:
        packets = msg.packets
        if self._service_name is not None and any(map(_to_service, packets)):
            self._to_service(tuple(p for p in packets if _to_service(p)))
            packets = tuple(p for p in packets if not _to_service(p))
        self._capture(CapturePath.FROM_LOCAL, packets)
        run_out = self.filter.run_out
        for data in packets:
            # run_out only remembers UDP/SCTP flows: a TCP segment (a flow's burst, nearly all of
            # them) is skipped by its protocol byte instead of a header summary per packet.
            if len(data) < 20 or data[9 if data[0] >> 4 == 4 else 6] != PROTO_TCP:
                run_out(data)
        self.device.send_many(packets, self.clock.monotonic())
        self._flush()

    def _ask_routes(self) -> bool:
        """Ask the netstack for its whole flow table; False if it could not be told (not started yet,
        a full mailbox, or a sink without routes): asked again on the next packet for the sink."""
        sink = self._ref(self._sink_name)
        if sink is None:
            return False
        try:
            return sink.tell(FlowRoutesRequest())
        except UnhandledMessage:  # a sink without a fast path (test rigs): never ask again
            return True
        except (ActorStopped, MailboxFull):
            return False

    @handles(FlowRoutes)
    def on_routes(self, msg: FlowRoutes) -> None:
        """The netstack's flow table changed: resolve each new flow's name to its ref once, here."""
        routes = self._routes
        if msg.reset:
            self._routes_wanted = False
            routes.clear()
        for key in msg.remove:
            routes.pop(key, None)
        for key, name in msg.add:
            ref = self._ref(name)
            if ref is not None and ref.is_alive:
                routes[key] = ref

    @handles(WgDatagramIn)
    def on_datagram_in(self, msg: WgDatagramIn) -> None:
        self._receive(msg.via, (msg.data,), (msg.src,), (msg.peer,))

    @handles(WgDatagramsIn)
    def on_datagrams_in(self, msg: WgDatagramsIn) -> None:
        self._receive(msg.via, msg.datas, msg.srcs, msg.peers)

    def _receive(self, via: Literal["udp", "derp"], datas: tuple[bytes, ...], srcs: tuple[str, ...],
                 peers: tuple[str | None, ...]) -> None:
        """Transport now, in order, decrypted per run of one peer's datagrams
        (``Device.receive_many``); handshakes to their queue (dropped and counted when it is full).

        The datagrams left after the handshakes never need their source (it only keys cookies)."""
        now = self.clock.monotonic()
        queue = self._handshakes
        transport: list[bytes] = []
        for data, src, peer in zip(datas, srcs, peers, strict=True):
            if len(data) >= 4 and data[0] in _HANDSHAKE_TYPES:
                if len(queue) >= QUEUE_HANDSHAKE_SIZE:
                    self.drops["handshake_queue_full"] += 1
                    continue
                queue.append(self._handshake(WgDatagramIn.model_construct(peer=peer, data=data, via=via,
                                                                           src=src)))
                self._handshake_bytes += len(data)
                continue
            transport.append(data)
        if transport:
            self.device.receive_many(transport, now)
        self._flush()
        if queue and not self._work_pending:
            self._schedule_work()
        if len(queue) >= QUEUE_HANDSHAKE_SIZE and not self._queue_full_told:
            self._queue_full_told = self._tell_magicsock(WgHandshakeQueueFull(full=True))

    @staticmethod
    def _handshake(d: WgDatagramIn) -> _Handshake:
        if d.via == "derp":  # every DERP sender shares the region's address: key cookies by node key
            key = f"{d.src}/{d.peer}".encode()
            return _Handshake(d.data, key, key, "derp", d.peer, d.src)
        return _Handshake(d.data, d.src.encode(), d.src.rsplit(":", 1)[0].encode(), "udp", d.peer, d.src)

    def _schedule_work(self) -> None:
        """Tell ourselves to work the handshake queue, behind the data already in the mailbox."""
        with contextlib.suppress(ActorStopped, MailboxFull):
            self._work_pending = self.ref.tell(WgHandshakeWork())  # dropped (full): retry on the next data

    @handles(WgHandshakeWork)
    def on_handshake_work(self, msg: WgHandshakeWork) -> None:
        self._work_pending = False
        device, queue = self.device, self._handshakes
        for _ in range(min(HANDSHAKE_SLICE, len(queue))):
            now = self.clock.monotonic()
            under_load = self._under_load(now)
            h = queue.popleft()
            self._handshake_bytes -= len(h.data)
            device.receive(h.data, now, src=h.src, under_load=under_load, rate_key=h.rate_key)
            for reply in device.cookie_replies():
                self._send_cookie(h, reply)
        self._flush()
        if queue:
            self._schedule_work()
        if self._queue_full_told and len(queue) <= QUEUE_HANDSHAKE_SIZE // 2:
            self._queue_full_told = not self._tell_magicsock(WgHandshakeQueueFull(full=False))

    def _tell_magicsock(self, msg: WgHandshakeQueueFull | WgDirectPathsRequest | WgDirectActive) -> bool:
        m = self._magicsock or self._ref(self._magicsock_name)
        self._magicsock = m
        if m is None:
            return False
        try:
            return m.tell(msg)
        except (ActorStopped, MailboxFull, UnhandledMessage):  # a rig without it: the queue drops them
            return False

    @handles(WgDirectPaths)
    def on_direct_paths(self, msg: WgDirectPaths) -> None:
        """Magicsock's table of direct-only peers (whole, or a change): their bursts go on the
        socket from here."""
        direct, derp = self._direct, self._derp
        if msg.reset:
            direct.clear()
            derp.clear()
        for p in msg.removed:
            direct.pop(p, None)
            derp.pop(p, None)
        for p in msg.peers:
            derp.pop(p, None)
        for p in msg.derp_peers:
            direct.pop(p, None)
        direct.update((p, (a, u)) for p, a, u in zip(msg.peers, msg.addrs, msg.until, strict=True))
        derp.update(zip(msg.derp_peers, msg.derp_actors, strict=True))
        self._direct_gso = msg.gso and not self._direct_gso_failed
        self._direct_noted = {p: t for p, t in self._direct_noted.items() if p in direct or p in derp}

    @handles(WgHandshakeLoad)
    def on_handshake_load(self, msg: WgHandshakeLoad) -> None:
        """Magicsock sheds initiations over its budget: that is load too, though our queue stays short."""
        self._under_load_until = max(self._under_load_until, self.clock.monotonic() + UNDER_LOAD_AFTER)

    def _under_load(self, now: float) -> bool:
        """wireguard-go ``IsUnderLoad``: the handshake queue is 1/8 full, or was within a second."""
        if len(self._handshakes) >= UNDER_LOAD_QUEUE:
            self._under_load_until = now + UNDER_LOAD_AFTER
            return True
        return self._under_load_until > now

    def _send_cookie(self, h: _Handshake, reply: bytes) -> None:
        """Back the way the handshake came: to its UDP source, or over DERP to its sender's key."""
        m = self._magicsock or self._ref(self._magicsock_name)
        self._magicsock = m
        if m is None:
            self.device.drops["no_magicsock"] += 1
            return
        with contextlib.suppress(ActorStopped, MailboxFull, UnhandledMessage):
            if h.via == "udp":
                m.tell(UdpSend.model_construct(dst=h.reply_to, data=reply))
            elif h.peer is not None:
                m.tell(WgDatagramOut.model_construct(peer=h.peer, data=reply))

    @handles(WgLiveIndexesRequest)
    def on_indexes_request(self, msg: WgLiveIndexesRequest) -> None:
        self._published_indexes = -1
        self._publish_indexes()

    def _publish_indexes(self) -> None:
        """Tell magicsock our receiver indexes if they changed since it last heard (before any
        datagram that could make a peer use a new one: same sender, same mailbox, in order)."""
        device = self.device
        if device.index_version == self._published_indexes:
            return
        m = self._magicsock or self._ref(self._magicsock_name)
        self._magicsock = m
        if m is None:
            return
        try:
            m.tell(WgLiveIndexes(indexes=tuple(sorted(device.live_indexes()))))
        except (ActorStopped, MailboxFull, UnhandledMessage):
            return  # not published: the next flush tries again
        self._published_indexes = device.index_version

    @handles(WgTick)
    def on_tick(self, msg: WgTick) -> None:
        self._timer = None
        self._timer_at = None
        self.device.tick(self.clock.monotonic())
        self._flush()

    @handles(GetWgStatus)
    def on_status(self, msg: GetWgStatus) -> WgStatus:
        peers = []
        for public in self.device.peers():
            peer = self.device.peer(public)
            assert peer is not None
            peers.append(WgPeerStatus(
                node_key=public.to_text(), last_handshake=peer.last_handshake,
                has_session=peer.keypairs.current is not None,
            ))
        return WgStatus(
            peers=peers, device_drops={**self.device.drops, **self.drops},
            filter_drops=dict(self.filter.drops),
            packets_in=self.packets_in, packets_to_flows=self.packets_to_flows,
            flow_routes=len(self._routes), packets_out=self.packets_out,
            work=dict(self.device.work), handshake_queue=len(self._handshakes),
            handshake_queue_bytes=self._handshake_bytes,
            under_load=self._under_load_until > self.clock.monotonic(),
            invalid_packet_filter=self.invalid_packet_filter,  # 21h
        )

    def _ref(self, name: str) -> ActorRef | None:
        return self.lookup(name)

    def _flush(self) -> None:
        device = self.device
        new_indexes = device.index_version != self._published_indexes
        if new_indexes:
            self._publish_indexes()
        out = device.datagrams_to_send()
        if out:
            m = self._magicsock or self._ref(self._magicsock_name)
            self._magicsock = m
            if m is None:
                device.drops["no_magicsock"] += len(out)
            else:
                try:
                    self._send_datagrams(m, out, lanes=not new_indexes)
                except MailboxFull:  # magicsock stayed full for its whole block timeout: a lost burst,
                    device.drops["magicsock_full"] += 1  # not an engine crash (TCP resends it)
                self.packets_out += len(out)
        packets = device.received_packets()
        if packets:
            self._capture(CapturePath.FROM_PEER, tuple(pkt for _, pkt in packets))
            self._receive_plain(packets)
        if log.isEnabledFor(logging.DEBUG):  # handshake events: status shows them; here, a debug line
            for peer, ev in device.events():
                log.debug("peer %s: %s", peer.short_string(), type(ev).__name__)
        else:
            device.events()
        self._arm_timer()

    def _capture(self, path: CapturePath, packets: tuple[bytes, ...]) -> None:
        """Copy plaintext to the pcap writer if one runs (Go tsnet ``CapturePcap``); never waits."""
        writer = self.lookup(self._capture_name)
        if writer is None:
            return
        with contextlib.suppress(ActorStopped, MailboxFull):
            writer.tell(CapturedPackets.model_construct(path=int(path), when=self.clock.time(),
                                                        packets=packets))

    def _receive_plain(self, packets: list[tuple[NodePublic, bytes]]) -> None:
        """Filter decrypted packets, then hand each to its flow actor if the netstack published a
        route for its 4-tuple (one ``FlowPacketsIn`` per flow per burst), the rest to the netstack.

        The filter's header summary is the only parse here and it gives the route key too. A route
        whose flow has ended (its tell fails) is forgotten and its packets go to the netstack, which
        answers them as the Stack does for a closed or TIME_WAIT 4-tuple.

        Once per burst: an IPv4 TCP packet (20-byte header, not a fragment, long enough for the TCP
        header) whose addresses, ports and TCP flags byte equal the previous one's has the same
        summary, so the same verdict and route (``Filter.check`` is a function of the summary and
        the filter, which does not change within a call): those are reused, not recomputed.
        """
        flt = self.filter
        drops, check, routes = flt.drops, flt.check, self._routes
        to_sink: list[bytes] = []
        by_flow: dict[RouteKey, list[bytes]] = {}
        last: bytes | None = None  # pkt[12:24] of the last IPv4 TCP packet summarized here ...
        last_flags = -1  # ... its TCP flags byte,
        last_reason: str | None = None  # its verdict,
        last_flow: list[bytes] | None = None  # and its flow's list (None: to the netstack)
        for _, pkt in packets:
            if last is not None and len(pkt) >= 34 and pkt[0] == 0x45 and pkt[9] == PROTO_TCP \
                    and not (pkt[6] & 0x3F or pkt[7]) and pkt[33] == last_flags and pkt[12:24] == last:
                if last_reason is not None:
                    drops[last_reason] += 1
                elif last_flow is not None:
                    last_flow.append(pkt)
                else:
                    to_sink.append(pkt)
                continue
            try:  # Filter.run_in, keeping the summary
                p = summarize(pkt)
            except FilterParseError as e:
                drops["fragment" if e.detail == "fragment" else "junk"] += 1
                continue
            reason = check(p)
            same = p.proto == PROTO_TCP and pkt[0] == 0x45  # summarize checked the rest
            last = pkt[12:24] if same else None
            last_flags, last_reason, last_flow = p.tcp_flags, reason, None
            if reason is not None:
                drops[reason] += 1
                continue
            if routes and p.proto == PROTO_TCP:
                key = (p.version, p.src, p.sport, p.dst, p.dport)
                if key in routes:
                    got = by_flow.get(key)
                    if got is None:
                        got = by_flow[key] = [pkt]
                    else:
                        got.append(pkt)
                    last_flow = got
                    continue
            to_sink.append(pkt)
        passed = len(to_sink)
        for key, pkts in by_flow.items():
            passed += len(pkts)
            try:
                routes[key].tell(FlowPacketsIn.model_construct(packets=tuple(pkts)))
                self.packets_to_flows += len(pkts)
            except ActorStopped:  # the flow ended: the netstack's remove is on its way
                del routes[key]
                to_sink.extend(pkts)
            except MailboxFull:  # as a full NIC ring: TCP retransmits
                self.drops["flow_mailbox_full"] = self.drops.get("flow_mailbox_full", 0) + len(pkts)
        flt.accepted += passed
        if to_sink:
            if self._routes_wanted:
                self._routes_wanted = not self._ask_routes()
            sink = self._sink or self._ref(self._sink_name)
            self._sink = sink
            if sink is None:
                self.device.drops["no_sink"] += len(to_sink)
                passed -= len(to_sink)
            else:
                self._deliver(sink, tuple(to_sink))
        self.packets_in += passed

    def _to_service(self, packets: tuple[bytes, ...]) -> None:
        """Packets to quad-100 never enter the tunnel: the node's own resolver answers them."""
        ref = self.lookup(self._service_name) if self._service_name else None
        try:
            if ref is None:
                raise ActorStopped(str(self._service_name))
            ref.tell(IpPacketsIn.model_construct(packets=packets))
        except (ActorStopped, MailboxFull):
            self.drops["service_unavailable"] = self.drops.get("service_unavailable", 0) + len(packets)

    def _deliver(self, sink: ActorRef, packets: tuple[bytes, ...]) -> None:
        """To the netstack: a burst as one ``IpPacketsIn`` (one mailbox hop and wakeup)."""
        if len(packets) > 1 and self._sink_batches:
            try:
                sink.tell(IpPacketsIn.model_construct(packets=packets))
                return
            except UnhandledMessage:  # a sink without the burst message (test rigs)
                self._sink_batches = False
        for pkt in packets:
            sink.tell(IpPacketIn.model_construct(data=pkt))

    def _send_datagrams(self, m: ActorRef, out: list[tuple[NodePublic, bytes | bytearray]], *,
                        lanes: bool = True) -> None:
        """One message per run of datagrams to the same peer (a burst costs one mailbox hop); with
        ``lanes``, a direct-only or DERP-only peer's run is written on its lane instead.

        Messages on this hot path are built with ``model_construct``: the fields are ours and already
        typed, so pydantic's validation would only repeat what the types say (they still serialise).
        """
        texts = self._texts
        direct, derp = (self._direct, self._derp) if lanes else ({}, {})
        now = self.clock.monotonic() if direct or derp else 0.0
        i, n = 0, len(out)
        while i < n:
            public = out[i][0]
            j = i + 1
            while j < n and out[j][0] == public:
                j += 1
            text = texts.get(public) or public.to_text()
            if direct and self._send_direct(m, text, [d for _, d in out[i:j]], now):
                i = j
                continue
            if derp and self._send_derp(m, text, out[i:j], now):
                i = j
                continue
            if j - i > 1 and self._magicsock_batches:
                datas = tuple(bytes(d) for _, d in out[i:j])
                try:
                    m.tell(WgDatagramsOut.model_construct(peer=text, datas=datas))
                    i = j
                    continue
                except UnhandledMessage:  # a magicsock without the burst message (test rigs)
                    self._magicsock_batches = False
            for _, d in out[i:j]:
                m.tell(WgDatagramOut.model_construct(peer=text, data=bytes(d)))
            i = j

    def _send_direct(self, m: ActorRef, peer: str, datas: list[bytes | bytearray], now: float) -> bool:
        """Write a burst to ``peer`` on magicsock's socket ourselves, if magicsock published it as
        direct-only and that still holds now; False: the caller tells magicsock (which then also
        decides about DERP). Magicsock hears of the activity at most every half second."""
        path = self._direct.get(peer)
        if path is None or now > path[1]:
            return False
        res = udp_lane.send_burst(m, peer, path[0], datas, self._direct_gso)
        if res is None:
            return False
        if self._direct_gso and not res.gso:
            self._direct_gso, self._direct_gso_failed = False, True
        self.datagrams_direct += len(datas)
        if now - self._direct_noted.get(peer, float("-inf")) >= DIRECT_ACTIVE_INTERVAL:
            self._direct_noted[peer] = now
            self._tell_magicsock(WgDirectActive(peer=peer))
        return True

    def _send_derp(self, m: ActorRef, peer: str, run: list[tuple[NodePublic, bytes | bytearray]],
                   now: float) -> bool:
        """Tell a burst to ``peer``'s DERP client ourselves, if magicsock published the peer as
        DERP-only (one hop fewer than through the router, which would do the same), or write it on
        that client's connection ourselves when the client published it (``derp_writer``, no hop);
        False: the caller tells magicsock. A full client mailbox or writer drops the burst, counted
        as the router does."""
        name = self._derp.get(peer)
        if name is None:
            return False
        ref = self.lookup(name)
        if ref is None:
            return False
        lane = derp_writer.send(ref, peer, run[0][0].raw, [d for _, d in run])  # its socket, if published
        if lane is not None:
            refused, nbytes, count = lane, sum(len(d) for _, d in run), len(run)
        else:
            datas = tuple(bytes(d) for _, d in run)
            refused, nbytes, count = 0, sum(map(len, datas)), len(datas)
            try:
                ref.tell(DerpSends.model_construct(peer=peer, datas=datas))
            except MailboxFull:  # the relay connection stalled past the block timeout
                refused = len(datas)
            except (ActorStopped, UnhandledMessage):
                return False
        udp_lane.count_derp(m, peer, nbytes, refused)
        self.datagrams_derp += count
        if now - self._direct_noted.get(peer, float("-inf")) >= DIRECT_ACTIVE_INTERVAL:
            self._direct_noted[peer] = now
            self._tell_magicsock(WgDirectActive(peer=peer))
        return True

    def _arm_timer(self) -> None:
        deadline = self.device.next_deadline()
        if deadline is None:
            return
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        now = self.clock.monotonic()
        self._timer_at = deadline
        self._timer = self.send_after(max(0.0, deadline - now) + _TIMER_SLACK, WgTick())
