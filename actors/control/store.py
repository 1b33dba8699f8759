"""What the control side needs of persistent state: Go's ``ipn.StateStore`` (bytes by key).

``pytsnet.state`` provides memory and file implementations; anything with these two methods works
(a secrets manager, a database). Keys used here: ``_machinekey`` (machine private key text),
``_node`` (node key, previous node key, logged-in flag as JSON), ``_netmap`` (last self node,
domain and DERP map as JSON, so a restart can show its addresses before control answers).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["MACHINE_KEY", "NETMAP", "NODE", "StateStore"]

MACHINE_KEY = "_machinekey"
NODE = "_node"
NETMAP = "_netmap"


@runtime_checkable
class StateStore(Protocol):
    def read_state(self, key: str) -> bytes | None:
        """The bytes stored under ``key``, or None."""
        ...

    def write_state(self, key: str, value: bytes) -> None:
        """Store durably (a file store writes atomically, mode 0600); empty ``value`` deletes."""
        ...
