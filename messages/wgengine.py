"""Messages of the WireGuard engine (half W of the data plane; see the data-plane contract).

``IpPacketOut``/``IpPacketIn`` cross between the netstack and the engine. ``WgConfig`` carries what
the engine needs from the netmap: our own addresses, the peers and the packet filter
(``packet_filter=None`` means no filter has arrived: nothing new may come in). The engine also
accepts the PeerTracker's ``PeersChanged`` for peer-set updates.

``WgDatagramIn``/``WgDatagramOut`` belong to magicsock (``messages/magicsock.py``) and are re-exported
here: one definition, one tag.
"""

from __future__ import annotations

from pytsnet.messages.base import Message, Request
from pytsnet.messages.magicsock import (
    ITEM_OVERHEAD,
    WgDatagramIn,
    WgDatagramOut,
    WgDatagramsIn,
    WgDatagramsOut,
)
from pytsnet.messages.redact import Payload
from pytsnet.wire.tailcfg.filter import FilterRule

__all__ = ["GetWgStatus", "IpPacketIn", "IpPacketOut", "IpPacketsIn", "IpPacketsOut", "WgCapGrant",
           "WgConfig", "WgDatagramIn", "WgDatagramOut", "WgDatagramsIn", "WgDatagramsOut", "WgFilterRule",
           "WgHandshakeWork", "WgNetPortRange", "WgPeer", "WgPeerStatus", "WgPortRange", "WgStatus", "WgTick"]


class IpPacketOut(Message, tag="wgengine.ip_out"):
    """netstack -> W: an IP packet to route through the tunnel by its destination address."""

    data: Payload

    def payload_size(self) -> int:
        return len(self.data) + ITEM_OVERHEAD


class IpPacketIn(Message, tag="wgengine.ip_in"):
    """W -> netstack: a decrypted packet that passed the packet filter."""

    data: Payload

    def payload_size(self) -> int:
        return len(self.data) + ITEM_OVERHEAD


class IpPacketsOut(Message, tag="wgengine.ip_out_batch"):
    """netstack -> W: several ``IpPacketOut`` at once (one mailbox hop and wakeup for a burst)."""

    packets: tuple[Payload, ...]

    def payload_size(self) -> int:
        return sum(map(len, self.packets)) + ITEM_OVERHEAD * len(self.packets)


class IpPacketsIn(Message, tag="wgengine.ip_in_batch"):
    """W -> netstack: several ``IpPacketIn`` at once, in arrival order."""

    packets: tuple[Payload, ...]

    def payload_size(self) -> int:
        return sum(map(len, self.packets)) + ITEM_OVERHEAD * len(self.packets)


class WgPortRange(Message):
    First: int = 0
    Last: int = 65535


class WgNetPortRange(Message):
    IP: str
    Bits: int | None = None
    Ports: WgPortRange = WgPortRange()


class WgCapGrant(Message):
    """A ``tailcfg.CapGrant``'s destinations and capability names (``Caps`` plus the ``CapMap`` keys;
    the free-form values would not round-trip as a message and no check here reads them)."""

    Dsts: list[str] = []
    Caps: list[str] = []


class WgFilterRule(Message):
    """The packet-path part of ``tailcfg.FilterRule`` (same field names), and its ``CapGrant``
    names: peer capabilities such as Funnel's ingress grant (the packet path ignores them)."""

    SrcIPs: list[str] = []
    SrcBits: list[int] = []
    DstPorts: list[WgNetPortRange] = []
    IPProto: list[int] = []
    CapGrant: list[WgCapGrant] = []

    @classmethod
    def from_tailcfg(cls, rule: FilterRule) -> WgFilterRule:
        return cls(
            SrcIPs=list(rule.SrcIPs), SrcBits=list(rule.SrcBits), IPProto=list(rule.IPProto),
            DstPorts=[
                WgNetPortRange(IP=d.IP, Bits=d.Bits, Ports=WgPortRange(First=p.First, Last=p.Last))
                for d in rule.DstPorts
                for p in (d.Ports,)
            ],
            CapGrant=[WgCapGrant(Dsts=list(g.Dsts), Caps=sorted({*g.Caps, *g.CapMap}))
                      for g in rule.CapGrant],
        )


class WgPeer(Message):
    """One peer: node key text and the prefixes it may use as source (its tailnet addresses)."""

    node_key: str
    allowed_ips: list[str] = []


class WgConfig(Message, tag="wgengine.config"):
    """The engine's whole configuration; replaces the previous one (sessions of kept peers survive)."""

    addresses: list[str] = []
    """Our own tailnet addresses: inbound packets to anything else are dropped."""
    peers: list[WgPeer] = []
    packet_filter: list[WgFilterRule] | None = None
    """The netmap's PacketFilter (``WgFilterRule.from_tailcfg``); None: none received yet."""
    unlocked_allowed_ips: list[str] = []
    """Control's AllowedIPs of the Tailnet Lock ``UnsignedPeerAPIOnly`` peers: they may open TCP to our
    peerAPI port only, and a packet filter letting them reach anything is dropped whole (21h)."""


class WgTick(Message, tag="wgengine.tick"):
    """The engine's own timer: run the WireGuard timers that are due."""


class WgHandshakeWork(Message, tag="wgengine.handshake_work"):
    """W → W: work the next slice of the handshake queue."""


class WgPeerStatus(Message):
    node_key: str
    last_handshake: float | None = None
    has_session: bool = False


class WgStatus(Message, tag="wgengine.status"):
    """Reply to ``GetWgStatus``: per-peer session state and drop counters by reason."""

    peers: list[WgPeerStatus] = []
    device_drops: dict[str, int] = {}
    filter_drops: dict[str, int] = {}
    packets_in: int = 0
    packets_to_flows: int = 0
    """Of ``packets_in``: handed straight to a TCP flow actor (the fast path, ``FlowRoutes``)."""
    flow_routes: int = 0
    """TCP flows the engine can reach directly now."""
    packets_out: int = 0
    work: dict[str, int] = {}
    """What handshakes cost: ``handshake_dh`` (initiations that got a DH), ``cookie_replies``."""
    handshake_queue: int = 0
    handshake_queue_bytes: int = 0
    under_load: bool = False
    invalid_packet_filter: bool = False
    """The netmap's filter let an unsigned peerAPI-only peer in, so none is in force (Go's
    ``invalid-packet-filter`` health warning; 21h)."""


class GetWgStatus(Request[WgStatus], tag="wgengine.get_status"):
    pass


class CaptureClosed(Message, tag="wgengine.capture_closed"):
    """The pcap writer's answer to ``CloseCapture``: records written, and the write error if any."""

    records: int
    error: str = ""


class CloseCapture(Request[CaptureClosed], tag="wgengine.close_capture"):
    """Write what was captured before this message, then close the file (``PcapCapture.stop``).

    Stopping the actor alone would drop the bursts still in its mailbox: packets the app has already
    seen could be missing from the file."""


class CapturedPackets(Message, tag="wgengine.captured_packets"):
    """W -> the pcap writer: plaintext packets seen at ``path`` (``wire.pcap.CapturePath``) at Unix
    time ``when``."""

    path: int
    when: float
    packets: tuple[Payload, ...]
