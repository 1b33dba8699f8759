"""The one rule for "is this node key expired" (Go's ``Node.Expired`` flag or ``KeyExpiry`` passed).

The login machine applies it to our own node; ``PeerInfo`` (the peer table) to every node.
"""

from __future__ import annotations

from pytsnet.wire.tailcfg import Node

__all__ = ["key_expired", "node_key_expiry"]


def node_key_expiry(node: Node) -> float | None:
    """``KeyExpiry`` as Unix seconds; None when unset or Go's zero time ("never")."""
    k = node.KeyExpiry
    return None if k is None or k.year <= 1 else k.timestamp()


def key_expired(expired: bool, key_expiry: float | None, now: float) -> bool:
    """Control marked the key expired, or its ``KeyExpiry`` is not after ``now``."""
    return expired or (key_expiry is not None and key_expiry <= now)
