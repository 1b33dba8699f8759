"""Messages of the netstack actors: link packets, per-flow segments and timers, app requests.

``LinkPacketIn``/``LinkPacketOut`` are the netstack's own link messages (the TUN link in tests);
the NetstackActor also accepts the WireGuard engine's ``IpPacketIn`` and can emit any message type
with a ``data: bytes`` field (the device passes ``IpPacketOut``), see ``actors/netstack``.
"""

from __future__ import annotations

from pytsnet.messages.base import Message, Request
from pytsnet.messages.redact import Payload


class LinkPacketIn(Message, tag="netstack.link_in"):
    """One IP packet from the link to the stack."""

    data: Payload


class LinkPacketOut(Message, tag="netstack.link_out"):
    """One IP packet from the stack to the link."""

    data: Payload


class FlowSegmentIn(Message, tag="netstack.flow_segment"):
    """A TCP segment (the IP payload, checksum not yet verified) for one flow actor."""

    data: Payload

    def payload_size(self) -> int:
        return len(self.data)


class FlowSegmentsIn(Message, tag="netstack.flow_segments"):
    """Several ``FlowSegmentIn`` for one flow from one burst of inbound packets, in order."""

    segments: tuple[Payload, ...]

    def payload_size(self) -> int:
        return sum(map(len, self.segments))


class FlowPacketsIn(Message, tag="netstack.flow_packets"):
    """WireGuard engine -> one flow actor: whole IP packets of that flow (decrypted, filtered, headers
    on), in arrival order. The fast path: the netstack actor is not on it (see ``FlowRoutes``)."""

    packets: tuple[Payload, ...]

    def payload_size(self) -> int:
        return sum(map(len, self.packets))


RouteKey = tuple[int, int, int, int, int]
"""A flow's inbound 4-tuple as the engine's filter summary reads it: (IP version, remote address as an
int, remote port, local address as an int, local port)."""


class FlowRoutes(Message, tag="netstack.flow_routes"):
    """Netstack actor -> WireGuard engine: which TCP flows take the fast path (``FlowPacketsIn``).

    ``reset``: ``add`` is the whole table (sent on every netstack start and on ``FlowRoutesRequest``);
    else a change since the last message. Correctness never depends on it arriving: a packet with no
    route goes to the netstack actor, which demultiplexes it as before; a route to a flow that ended
    fails its tell (``ActorStopped``) and the packet goes to the netstack actor too."""

    reset: bool = False
    add: tuple[tuple[RouteKey, str], ...] = ()
    """(key, flow actor name): the engine looks the name up once, here."""
    remove: tuple[RouteKey, ...] = ()


class FlowRoutesRequest(Message, tag="netstack.flow_routes_request"):
    """A (re)started engine asks the netstack for the whole ``FlowRoutes`` table."""


class FlowTick(Message, tag="netstack.flow_tick"):
    """A flow's timer fired: run ``TcpConnection.poll``."""


class FlowAppWake(Message, tag="netstack.flow_wake"):
    """The app queued data, read data, or closed: move bytes between the channel and the connection."""


class FlowClosed(Message, tag="netstack.flow_closed"):
    """A flow actor is done; ``time_wait`` is (SND.NXT, RCV.NXT) when its 4-tuple enters TIME_WAIT."""

    flow: str
    time_wait: tuple[int, int] | None = None


class FlowAbort(Message, tag="netstack.flow_abort"):
    """The device is closing: reset the connection now (an RST to the peer) and end the flow."""


class FlowsAborted(Message, tag="netstack.flows_aborted"):
    """``AbortAllFlows`` reached this many flows (their actors reset them next, in their own mailboxes)."""

    flows: int


class AbortAllFlows(Request[FlowsAborted], tag="netstack.abort_all"):
    """The device is closing: reset every flow and close every listener (ask; replies ``FlowsAborted``)."""


class StackTick(Message, tag="netstack.stack_tick"):
    """The stack's own timer (handshakes in progress, TIME_WAIT expiry)."""


class NetstackReply(Message, tag="netstack.reply"):
    """Reply to app requests: ``ok`` with a flow name or port, or the error's type name and text."""

    ok: bool
    flow: str = ""
    port: int = 0
    error: str = ""
    detail: str = ""


class TcpListen(Request[NetstackReply], tag="netstack.tcp_listen"):
    port: int
    backlog: int | None = None


class TcpUnlisten(Message, tag="netstack.tcp_unlisten"):
    port: int


class ListenerWake(Message, tag="netstack.listener_wake"):
    """The app accepted a connection: room in the accept queue for more."""

    port: int


class TcpConnect(Request[NetstackReply], tag="netstack.tcp_connect"):
    host: str
    port: int


class UdpBind(Request[NetstackReply], tag="netstack.udp_bind"):
    port: int = 0


class UdpSendTo(Request[NetstackReply], tag="netstack.udp_sendto"):
    port: int
    data: Payload
    host: str
    remote_port: int


class UdpClose(Message, tag="netstack.udp_close"):
    port: int


class NetstackStatus(Message, tag="netstack.status"):
    """The Stack's drop counters by reason (``Stack.drops``, plus the actor's ``flow_mailbox_full``)
    and its other event counters (``Stack.stats``: SYN cookies sent and validated)."""

    drops: dict[str, int]
    counters: dict[str, int] = {}
    flows: int = 0
    """TCP flows whose actor has not yet told ``FlowClosed`` (device close waits for 0)."""
    adopted: int = 0
    """Flows the running incarnation took over from the one before it (after a restart)."""


class NetstackStatusRequest(Request[NetstackStatus], tag="netstack.status_request"):
    pass




class IcmpEchoResult(Message, tag="netstack.icmp_echo_result"):
    """Reply to ``IcmpEchoStart``/``IcmpEchoPoll``: ``done`` with the round trip in ``latency``
    (seconds, measured by the netstack actor's clock), or ``done`` with ``error`` when no request
    could be sent; not ``done`` while the reply is outstanding."""

    done: bool = False
    latency: float | None = None
    error: str = ""


class IcmpEchoStart(Request[IcmpEchoResult], tag="netstack.icmp_echo_start"):
    """Send one echo request to ``dst`` (a tailnet address) from our address of its family; the
    reply with this (``dst``, ``ident``, ``seq``) is kept until ``IcmpEchoPoll`` takes it."""

    dst: str
    ident: int
    seq: int
    data: Payload = b""


class IcmpEchoPoll(Request[IcmpEchoResult], tag="netstack.icmp_echo_poll"):
    dst: str
    ident: int
    seq: int


class IcmpEchoCancel(Message, tag="netstack.icmp_echo_cancel"):
    """The asker gave up: forget the request (a late reply is then ignored and counted)."""

    dst: str
    ident: int
    seq: int


class TsmpPingResult(Message, tag="netstack.tsmp_ping_result"):
    """As ``IcmpEchoResult``, plus the PeerAPI port the pong advertised (0: none)."""

    done: bool = False
    latency: float | None = None
    peerapi_port: int = 0
    error: str = ""


class TsmpPingStart(Request[TsmpPingResult], tag="netstack.tsmp_ping_start"):
    """Send one TSMP ping (Go's ``sendTSMPPing``: 8 random bytes) to ``dst``; the pong echoing
    ``data`` is kept until ``TsmpPingPoll`` takes it."""

    dst: str
    data: Payload


class TsmpPingPoll(Request[TsmpPingResult], tag="netstack.tsmp_ping_poll"):
    dst: str
    data: Payload


class TsmpPingCancel(Message, tag="netstack.tsmp_ping_cancel"):
    dst: str
    data: Payload
