"""Where one DERP connection's received packets go: disco to the DiscoPinger, WireGuard to the engine.

Issue 14's receive lane: the connection's reader thread (``DerpLink``) frames the stream with a
``RecvSplitter`` and calls ``DerpInbound.packets`` with each read's RecvPackets itself, as the UDP
reader hands its bursts to the engine, instead of telling the ``DerpClient`` actor the bytes and
the actor telling the engine (one thread hand-off and one mailbox fewer per read). The actor keeps
the connection (handshake, pings and pongs, PeerGone, the read deadline, sends) and calls the same
``packets`` for the RecvPackets it still parses itself (before the handshake is complete), so the
demultiplexing, admission, route notes and counters are one piece of code whichever thread runs it.
One connection's reader and its actor call ``packets`` for different parts of the stream (before and
after the handshake); the counters and the key cache are plain containers shared by both, written
under the GIL (a packet's count may be lost in the moment the split turns on; no other state is).
"""

from __future__ import annotations

from collections.abc import Callable

from pytsnet.actors.magicsock.wg_sink import WgSinkDelivery
from pytsnet.actors.runtime import ActorRef
from pytsnet.messages.base import Message
from pytsnet.messages.magicsock import DerpRoute, DiscoIn, MagicsockSpawn
from pytsnet.wire import disco
from pytsnet.wire.derp.recv_split import RawPacket
from pytsnet.wire.keys import NodePublic
from pytsnet.wire.magicsock.addr import derp_addr

MAX_KEY_CACHE = 4096  # bound on the key cache: a relay may send from any key


class DerpInCounters:
    """Bytes received over one region, kept across its connections (the ``DerpClient``'s status)."""

    __slots__ = ("bytes_in", "names", "unknown_sources")

    def __init__(self) -> None:
        self.bytes_in: dict[str, int] = {}  # per admitted peer only: a relay may admit anyone
        self.unknown_sources = 0
        self.names: dict[bytes, str] = {}  # raw key -> peer text, made once (not per packet)


class DerpInbound:
    """One connection's received packets to their consumers (see the module docstring)."""

    def __init__(self, config: MagicsockSpawn, region_id: int, conn_id: int, counters: DerpInCounters,
                 admitted: Callable[[], frozenset[str]], lookup: Callable[[str], ActorRef | None],
                 tell_named: Callable[[str, Message], bool]) -> None:
        self.region_id = region_id
        self.conn_id = conn_id
        self.counters = counters
        self._admitted = admitted
        self._lookup = lookup
        self._tell = tell_named
        self._disco = config.name("disco")
        self._udp = config.name("udp")
        self._sink = config.wg_sink
        self._src = derp_addr(region_id)
        self.routed: set[str] = set()
        """Admitted peers noted to the router on this connection (the actor removes one on PeerGone)."""
        self.delivery = WgSinkDelivery()

    def packets(self, packets: list[RawPacket]) -> None:
        """Demultiplex a read's RecvPackets like Go ``processDERPReadResult``: disco → DiscoPinger,
        the rest → the engine as one ``WgDatagramsIn(via="derp")``; count bytes per admitted source
        and note each admitted source's first packet on this connection to the router (``DerpRoute``,
        Go ``addDerpPeerRoute``)."""
        wg: list[bytes] = []
        peers: list[str | None] = []
        admitted = self._admitted()
        src_last = b""  # consecutive packets from one key (the common case) share its lookups
        peer = ""
        known = False
        nbytes = 0
        for src, packet in packets:
            if src != src_last:
                self._count(peer, known, nbytes)
                peer, known = self._source(src, admitted)
                src_last, nbytes = src, 0
            nbytes += len(packet)
            if len(packet) >= disco.HEADER_LEN and packet.startswith(disco.MAGIC):
                self._tell(self._disco, DiscoIn(data=packet, src=self._src, derp_region=self.region_id,
                                                derp_src=peer))
            else:
                wg.append(packet)
                peers.append(peer)
        self._count(peer, known, nbytes)
        if wg:
            self.delivery.deliver(self._lookup(self._sink), "derp", wg, [self._src] * len(wg), peers)

    def _source(self, src: bytes, admitted: frozenset[str]) -> tuple[str, bool]:
        names = self.counters.names
        peer = names.get(src)
        if peer is None:  # made once per key (not per packet)
            if len(names) >= MAX_KEY_CACHE:
                names.clear()
            peer = names[src] = NodePublic.from_raw(src).to_text()
        if peer not in admitted:
            return peer, False
        if peer not in self.routed:
            self.routed.add(peer)
            self._tell(self._udp, DerpRoute(peer=peer, region=self.region_id, conn=self.conn_id))
        return peer, True

    def _count(self, peer: str, known: bool, n: int) -> None:
        """Per admitted peer, else one sum (no per-key state for strangers; the engine drops their
        packets as from unknown peers)."""
        if not n:
            return
        c = self.counters
        if known:
            c.bytes_in[peer] = c.bytes_in.get(peer, 0) + n
        else:
            c.unknown_sources += n
