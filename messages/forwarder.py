"""Messages of the forwarder subtree (subnet router / exit node): netstack <-> forwarders.

A flow is named by the peer's end (``client``, ``client_port``) and the destination it asked for
(``dst``, ``dst_port``); for ICMP echo the ports are 0 and ``rest`` carries identifier and sequence.
"""

from __future__ import annotations

from pytsnet.messages.base import Message, Request

__all__ = ["ForwardEchoIn", "ForwardEchoOut", "ForwardIdle", "ForwardTcpAccept", "ForwardTcpAccepted",
           "ForwardTcpOpen", "ForwardTcpRefuse", "ForwardUdpIn", "ForwardUdpOut", "ForwarderDone",
           "ForwarderStatus", "ForwarderStatusRequest"]


class ForwardTcpOpen(Message, tag="forwarder.tcp_open"):
    """Netstack -> forwarder supervisor: a peer's SYN to a forwarded destination; dial it."""

    client: str
    client_port: int
    dst: str
    dst_port: int


class ForwardTcpAccepted(Message, tag="forwarder.tcp_accepted"):
    """Reply to ``ForwardTcpAccept``: the tailnet-side flow (claim it from the registry), or None."""

    flow: str | None = None


class ForwardTcpAccept(Request[ForwardTcpAccepted], tag="forwarder.tcp_accept"):
    """Forwarder -> netstack: the destination answered; complete the peer's handshake."""

    client: str
    client_port: int
    dst: str
    dst_port: int


class ForwardTcpRefuse(Message, tag="forwarder.tcp_refuse"):
    """Forwarder -> netstack: the destination could not be reached; reset the peer's SYN."""

    client: str
    client_port: int
    dst: str
    dst_port: int
    reason: str


class ForwardUdpIn(Message, tag="forwarder.udp_in"):
    """Netstack -> forwarders: a peer's datagram to a forwarded destination."""

    client: str
    client_port: int
    dst: str
    dst_port: int
    data: bytes


class ForwardUdpOut(Message, tag="forwarder.udp_out"):
    """Forwarder -> netstack: the destination's reply, sent to the peer as a packet from it."""

    client: str
    client_port: int
    dst: str
    dst_port: int
    data: bytes


class ForwardEchoIn(Message, tag="forwarder.echo_in"):
    """Netstack -> forwarders: a peer's ICMP echo request to a forwarded destination."""

    client: str
    dst: str
    rest: bytes
    data: bytes


class ForwardEchoOut(Message, tag="forwarder.echo_out"):
    """Forwarder -> netstack: the destination's echo reply for the peer."""

    client: str
    dst: str
    rest: bytes
    data: bytes


class ForwardIdle(Message, tag="forwarder.idle"):
    """A forwarder's own timer: check whether its flow has been idle past its timeout."""


class ForwarderDone(Message, tag="forwarder.done"):
    """Forwarder -> its supervisor: the flow ended (``error``: why, if it did not end cleanly)."""

    name: str
    kind: str
    bytes_out: int = 0
    bytes_in: int = 0
    error: str | None = None


class ForwarderStatus(Message, tag="forwarder.status"):
    """Forwarded flows now and in total, bytes each way, and refusals/drops by reason."""

    tcp_flows: int = 0
    udp_flows: int = 0
    echo_flows: int = 0
    counters: dict[str, int] = {}


class ForwarderStatusRequest(Request[ForwarderStatus], tag="forwarder.status_request"):
    """Ask the forwarder supervisor for ``ForwarderStatus``."""
