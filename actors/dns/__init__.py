"""The MagicDNS resolver actor (``dns``): quad-100:53 inside the node, and ``DnsQuery`` for DoH and lookup."""

from pytsnet.actors.dns.actor import DNS, DnsActor, Forwarder
from pytsnet.actors.dns.config import resolver_config

__all__ = ["DNS", "DnsActor", "Forwarder", "resolver_config"]
