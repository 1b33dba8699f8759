"""MagicDNS, sans-IO: the resolver behind 100.100.100.100 (``resolver``) and what it answers from."""

from pytsnet.wire.dns.config import SERVICE_V4, SERVICE_V6, ResolverConfig, Upstream, reverse_name
from pytsnet.wire.dns.resolver import Forward, Reply, Resolver

__all__ = ["SERVICE_V4", "SERVICE_V6", "Forward", "Reply", "Resolver", "ResolverConfig", "Upstream",
           "reverse_name"]
