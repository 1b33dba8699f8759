"""``ForwardTable``: the forwarder subtree's state that outlives a restart of its supervisor actor.

Like the netstack's ``FlowRegistry`` it is a spawn argument, so every incarnation of the
``ForwarderActor`` sees the same object: the live forwarders (so a restarted supervisor still routes
a UDP flow's next datagram to its forwarder instead of opening a second socket) and the counters
``status()`` reports. Forwarders update the byte counters from their own threads, hence the lock.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytsnet.actors.runtime import ActorRef

__all__ = ["ForwardLimits", "ForwardTable"]

FlowId = tuple[str, str, int, str, int]  # (kind, client, client port, destination, its port or echo id)


@dataclass(frozen=True)
class ForwardLimits:
    """Bounds and timeouts of the forwarders (Go's values where Go has one)."""

    max_tcp_flows: int = 4096
    max_udp_flows: int = 1024
    max_echo_flows: int = 64  # Go's userPing runs at most 20 pings at once
    dial_timeout: float = 10.0
    tcp_idle: float = 7200.0  # Go relies on TCP keepalive; we end a flow silent for this long
    udp_idle: float = 120.0  # Go's forwardUDP: 2 minutes ...
    dns_idle: float = 30.0  # ... and 30 s for port 53
    echo_idle: float = 10.0
    buffer: int = 64 * 1024  # one host-socket read


class ForwardTable:
    """Live forwarders by flow and the subtree's counters (forwarded flows, bytes, refusals by reason)."""

    def __init__(self, limits: ForwardLimits | None = None) -> None:
        self.limits = limits or ForwardLimits()
        self._lock = threading.Lock()
        self._flows: dict[FlowId, tuple[str, ActorRef]] = {}
        self._by_name: dict[str, FlowId] = {}
        self.counters: collections.Counter[str] = collections.Counter()

    def add(self, flow: FlowId, name: str, ref: ActorRef) -> None:
        with self._lock:
            self._flows[flow] = (name, ref)
            self._by_name[name] = flow

    def get(self, flow: FlowId) -> ActorRef | None:
        with self._lock:
            entry = self._flows.get(flow)
        if entry is None or not entry[1].is_alive:
            return None
        return entry[1]

    def remove(self, name: str) -> None:
        with self._lock:
            flow = self._by_name.pop(name, None)
            if flow is not None and self._flows.get(flow, ("",))[0] == name:
                del self._flows[flow]

    def live(self, kind: str) -> int:
        with self._lock:
            return sum(1 for f, (_, ref) in self._flows.items() if f[0] == kind and ref.is_alive)

    def prune(self) -> None:
        """Forget forwarders that died without saying so (killed before their done message)."""
        with self._lock:
            dead = [name for name, (n, ref) in ((n, self._flows[f]) for n, f in self._by_name.items())
                    if not ref.is_alive]
        for name in dead:
            self.remove(name)

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counters)
