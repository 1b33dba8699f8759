"""Messages of the MagicDNS resolver actor (``dns``): one DNS query in wire format, its answer out.

The query and answer travel as DNS wire bytes (RFC 1035), not parsed records, so every front end
(UDP and TCP on 100.100.100.100:53, DoH on the peerAPI, ``ActorDevice.lookup``) hands the resolver
the same thing and a trace replays it exactly. ``src`` is who asked (``ip:port`` on the tailnet, or
``local`` for the app itself): the resolver may answer differently per source (an exit-node client's
DoH) and counts per front end.
"""

from __future__ import annotations

from typing import Literal

from pytsnet.messages.base import Message, Request
from pytsnet.messages.peers import PeerInfo

__all__ = ["DnsAnswer", "DnsForwardDone", "DnsNetmap", "DnsQuery", "DnsRecord", "DnsSettings", "DnsSpawn",
           "DnsStatus", "DnsStatusRequest", "DnsTick"]


class DnsAnswer(Message, tag="dns.answer"):
    """The resolver's answer: a whole DNS message (RCODE inside: NXDOMAIN, SERVFAIL, REFUSED...)."""

    response: bytes


class DnsQuery(Request[DnsAnswer], tag="dns.query"):
    """A DNS query message in wire format, from one of the resolver's front ends."""

    query: bytes
    transport: Literal["udp", "tcp", "doh", "local"]
    src: str = "local"


class DnsRecord(Message):
    """One ``DNSConfig.ExtraRecords`` entry: ``name`` → ``value`` (an IP), ``type`` "", "A" or "AAAA"."""

    name: str
    type: str = ""
    value: str


class DnsSettings(Message):
    """The netmap's ``tailcfg.DNSConfig``, as much of it as the resolver uses."""

    proxied: bool = False
    """MagicDNS on: the tailnet domain is answered here (unknown names NXDOMAIN), short names work."""
    domains: tuple[str, ...] = ()
    """Search domains."""
    routes: dict[str, tuple[str, ...]] = {}
    """Split DNS: suffix → resolver addresses (``IP`` / ``IP:port``); empty = answered locally only."""
    cert_domains: tuple[str, ...] = ()
    extra_records: tuple[DnsRecord, ...] = ()


class DnsNetmap(Message, tag="dns.netmap"):
    """Bridge → ``dns`` after every netmap: who we are and the DNS config (peers come from the
    PeerTracker's ``PeersChanged``, the one place peers are admitted)."""

    self_node: PeerInfo
    settings: DnsSettings | None = None


class DnsExitNode(Message, tag="dns.exit_node"):
    """Bridge → ``dns`` when the exit node selection changes: names the tailnet does not answer go to
    the engaged exit node's peerAPI DoH (``http://<ip>:<port>/dns-query``, Go ``exitNodeCanProxyDNS``)
    instead of ``Config.fallback_resolvers``; while one is selected without DoH (unavailable, or no
    ``peerapi-dns-proxy`` service) they go nowhere (fail closed)."""

    selected: bool = False
    ip: str = ""
    """The exit node's tailnet IP (empty: no DoH to use)."""
    port: int = 0
    """Its peerAPI port."""


class DnsSpawn(Message, tag="dns.spawn"):
    """The resolver actor's spawn message: its upstreams and its neighbours, by name."""

    fallback_resolvers: tuple[str, ...] = ()
    """``Config.fallback_resolvers``: where names the tailnet does not answer go (empty: NXDOMAIN)."""
    netstack: str = "netstack"
    """Where answers to quad-100 packets go (as inbound IP packets)."""
    peers: str = "peers"
    dataplane: str = "dataplane"
    forward_timeout: float = 2.0
    """Seconds each upstream gets before the next is tried (then SERVFAIL)."""
    max_forwards: int = 64
    """Forwards in flight at once (each is one worker thread); beyond, SERVFAIL."""
    max_tcp: int = 64
    """TCP connections to quad-100:53 at once; beyond, new ones are reset."""


class DnsForwardDone(Message, tag="dns.forward_done"):
    """A forward worker → the actor: what the upstream answered (None: every upstream failed)."""

    token: int
    incarnation: int
    response: bytes | None = None


class DnsTick(Message, tag="dns.tick"):
    """The actor's timer: the quad-100 stack's TCP timers are due."""


class DnsStatus(Message, tag="dns.status"):
    """Query/answer counters: the resolver's and its front ends' (``udp``/``tcp``/``local``/``doh``)."""

    counters: dict[str, int] = {}


class DnsStatusRequest(Request[DnsStatus], tag="dns.status_request"):
    pass
