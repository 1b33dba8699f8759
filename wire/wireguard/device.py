"""Many WireGuard peers behind one key, as a sans-IO device (device/device.go, indextable.go, allowedips.go).

A ``Device`` owns one ``Peer`` per remote node key and adds what only a multi-peer layer can do:
a receiver-index table (indices unique across all peers, so a transport message finds its peer in
one lookup), responder-side peer lookup by the static key inside a handshake initiation, the
AllowedIPs routing table (longest-prefix match, used both to pick the peer for an outbound packet
and to refuse inbound packets whose source the sending peer may not use), and one aggregated
deadline. Like ``Peer`` it never raises on network input: drops are counted by reason.

Handshake initiations are authenticated before any DH as wireguard-go's ``RoutineHandshake`` does:
mac1 always; ``under_load`` (the driver's call: its handshake queue is backed up) also needs a mac2
from a cookie we issued to that source, else the source gets a cookie reply (``cookie_replies()``) and
no DH; then the source's budget (``RateLimiter``). ``work`` counts what was spent (``handshake_dh``,
``cookie_replies``). ``live_indexes()`` and ``index_version`` let the driver publish the receiver
indexes in use, so transport for any other index can be dropped before it is even queued.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pytsnet.wire.errors import CryptoError, ParseError
from pytsnet.wire.keys import NodePrivate, NodePublic
from pytsnet.wire.wireguard import handshake, messages
from pytsnet.wire.wireguard.constants import (
    MESSAGE_COOKIE_REPLY_TYPE,
    MESSAGE_INITIATION_TYPE,
    MESSAGE_RESPONSE_TYPE,
    MESSAGE_TRANSPORT_TYPE,
    TAILSCALE_PERSISTENT_KEEPALIVE,
)
from pytsnet.wire.wireguard.cookie import CookieChecker
from pytsnet.wire.wireguard.peer import Event, KeyMaterialZeroed, Peer
from pytsnet.wire.wireguard.ratelimit import RateLimiter

_U32 = struct.Struct("<I")
_INITIATION_HEADER = bytes([MESSAGE_INITIATION_TYPE, 0, 0, 0])
_TRANSPORT_HEADER = bytes([MESSAGE_TRANSPORT_TYPE, 0, 0, 0])
_MAX_INDEX_DRAWS = 64  # 2^32 indices, a few per peer: a collision streak this long means a broken RNG

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """One peer as the netmap describes it: its node key and the prefixes it may use as source
    (its tailnet addresses). ``persistent_keepalive`` defaults to Tailscale's 25 s so that a
    tunnel relayed through DERP, where no NAT mapping keeps it warm, is never left to lapse."""

    public: NodePublic
    allowed_ips: tuple[str, ...] = ()
    persistent_keepalive: float = TAILSCALE_PERSISTENT_KEEPALIVE


class AllowedIPs:
    """Longest-prefix match from IP address to peer: one dict per (family, prefix length).

    Tailnet peers are mostly /32 and /128 routes, so the common lookup is a single dict probe.
    Each family keeps its tables as (shift, table) pairs, longest prefix first, so a lookup builds
    no key tuple per probe.
    """

    def __init__(self) -> None:
        self._tables: dict[tuple[int, int], dict[int, bytes]] = {}
        self._by_version: dict[int, list[tuple[int, dict[int, bytes]]]] = {4: [], 6: []}

    def clear(self) -> None:
        self._tables.clear()
        self._by_version = {4: [], 6: []}

    def insert(self, net: IPNetwork, peer: bytes) -> None:
        key = (net.version, net.prefixlen)
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = {}
            bits = net.max_prefixlen
            probes = self._by_version[net.version]
            probes.append((bits - net.prefixlen, table))
            probes.sort(key=lambda probe: probe[0])  # smallest shift = longest prefix first
        table[int(net.network_address)] = peer

    def lookup(self, version: int, addr: int) -> bytes | None:
        for shift, table in self._by_version[version]:
            peer = table.get(addr >> shift << shift)
            if peer is not None:
                return peer
        return None


_V4_ENDS = struct.Struct("!12xII")


def ip_endpoints(packet: bytes | bytearray | memoryview) -> tuple[int, int, int] | None:
    """(version, source, destination) of an IP packet as integers, or None if it is not IPv4/IPv6."""
    n = len(packet)
    if n >= 20 and packet[0] >> 4 == 4:
        src, dst = _V4_ENDS.unpack_from(packet)
        return 4, src, dst
    if n >= 40 and packet[0] >> 4 == 6:
        return 6, int.from_bytes(packet[8:24], "big"), int.from_bytes(packet[24:40], "big")
    return None


class Device:
    """All peers of one node key. Inputs carry ``now``; outputs are drained by the driver."""

    def __init__(
        self,
        private: NodePrivate,
        *,
        mtu: int = 0,
        unix_time_offset: float = 0.0,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.private = private
        self.public = private.public()
        self._private_raw = private.raw
        self._mtu = mtu
        self._unix_offset = unix_time_offset
        self._random = random_bytes
        self._checker = CookieChecker(self.public.raw, random_bytes)
        self._peers: dict[bytes, Peer] = {}
        self._configs: dict[bytes, PeerConfig] = {}
        self._indices: dict[int, bytes] = {}  # local receiver index -> peer raw key
        self._peer_indices: dict[bytes, set[int]] = {}
        self._last_index: dict[bytes, int] = {}
        self.routes = AllowedIPs()
        self._outbox: list[tuple[NodePublic, bytes | bytearray]] = []
        self._inbox: list[tuple[NodePublic, bytes]] = []
        self._events: list[tuple[NodePublic, Event]] = []
        self._cookie_out: list[bytes] = []  # cookie replies to the source of the datagram just received
        self.drops: Counter[str] = Counter()
        self.work: Counter[str] = Counter()
        self.rate = RateLimiter()
        self.index_version = 0  # +1 whenever the set of live receiver indexes changes

    # --- configuration -----------------------------------------------------------------------

    def set_peers(self, configs: Iterable[PeerConfig]) -> None:
        """Replace the peer set: new peers are added, missing ones forgotten with their indices and
        sessions, and kept peers keep their sessions (a netmap update must not force re-handshakes)."""
        wanted = {c.public.raw: c for c in configs}
        for raw in [r for r in self._peers if r not in wanted]:
            del self._peers[raw]
            del self._configs[raw]
            for idx in self._peer_indices.pop(raw, set()):
                self._indices.pop(idx, None)
                self.index_version += 1
            self._last_index.pop(raw, None)
        for raw, cfg in wanted.items():
            peer = self._peers.get(raw)
            if peer is None:
                self._peers[raw] = Peer(
                    self.private,
                    cfg.public,
                    persistent_keepalive=cfg.persistent_keepalive,
                    mtu=self._mtu,
                    unix_time_offset=self._unix_offset,
                    random_bytes=self._random,
                    allocate_index=self._index_allocator(raw),
                    cookie_checker=self._checker,
                )
                self._peer_indices[raw] = set()
            else:
                peer.timers.persistent_keepalive = cfg.persistent_keepalive
            self._configs[raw] = cfg
        self.routes.clear()
        for raw, cfg in wanted.items():
            for prefix in cfg.allowed_ips:
                try:
                    self.routes.insert(ipaddress.ip_network(prefix, strict=False), raw)
                except ValueError:
                    self.drops["bad_allowed_ip"] += 1

    def peer(self, public: NodePublic) -> Peer | None:
        return self._peers.get(public.raw)

    def peers(self) -> list[NodePublic]:
        return [c.public for c in self._configs.values()]

    def _index_allocator(self, raw: bytes) -> Callable[[], int]:
        def allocate() -> int:
            for _ in range(_MAX_INDEX_DRAWS):
                idx: int = _U32.unpack(self._random(4))[0]
                if idx not in self._indices:
                    break
            else:
                raise RuntimeError("random_bytes keeps returning used receiver indices")
            self._prune_indices(raw, keep=idx)
            self._indices[idx] = raw
            self.index_version += 1
            self._peer_indices[raw].add(idx)
            self._last_index[raw] = idx
            return idx

        return allocate

    def _prune_indices(self, raw: bytes, keep: int | None = None) -> None:
        """Free indices the peer no longer answers to: live are its keypairs' and its newest
        allocation (a pending initiation is always the newest; answering one clears it)."""
        peer = self._peers.get(raw)
        owned = self._peer_indices.get(raw)
        if peer is None or owned is None:
            return
        kps = peer.keypairs
        live = {kp.local_index for kp in (kps.current, kps.previous, kps.next) if kp is not None}
        if keep is not None:
            live.add(keep)
        else:
            last = self._last_index.get(raw)
            if last is not None:
                live.add(last)
        for idx in owned - live:
            owned.discard(idx)
            if self._indices.get(idx) == raw:
                del self._indices[idx]
                self.index_version += 1

    def index_count(self) -> int:
        return len(self._indices)

    def live_indexes(self) -> frozenset[int]:
        """Every receiver index a peer answers to now (sessions and the pending initiation)."""
        return frozenset(self._indices)

    # --- outputs -----------------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[NodePublic, bytes | bytearray]]:
        out, self._outbox = self._outbox, []
        return out

    def received_packets(self) -> list[tuple[NodePublic, bytes]]:
        out, self._inbox = self._inbox, []
        return out

    def events(self) -> list[tuple[NodePublic, Event]]:
        out, self._events = self._events, []
        return out

    def cookie_replies(self) -> list[bytes]:
        """Cookie replies owed to the source of the last ``receive`` (no peer is known for them:
        the driver sends them back the way that datagram came)."""
        out, self._cookie_out = self._cookie_out, []
        return out

    def next_deadline(self) -> float | None:
        best: float | None = None
        for peer in self._peers.values():
            d = peer.timers.next_deadline()
            if d is not None and (best is None or d < best):
                best = d
        return best

    # --- inputs ------------------------------------------------------------------------------

    def send(self, packet: bytes, now: float) -> NodePublic | None:
        """Encrypt an IP packet to the peer whose AllowedIPs hold its destination; returns that
        peer, or None when there is no route (dropped and counted, never sent anywhere else)."""
        ends = ip_endpoints(packet)
        if ends is None:
            self.drops["not_ip"] += 1
            return None
        raw = self.routes.lookup(ends[0], ends[2])
        if raw is None:
            self.drops["no_route"] += 1
            return None
        peer = self._peers[raw]
        peer.send(packet, now)
        self._collect(raw, peer)
        return peer.remote_public

    def send_many(self, packets: Iterable[bytes], now: float) -> None:
        """``send`` each packet in order; a run of packets to one peer is encrypted in one
        ``Peer.send_many`` call (the per-call lookups and the output collection are paid once)."""
        run: list[bytes] = []
        run_raw: bytes | None = None
        routes, drops = self.routes, self.drops
        for packet in packets:
            ends = ip_endpoints(packet)
            if ends is None:
                drops["not_ip"] += 1
                continue
            raw = routes.lookup(ends[0], ends[2])
            if raw is None:
                drops["no_route"] += 1
                continue
            if raw != run_raw and run:
                self._send_run(run_raw, run, now)  # type: ignore[arg-type]
                run = []
            run_raw = raw
            run.append(packet)
        if run:
            self._send_run(run_raw, run, now)  # type: ignore[arg-type]

    def _send_run(self, raw: bytes, packets: list[bytes], now: float) -> None:
        peer = self._peers[raw]
        peer.send_many(packets, now)
        self._collect(raw, peer)

    def send_to(self, public: NodePublic, packet: bytes, now: float) -> bool:
        """Send to a named peer (keepalives, tests); False if it is not configured."""
        peer = self._peers.get(public.raw)
        if peer is None:
            self.drops["unknown_peer"] += 1
            return False
        peer.send(packet, now)
        self._collect(public.raw, peer)
        return True

    def initiate(self, public: NodePublic, now: float, *, force: bool = False) -> bool:
        """Start a handshake with a named peer now; False if it is not configured."""
        peer = self._peers.get(public.raw)
        if peer is None:
            return False
        peer.initiate(now, force=force)
        self._collect(public.raw, peer)
        return True

    def receive(
        self, datagram: bytes, now: float, *, src: bytes = b"", under_load: bool = False,
        rate_key: bytes | None = None,
    ) -> NodePublic | None:
        """Handle one datagram from the network; returns the peer it belonged to (so the caller
        can learn that peer's endpoint), or None if it was dropped before reaching a peer.
        ``src`` keys cookies (the sender's address), ``rate_key`` the handshake budget (its IP;
        default ``src``)."""
        if datagram[:4] == _INITIATION_HEADER:
            key = src if rate_key is None else rate_key
            return self._receive_initiation(datagram, now, src, under_load, key)
        raw = self._lookup(datagram)
        if raw is None:
            return None
        peer = self._peers[raw]
        before = peer.dropped
        peer.receive(datagram, now, src=src, under_load=under_load)
        if peer.dropped != before:
            self.drops["peer_rejected"] += peer.dropped - before
        self._collect(raw, peer)
        return peer.remote_public

    def receive_many(self, datagrams: Iterable[bytes], now: float, *, src: bytes = b"") -> None:
        """``receive`` each datagram in order (not under load); a run of consecutive transport
        messages for one peer goes to one ``Peer.receive_many`` and one output collection.

        Only transport messages are batched: they never add receiver indexes, so looking up a
        run's indexes before decrypting it finds what per-datagram calls would. (A key rotation
        inside a run can retire an index a later datagram of the run names: that datagram is
        dropped either way, counted under ``peer_rejected`` rather than ``unknown_index``.)"""
        run: list[bytes] = []
        run_raw: bytes | None = None
        indices = self._indices
        for datagram in datagrams:
            if len(datagram) >= 8 and datagram[:4] == _TRANSPORT_HEADER:
                raw = indices.get(_U32.unpack_from(datagram, 4)[0])
                if raw is not None:
                    if raw != run_raw and run:
                        self._receive_run(run_raw, run, now)  # type: ignore[arg-type]
                        run = []
                    run_raw = raw
                    run.append(datagram)
                    continue
            if run:
                self._receive_run(run_raw, run, now)  # type: ignore[arg-type]
                run = []
            self.receive(datagram, now, src=src)
        if run:
            self._receive_run(run_raw, run, now)  # type: ignore[arg-type]

    def _receive_run(self, raw: bytes, datagrams: list[bytes], now: float) -> None:
        peer = self._peers[raw]
        before = peer.dropped
        peer.receive_many(datagrams, now)
        if peer.dropped != before:
            self.drops["peer_rejected"] += peer.dropped - before
        self._collect(raw, peer)

    def _lookup(self, datagram: bytes) -> bytes | None:
        n = len(datagram)
        if n < 4 or datagram[1:4] != b"\x00\x00\x00":
            self.drops["not_wireguard"] += 1
            return None
        t = datagram[0]
        if t in (MESSAGE_TRANSPORT_TYPE, MESSAGE_COOKIE_REPLY_TYPE):
            off = 4
        elif t == MESSAGE_RESPONSE_TYPE:
            off = 8
        else:
            self.drops["not_wireguard"] += 1
            return None
        if n < off + 4:
            self.drops["truncated"] += 1
            return None
        raw = self._indices.get(_U32.unpack_from(datagram, off)[0])
        if raw is None:
            self.drops["unknown_index"] += 1
        return raw

    def _receive_initiation(
        self, datagram: bytes, now: float, src: bytes, under_load: bool, rate_key: bytes
    ) -> NodePublic | None:
        """The responder's side, cheapest check first: mac1; under load mac2 (else a cookie reply)
        and the source's budget; only then the DH that reveals the initiator's static key, which
        must be a configured peer's. The peer gets the decrypted initiation (no second DH)."""
        try:
            msg = messages.parse_initiation(datagram)
        except ParseError:
            self.drops["bad_initiation"] += 1
            return None
        checker = self._checker
        if not checker.check_mac1(datagram):
            self.drops["bad_initiation"] += 1
            return None
        if under_load:
            if not checker.check_mac2(datagram, src, now):
                self._cookie_out.append(checker.create_reply(datagram, msg.sender, src, now))
                self.work["cookie_replies"] += 1
                return None
            if not self.rate.allow(rate_key, now):
                self.drops["handshake_rate_limited"] += 1
                return None
        self.work["handshake_dh"] += 1
        try:
            consumed = handshake.consume_initiation(self._private_raw, msg)
        except CryptoError:
            self.drops["bad_initiation"] += 1
            return None
        raw = consumed.remote_static
        peer = self._peers.get(raw)
        if peer is None:
            self.drops["unknown_peer"] += 1
            return None
        try:
            peer.accept_initiation(consumed, now)
        except CryptoError:
            self.drops["peer_rejected"] += 1
        self._collect(raw, peer)
        return peer.remote_public

    def tick(self, now: float) -> None:
        """Run every peer timer that is due."""
        for raw, peer in self._peers.items():
            d = peer.timers.next_deadline()
            if d is not None and d <= now:
                peer.tick(now)
                self._collect(raw, peer)

    def _collect(self, raw: bytes, peer: Peer) -> None:
        public = peer.remote_public
        out = peer.datagrams_to_send()
        if out:
            self._outbox.extend((public, d) for d in out)
        packets = peer.received_packets()
        if packets:
            lookup = self.routes.lookup
            append = self._inbox.append
            for pkt in packets:
                ends = ip_endpoints(pkt)
                if ends is None or lookup(ends[0], ends[1]) != raw:
                    self.drops["source_not_allowed"] += 1  # anti-spoofing (device/receive.go)
                    continue
                append((public, pkt))
        events = peer.events()
        if events:
            for ev in events:
                self._events.append((public, ev))
                if isinstance(ev, KeyMaterialZeroed):
                    self._prune_indices(raw)
