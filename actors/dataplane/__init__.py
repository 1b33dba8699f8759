"""The data-plane bridge: netmap and peers → magicsock and WireGuard engine config; endpoints → control."""

from pytsnet.actors.dataplane.bridge import Built, DataplaneBridge, endpoint_types

__all__ = ["Built", "DataplaneBridge", "endpoint_types"]
