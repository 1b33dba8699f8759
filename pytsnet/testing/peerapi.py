"""Test rig for the peerAPI: a stand-in resolver actor and a small HTTP/1.1 client (h11).

``StubResolver`` answers ``DnsQuery`` (the MagicDNS resolver's contract, ``messages/dns.py``) from a
fixed name → IPv4 table with dnspython, so the peerAPI's DoH framing is tested without the resolver
itself; it records what it was asked and can hold its answers until released (a request in flight for
chaos tests). ``http_request`` (from ``pytsnet.net.http``, where the device's DoH client lives) speaks
HTTP/1.1 over any blocking socket-like object.
"""

from __future__ import annotations

import threading

import dns.message
import dns.rcode
import dns.rrset

from pytsnet.actors.runtime import Actor, ActorRef, ActorSystem, NameTaken, handles
from pytsnet.messages.dns import DnsAnswer, DnsQuery
from pytsnet.net.http import HttpAnswer, http_request

__all__ = ["DNS", "HttpAnswer", "StubResolver", "http_request", "serve_stub_resolver"]

DNS = "dns"
"""The name the peerAPI asks for DoH (``PeerApiSpawn.dns``)."""


class StubResolver(Actor):
    """Register as ``dns``: A records from ``records``, NXDOMAIN otherwise; ``seen`` gets every query."""

    def __init__(self, records: dict[str, str], seen: list[DnsQuery], hold: threading.Event | None = None,
                 asked: threading.Event | None = None) -> None:
        self.records = {k.rstrip(".").lower(): v for k, v in records.items()}
        self.seen = seen
        self.hold = hold
        self.asked = asked

    @handles(DnsQuery)
    def on_query(self, msg: DnsQuery) -> DnsAnswer:
        self.seen.append(msg)
        if self.asked is not None:
            self.asked.set()
        if self.hold is not None:
            self.hold.wait(30)
        q = dns.message.from_wire(msg.query)
        resp = dns.message.make_response(q)
        name = q.question[0].name.to_text().rstrip(".").lower()
        if name in self.records:
            resp.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", self.records[name]))
        else:
            resp.set_rcode(dns.rcode.NXDOMAIN)
        return DnsAnswer(response=resp.to_wire())


def serve_stub_resolver(system: ActorSystem, records: dict[str, str], seen: list[DnsQuery],
                        hold: threading.Event | None = None,
                        asked: threading.Event | None = None) -> ActorRef:
    """Register a ``StubResolver`` as ``dns`` on a device's system; an error naming the cause when the
    device already runs a resolver under that name (then test against it instead)."""
    try:
        return system.spawn(StubResolver, records, seen, hold, asked, name=DNS)
    except NameTaken as e:
        raise RuntimeError("this device already runs a resolver as 'dns': the stand-in is for devices "
                           "without one") from e
