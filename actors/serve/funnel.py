"""Funnel through Serve (20g, Go ``HandleIngressTCPConn`` → ``tcpHandlerForServe``): public connections
an ingress node brought for a ``host:port`` the serve config's ``AllowFunnel`` turns on are served by
that port's ``ServePort`` like a tailnet connection, knowing they came through Funnel.

The peerAPI connection that took the ingress request runs on its own thread and holds a flow, which
no message can carry: ``FunnelInbox`` is the hand-over point. It is made with the serve tree and
outlives its actors: ``offer`` queues the flow for the port (bounded: one more is refused and the
peerAPI closes it) and tells the port server ``ServeFunnelOffered``; the port server (or its next
incarnation, at its start) takes what is queued and serves each in its own ``ServeConnection``. A
port that stops being served has its queued flows closed (``drop``). Which targets are on is the
ServeManager's to say (``IngressRoutes.set_serve`` after each applied config).
"""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING

from pytsnet.actors.peerapi.ingress import IngressHandoff
from pytsnet.messages.serve import ServeFunnelOffered, ServeSpawn

if TYPE_CHECKING:
    from pytsnet.actors.runtime import ActorSystem

__all__ = ["FUNNEL_BACKLOG", "FunnelInbox"]

FUNNEL_BACKLOG = 64
"""Public connections queued per port before its server takes them; one more is refused."""


class FunnelInbox:
    def __init__(self, system: ActorSystem, spawn: ServeSpawn, backlog: int = FUNNEL_BACKLOG) -> None:
        self._system = system
        self._spawn = spawn
        self._backlog = backlog
        self._lock = threading.Lock()
        self._queued: dict[int, collections.deque[IngressHandoff]] = {}

    def offer(self, port: int, handoff: IngressHandoff) -> bool:
        """Queue ``handoff`` for ``port``'s server (any thread); False: full, the caller closes it."""
        with self._lock:
            q = self._queued.setdefault(port, collections.deque())
            if len(q) >= self._backlog:
                return False
            q.append(handoff)
        ref = self._system.lookup(f"{self._spawn.manager}.port.{port}")
        if ref is not None:  # else its next incarnation takes it at its start
            ref.tell(ServeFunnelOffered(port=port))
        return True

    def take(self, port: int) -> list[IngressHandoff]:
        with self._lock:
            q = self._queued.pop(port, None)
        return list(q) if q else []

    def drop(self, port: int) -> None:
        """``port`` is no longer served: what waits for it is closed."""
        for h in self.take(port):
            h.channel.close()
