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

__all__ = ["DnsAnswer", "DnsQuery"]


class DnsAnswer(Message, tag="dns.answer"):
    """The resolver's answer: a whole DNS message (RCODE inside: NXDOMAIN, SERVFAIL, REFUSED...)."""

    response: bytes


class DnsQuery(Request[DnsAnswer], tag="dns.query"):
    """A DNS query message in wire format, from one of the resolver's front ends."""

    query: bytes
    transport: Literal["udp", "tcp", "doh", "local"]
    src: str = "local"
