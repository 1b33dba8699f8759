"""``PeerApiConnection``: one peerAPI TCP connection, its own actor (never restarted).

As Go's ``ServeConn``: the caller is identified once, by its source address, through the peer
table (admitted peers only) and our own node; an address that is no tailnet node's gets its
connection closed with no answer. Requests are parsed and answered by ``wire/peerapi.py`` (bounded
head and body; a malformed one is a 400 and the end of this connection only); ``/dns-query`` asks the
resolver (``DnsQuery(transport="doh")``). The read loop waits at most ``idle_timeout`` for bytes, a
request still arriving ``idle_timeout`` after its first byte and a write that the peer does not take
within it close the connection, so a silent, trickling or stalled peer holds a slot for a bounded time.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.reversename

from pytsnet.actors.netstack.channel import FlowChannel
from pytsnet.actors.peerapi import hostdns
from pytsnet.actors.runtime import Actor, ActorError, StopReason, handles
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.actors.wgengine.filter_rules import FilterRuleError, rules_from_tailcfg
from pytsnet.messages.base import Message
from pytsnet.messages.dataplane import GetDataplaneInfo
from pytsnet.messages.dns import DnsQuery
from pytsnet.messages.peerapi import PeerApiEvent, PeerApiEventKind, PeerApiRead, PeerApiSpawn
from pytsnet.messages.peers import GetPeers, PeerInfo
from pytsnet.messages.wgengine import WgFilterRule
from pytsnet.netstack.filter import PROTO_TCP, TCP_SYN, Filter, PacketSummary
from pytsnet.wire.peerapi import BadPeerApiRequest, PeerApiHttp, PeerApiRequest, route

__all__ = ["Caller", "PeerApiConnection"]

log = subsystem_logger("peerapi")

READ_CHUNK = 16 * 1024
_STATUS_EVENT: dict[int, PeerApiEventKind] = {403: "forbidden", 404: "not_found", 400: "bad_request",
                                              500: "dns_error"}


@dataclass(frozen=True)
class Caller:
    """Who is on the other end (Go's ``peerAPIHandler``): the node, and whether it is ours (same user)."""

    node: PeerInfo
    is_self: bool
    our_addresses: tuple[str, ...]
    exit_dns: bool = False
    """We offer an exit node and the packet filter would let this caller reach the internet's port
    53 (Go's ``offersExitNodeOrAppConnectorAndPeerHasAutogroupInternet``): its non-tailnet names are
    answered by our host's resolver."""
    tailnet_suffix: str = ""
    """Our MagicDNS domain (``tail1234.ts.net.``): names under it stay with the MagicDNS resolver."""


class PeerApiConnection(Actor):
    def __init__(self, spawn: PeerApiSpawn, channel: FlowChannel) -> None:
        self.spawn = spawn
        self.ch = channel

    def on_start(self) -> None:
        self._http = PeerApiHttp()
        self._caller: Caller | None = None
        self._ended = False  # read loop only: it told eof/idle, nothing more to read
        self._partial_since: float | None = None
        """When the request now arriving began: one that trickles in for longer than idle_timeout ends
        the connection (bytes now and then reset the read loop's wait, not this)."""
        self._stop = threading.Event()
        self.start_io_loop(self._read, self._wake_reader)

    def on_stop(self, reason: StopReason) -> None:
        self._stop.set()
        self.ch.close()  # unread bytes make it an abort (RST), else a FIN after what we wrote
        self.tell_named(self.spawn.server, PeerApiEvent(kind="closed", conn=self.name))

    # -- the read loop (its own thread) --------------------------------------------------------------
    def _wake_reader(self) -> None:
        self._stop.set()
        self.ch.notify()

    def _readable(self) -> bool:
        return self.ch.recv_ready() or self._stop.is_set()

    def _read(self) -> Message | None:
        if self._ended:
            self._stop.wait(1.0)
            return None
        ch = self.ch
        if not ch.wait(self._readable, self.spawn.idle_timeout):
            self._ended = True
            return PeerApiRead(idle=True)
        if self._stop.is_set():
            return None
        try:
            data = ch.try_recv(READ_CHUNK)
        except OSError:
            data = b""  # reset by the peer: the same end for us
        if data is None:
            return None
        if not data:
            self._ended = True
            return PeerApiRead(eof=True)
        return PeerApiRead(data=data)

    # -- requests ---------------------------------------------------------------------------------------
    @handles(PeerApiRead)
    def on_read(self, msg: PeerApiRead) -> None:
        if msg.idle:
            self._event("idle_timeout")
            self.stop()
            return
        if self._caller is None:
            self._caller = self._whois()
            if self._caller is None:
                self._event("unknown_peer")
                log.info("peerapi: refused %s:%d: not a tailnet node", *self.ch.remote)
                self.stop()
                return
        try:
            req = self._http.receive(b"" if msg.eof else msg.data)
            while req is not None:
                self._answer(req)
                if self._http.closed:
                    break
                req = self._http.next()
        except BadPeerApiRequest as e:
            self._event("bad_request")
            log.debug("peerapi: bad request from %s:%d: %s", *self.ch.remote, e)
            with contextlib.suppress(OSError, TimeoutError):
                self._write(self._http.error_bytes(400, "bad request"))
            self.stop()
            return
        except (OSError, TimeoutError):
            self.stop()  # the peer went away, or did not take our answer within idle_timeout
            return
        if msg.eof or self._http.closed:
            self.stop()
        elif not self._http.partial:
            self._partial_since = None
        elif self._partial_since is None:
            self._partial_since = self.clock.time()
        elif self.clock.time() - self._partial_since > self.spawn.idle_timeout:
            self._event("idle_timeout")
            self.stop()

    def _answer(self, req: PeerApiRequest) -> None:
        caller = self._caller
        assert caller is not None
        self._event("request")
        resp = route(req, our_addresses=caller.our_addresses, dns_allowed=caller.is_self or caller.exit_dns,
                     resolve=self._resolve)
        if req.path.startswith("/dns-query") and resp.status == 200:
            self._event("dns")
        self._event(_STATUS_EVENT.get(resp.status))
        self._write(self._http.respond(resp))

    def _resolve(self, query: bytes) -> bytes | None:
        caller = self._caller
        if caller is not None and caller.exit_dns and not _is_tailnet_name(query, caller.tailnet_suffix):
            try:  # an exit node's client: resolved as our host would (Go forwards to the OS's DNS)
                answer = hostdns.resolve(query, timeout=self.spawn.dns_timeout)
            except hostdns.HostDnsError as e:
                log.debug("peerapi: exit-node DNS for %s:%d failed: %s", *self.ch.remote, e)
                return None
            self._event("dns_exit")
            return answer
        ref = self.lookup(self.spawn.dns)
        if ref is None:
            return None
        host, port = self.ch.remote
        src = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            q = DnsQuery(query=query, transport="doh", src=src)
            return ref.ask(q, timeout=self.spawn.dns_timeout).response
        except ActorError as e:
            log.debug("peerapi: DoH query from %s failed: %s", src, e)
            return None

    def _whois(self) -> Caller | None:
        """Go ``LocalBackend.WhoIs`` for the source address: an admitted peer, or ourselves."""
        ip = ipaddress.ip_address(self.ch.remote[0])
        peers_ref, dp_ref = self.lookup(self.spawn.peers), self.lookup(self.spawn.dataplane)
        if peers_ref is None or dp_ref is None:
            return None
        try:
            table = peers_ref.ask(GetPeers(), timeout=self.spawn.whois_timeout)
            nm = dp_ref.ask(GetDataplaneInfo(), timeout=self.spawn.whois_timeout).netmap
        except ActorError:
            return None
        if nm is None:
            return None
        ours = tuple(a.split("/")[0] for a in nm.self_node.addresses)
        suffix = nm.self_node.name.split(".", 1)[1] if "." in nm.self_node.name.rstrip(".") else ""
        for node in [nm.self_node, *table.peers]:
            if any(ip == ipaddress.ip_interface(a).ip for a in node.addresses):
                exit_dns = self.spawn.exit_dns and _filter_allows_internet_dns(nm.packet_filter, ip)
                return Caller(node=node, is_self=node.user == nm.self_node.user, our_addresses=ours,
                              exit_dns=exit_dns, tailnet_suffix=suffix.lower())
        return None

    def _write(self, data: bytes) -> None:
        """Blocking write (this actor's own thread); ``TimeoutError`` if the peer takes none of it in time."""
        ch, view = self.ch, memoryview(data)
        while view:
            n = ch.try_send(view)
            if n is None:
                if not ch.wait(ch.send_ready, self.spawn.idle_timeout):
                    raise TimeoutError("peer did not read our answer")
                continue
            view = view[n:]

    def _event(self, kind: PeerApiEventKind | None) -> None:
        if kind is not None:
            self.tell_named(self.spawn.server, PeerApiEvent(kind=kind, conn=self.name))


_INTERNET_DNS = {4: int(ipaddress.ip_address("0.0.0.0")), 6: int(ipaddress.ip_address("2000::"))}
_TAILNET_V4 = ipaddress.ip_network("100.64.0.0/10")


def _filter_allows_internet_dns(packet_filter: list[WgFilterRule] | None, src: ipaddress.IPv4Address |
                                ipaddress.IPv6Address) -> bool:
    """Go's proxy for autogroup:internet access: would the filter accept a TCP SYN from ``src`` to
    0.0.0.0:53 (2000:: for IPv6)? No filter yet, or one we refuse: no."""
    if packet_filter is None:
        return False
    try:
        rules = rules_from_tailcfg(packet_filter)
    except FilterRuleError:
        return False
    flt = Filter(rules, [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")], ipv6=True)
    probe = PacketSummary(src.version, PROTO_TCP, int(src), _INTERNET_DNS[src.version], 40000, 53, TCP_SYN)
    return flt.check(probe) is None


def _is_tailnet_name(query: bytes, suffix: str) -> bool:
    """The query asks a MagicDNS name (under our tailnet's domain, or a reverse name of the tailnet's
    IPv4 range): those stay with the MagicDNS resolver. Unparseable: treated as tailnet (the resolver
    answers FORMERR as today)."""
    try:
        msg = dns.message.from_wire(query)
        name = msg.question[0].name
    except (dns.exception.DNSException, IndexError):
        return True
    text = name.to_text().lower()
    if suffix and (text == suffix or text.endswith("." + suffix)):
        return True
    if text.endswith(".in-addr.arpa."):
        try:
            return ipaddress.ip_address(dns.reversename.to_address(name)) in _TAILNET_V4
        except (dns.exception.DNSException, ValueError):
            return False
    return False

