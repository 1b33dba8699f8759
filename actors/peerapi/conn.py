"""``PeerApiConnection``: one peerAPI TCP connection, its own actor (never restarted).

As Go's ``ServeConn``: the caller is identified once, by its source address, through the peer
table (admitted peers only) and our own node; an address that is no tailnet node's gets its
connection closed with no answer. Requests are parsed and answered by ``wire/peerapi.py`` (bounded
head and body; a malformed one is a 400 and the end of this connection only); ``/dns-query`` asks the
resolver (``DnsQuery(transport="doh")``). The read loop waits at most ``idle_timeout`` for bytes, a
request still arriving ``idle_timeout`` after its first byte and a write that the peer does not take
within it close the connection, so a silent, trickling or stalled peer holds a slot for a bounded time.

``POST /v0/ingress`` (Funnel, ``ingress.py``) from a caller the filter grants the ingress capability,
for a target port with a Funnel listener, is answered ``101`` and the flow is handed to that listener
with the bytes already received past the request; the read loop takes nothing once the hand-over is
decided (``_recv_lock``), and reads it had already taken join the hand-over before it happens.

Tailnet Lock's unsigned peerAPI-only peers (21h) reach this server (the engine lets them open TCP to
our peerAPI port only). Go refuses them debug (``canDebug``), Taildrop (``canPutFile``) and
wake-on-LAN; pytsnet serves no debug or wake-on-LAN and refuses them Taildrop (403), so what they can
get is what Go gives them: ingress with the capability, DoH as a node of our own user or an exit
node's client (Go's ``replyToDNSQueries``). A netmap filter the engine dropped for letting them in
grants no capability here either.

Taildrop (22a, ``actors/taildrop``): ``PUT /v0/put/<name>`` is not buffered like other requests: its
head is answered at once (Go's refusals) and its body is written to the caller's partial file as it
arrives (``Upload``), so a file of any size within the store's budget passes through a connection with
bounded memory; an upload that keeps moving is not idle. A cut (the peer's close or reset, this actor
killed) keeps the partial file for the sender's resume (``GET /v0/put/<name>``: its block hashes).

An answer that ends the connection while the caller is still sending (a refused upload, a bad
request) is followed by a FIN and, ``LINGER`` later, the close: that close resets (the body is
unread), and a reset at once could overtake the answer, which the caller then never reads (Go
net/http ``closeWriteAndWait`` and its ``rstAvoidanceDelay``). Bytes that arrive meanwhile are dropped.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.reversename

from pytsnet.actors.netstack.channel import FlowChannel
from pytsnet.actors.peerapi import hostdns
from pytsnet.actors.peerapi.ingress import (
    PEER_CAP_INGRESS,
    IngressHandler,
    IngressHandoff,
    IngressRoutes,
    peer_caps,
)
from pytsnet.actors.runtime import Actor, ActorError, StopReason, handles
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.actors.taildrop.put import NO_PUT, PutAccess, can_put_file, is_put, put_answer, put_begin
from pytsnet.actors.taildrop.store import PutRefused, TaildropStore, Upload
from pytsnet.actors.wgengine.filter_rules import (
    FilterRuleError,
    filter_in_force,
    rules_from_tailcfg,
)
from pytsnet.messages.base import Message
from pytsnet.messages.dataplane import GetDataplaneInfo
from pytsnet.messages.dns import DnsQuery
from pytsnet.messages.peerapi import (
    PeerApiEvent,
    PeerApiEventKind,
    PeerApiLingerEnd,
    PeerApiRead,
    PeerApiSpawn,
)
from pytsnet.messages.peers import GetPeers, PeerInfo
from pytsnet.messages.wgengine import WgFilterRule
from pytsnet.netstack.filter import PROTO_TCP, TCP_SYN, Filter, PacketSummary
from pytsnet.wire.peerapi import (
    INGRESS_PATH,
    BadIngressRequest,
    BadPeerApiRequest,
    IngressRequest,
    PeerApiHttp,
    PeerApiRequest,
    PeerApiResponse,
    host_allowed,
    ingress_request,
    route,
)
from pytsnet.wire.taildrop import PUT_PATH

__all__ = ["Caller", "PeerApiConnection"]

log = subsystem_logger("peerapi")

READ_CHUNK = 16 * 1024
LINGER = 0.5  # after a closing answer with the body unread: FIN, then the reset this much later (Go: 500 ms)
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
    can_ingress: bool = False
    """The filter grants this caller the ingress capability towards us (Go ``canIngress``)."""
    self_name: str = ""
    """Our MagicDNS name without the trailing dot: the only host a Funnel target may name."""
    put: PutAccess = NO_PUT
    """22a: may it send us files (Go ``canPutFile``), and its ID for its partial files."""


class PeerApiConnection(Actor):
    def __init__(self, spawn: PeerApiSpawn, channel: FlowChannel,
                 ingress: IngressRoutes | None = None, taildrop: TaildropStore | None = None) -> None:
        self.spawn = spawn
        self.ch = channel
        self.ingress = ingress
        self.taildrop = taildrop

    def on_start(self) -> None:
        self._http = PeerApiHttp(stream=is_put)
        self._upload: Upload | None = None  # 22a: a Taildrop PUT whose body is arriving
        self._caller: Caller | None = None
        self._ended = False  # read loop only: it told eof/idle, nothing more to read
        self._lingering = False  # answered and shut our side: waiting LINGER before the close
        self._partial_since: float | None = None
        """When the request now arriving began: one that trickles in for longer than idle_timeout ends
        the connection (bytes now and then reset the read loop's wait, not this)."""
        self._stop = threading.Event()
        self._recv_lock = threading.Lock()
        """Held by the read loop while it takes bytes: once a hand-over sets ``_stop`` under it, no
        byte is taken here again."""
        self._taken = 0  # read loop: results told to us (under _recv_lock)
        self._seen = 0  # handler: PeerApiRead messages handled
        self._handoff: tuple[IngressHandler, IngressRequest, bytearray] | None = None
        self._handed_over = False
        self._released = threading.Event()  # set at stop: a parked read loop ends at once
        self.start_io_loop(self._read, self._wake_reader)

    def on_stop(self, reason: StopReason) -> None:
        self._stop.set()
        if self._upload is not None:  # cut mid-file: the partial file stays for the resume
            self._upload.abort()
            self._upload = None
        self._released.set()
        if not self._handed_over:
            self.ch.close()  # unread bytes make it an abort (RST), else a FIN after what we wrote
        self.tell_named(self.spawn.server, PeerApiEvent(kind="closed", conn=self.name))

    # -- the read loop (its own thread) --------------------------------------------------------------
    def _wake_reader(self) -> None:
        self._stop.set()
        self.ch.notify()

    def _readable(self) -> bool:
        return self.ch.recv_ready() or self._stop.is_set()

    def _read(self) -> Message | None:
        if self._handoff is not None:  # handed over (or about to be): park until this actor stops
            self._released.wait(1.0)
            return None
        if self._ended:
            self._stop.wait(1.0)
            return None
        ch = self.ch
        waited = ch.wait(self._readable, self.spawn.idle_timeout)
        with self._recv_lock:
            if self._stop.is_set():
                return None
            if not waited:
                self._ended = True
            msg = self._take() if waited else PeerApiRead(idle=True)
            if msg is not None:
                self._taken += 1
            return msg

    def _take(self) -> PeerApiRead | None:
        """One non-blocking take (under ``_recv_lock``)."""
        ch = self.ch
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
        self._seen += 1
        if self._lingering:  # what the caller still sends after our closing answer: dropped
            if msg.eof or msg.idle:
                self.stop()
            return
        if self._handoff is not None:  # read before the hand-over was decided: it goes along
            self._handoff[2].extend(msg.data)
            self._hand_over_when_caught_up()
            return
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
            self._http.feed(b"" if msg.eof else msg.data)
            req = self._next()
            while req is not None:
                if self._answer(req):
                    self._hand_over_when_caught_up()
                    return
                if self._http.closed:
                    break
                req = self._next()
        except PutRefused as e:  # 22a: a budget or write failure mid-body: answer and close
            self._end_upload()
            self._event("taildrop_refused")
            refusal = PeerApiResponse(e.status, e.public.encode() + b"\n")
            self._end_with(self._http.respond(refusal, close=True))
            return
        except BadPeerApiRequest as e:
            if self._upload is not None:  # the sender went away mid-file: keep the partial
                self._end_upload()
                self.stop()
                return
            self._event("bad_request")
            log.debug("peerapi: bad request from %s:%d: %s", *self.ch.remote, e)
            self._end_with(self._http.error_bytes(400, "bad request"))
            return
        except (OSError, TimeoutError):
            self.stop()  # the peer went away, or did not take our answer within idle_timeout
            return
        if msg.eof:
            self.stop()
        elif self._http.closed:
            self._close_after_answer()
        elif not self._http.partial or self._upload is not None:  # an upload moving is not idle
            self._partial_since = None
        elif self._partial_since is None:
            self._partial_since = self.clock.time()
        elif self.clock.time() - self._partial_since > self.spawn.idle_timeout:
            self._event("idle_timeout")
            self.stop()

    def _end_with(self, answer: bytes) -> None:
        """Write an answer that ends the connection, then close after it (at once if it cannot go)."""
        try:
            self._write(answer)
        except (OSError, TimeoutError):
            self.stop()
            return
        self._close_after_answer()

    def _close_after_answer(self) -> None:
        """Our answer ended the connection: a FIN after it now, the close ``LINGER`` later."""
        self._lingering = True
        self.ch.send_eof()
        self.send_after(LINGER, PeerApiLingerEnd())

    @handles(PeerApiLingerEnd)
    def on_linger_end(self, msg: PeerApiLingerEnd) -> None:
        self.stop()

    # -- Taildrop --------------------------------------------------------------------------------
    def _next(self) -> PeerApiRequest | None:
        """The next request, after writing any streamed upload body that is here to its file."""
        while self._http.streaming:
            chunk = self._http.body_chunk()
            if chunk is None:
                return None
            if self._upload is None:
                continue  # a refused PUT's body (the connection closes after its answer)
            if chunk:
                self._upload.write(chunk)
                continue
            upload, self._upload = self._upload, None
            upload.finish()
            self._event("taildrop_put")
            log.info("peerapi: received a file from %s:%d (%d bytes from offset %d)", *self.ch.remote,
                     upload.received, upload.offset)  # as Go: no file name in the log
            self._write(self._http.respond(PeerApiResponse(200, b"{}\n")))
        return self._http.next()

    def _end_upload(self) -> None:
        if self._upload is not None:
            self._upload.abort()
            self._upload = None

    def _put(self, req: PeerApiRequest, caller: Caller) -> None:
        """A PUT's head: start writing its body, or refuse it (and close: its body is not read)."""
        if not host_allowed(req, caller.our_addresses):
            started: Upload | PeerApiResponse = PeerApiResponse(403, b"invalid peerapi request\n")
        else:
            started = put_begin(req, self.taildrop, caller.put)
        if isinstance(started, Upload):
            self._upload = started
            if req.headers.get("expect", "").lower() == "100-continue":
                self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        self._event(_STATUS_EVENT.get(started.status) or "taildrop_refused")
        log.info("peerapi: a file from %s:%d refused: %d", *self.ch.remote, started.status)
        self._write(self._http.respond(started, close=True))

    def _answer(self, req: PeerApiRequest) -> bool:
        """Answer one request; True when it was an ingress the connection is now handed over for."""
        caller = self._caller
        assert caller is not None
        self._event("request")
        if req.path == INGRESS_PATH and host_allowed(req, caller.our_addresses):
            return self._ingress(req, caller)
        if self._http.streaming:  # 22a: Taildrop's PUT (is_put)
            self._put(req, caller)
            return False
        if req.path.startswith(PUT_PATH) and host_allowed(req, caller.our_addresses):
            resp = put_answer(req, self.taildrop, caller.put)
            self._event(_STATUS_EVENT.get(resp.status))
            self._write(self._http.respond(resp))
            return False
        resp = route(req, our_addresses=caller.our_addresses, dns_allowed=caller.is_self or caller.exit_dns,
                     resolve=self._resolve)
        if req.path.startswith("/dns-query") and resp.status == 200:
            self._event("dns")
        self._event(_STATUS_EVENT.get(resp.status))
        self._write(self._http.respond(resp))
        return False

    # -- Funnel ingress (Go handleServeIngress, HandleIngressTCPConn) ----------------------------------
    def _refuse(self, resp: PeerApiResponse, kind: PeerApiEventKind, why: str) -> bool:
        log.info("peerapi: ingress from %s:%d refused: %s", *self.ch.remote, why)
        self._event(kind)
        self._write(self._http.respond(resp))
        return False

    def _ingress(self, req: PeerApiRequest, caller: Caller) -> bool:
        if not caller.can_ingress:
            return self._refuse(PeerApiResponse(403, b"denied; no ingress cap\n"), "forbidden",
                                "no ingress cap")
        try:
            ing = ingress_request(req)
        except BadIngressRequest as e:
            return self._refuse(e.response(), "ingress_refused", e.public)
        handler = (self.ingress.route(ing.target_host, ing.target_port)  # 20g: a listener, else Serve
                   if self.ingress is not None else None)
        if handler is None or not caller.self_name or ing.target_host.lower() != caller.self_name:
            # Go: no AllowFunnel entry for this host:port → sendRST (a 403 "denied")
            return self._refuse(PeerApiResponse(403, b"denied\n"), "ingress_refused",
                                f"no Funnel listener or AllowFunnel for {ing.target}")
        self._write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")  # Go writes exactly this
        with self._recv_lock:
            self._stop.set()  # the read loop takes nothing more
            self._handoff = (handler, ing, bytearray(self._http.hijack()))
        return True

    def _hand_over_when_caught_up(self) -> None:
        """Hand the flow over once every read the loop took has been handled (they are in ``prefix``)."""
        with self._recv_lock:
            if self._seen < self._taken or self._handoff is None or self._handed_over:
                return
            handler, ing, prefix = self._handoff
            self._handed_over = True
        caller = self._caller
        assert caller is not None
        taken = False
        try:
            taken = handler(IngressHandoff(channel=self.ch, prefix=bytes(prefix), request=ing,
                                           ingress_peer=caller.node))
        finally:
            if taken:
                self._event("ingress")
            else:
                self._handed_over = False  # on_stop closes it
                self._event("ingress_refused")
                log.info("peerapi: the Funnel listener on %d did not take %s's connection",
                         ing.target_port, ing.src)
            self.stop()

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
        # 21h: a filter letting an unsigned peerAPI-only peer in is not in force (the engine dropped it,
        # Go's invalid-packet-filter): its CapGrants and autogroup:internet rules grant nothing either
        pf = filter_in_force(table.peers, nm.packet_filter)
        suffix = nm.self_node.name.split(".", 1)[1] if "." in nm.self_node.name.rstrip(".") else ""
        for node in [nm.self_node, *table.peers]:
            if any(ip == ipaddress.ip_interface(a).ip for a in node.addresses):
                exit_dns = self.spawn.exit_dns and _filter_allows_internet_dns(pf, ip)
                caps = peer_caps(pf, ip, [ipaddress.ip_address(a) for a in ours])
                ingress = PEER_CAP_INGRESS in caps
                put = PutAccess(allowed=node is not nm.self_node and can_put_file(
                    node, nm.self_node, caps, nm.capabilities.get(nm.self_node.node_id, [])),
                    sender=node.stable_id)
                return Caller(node=node, is_self=node.user == nm.self_node.user, our_addresses=ours,
                              exit_dns=exit_dns, tailnet_suffix=suffix.lower(), can_ingress=ingress,
                              self_name=nm.self_node.name.rstrip(".").lower(), put=put)
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

