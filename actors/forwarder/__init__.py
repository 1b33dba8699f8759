"""Forwarders for a subnet router / exit node: tailnet flows to non-local destinations, via host sockets."""

from pytsnet.actors.forwarder.supervisor import FORWARDER, ForwarderActor, forwarder_spec
from pytsnet.actors.forwarder.table import ForwardLimits, ForwardTable

__all__ = ["FORWARDER", "ForwardLimits", "ForwardTable", "ForwarderActor", "forwarder_spec"]
