"""The data-plane bridge: netmap and peers → magicsock and WireGuard engine config; endpoints → control."""

from pytsnet.actors.dataplane.bridge import DataplaneBridge, DataplaneMemory, Spawned, endpoint_types

__all__ = ["DataplaneBridge", "DataplaneMemory", "Spawned", "endpoint_types"]
